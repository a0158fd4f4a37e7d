#!/usr/bin/env bash
# Recipe cpjku: CP-JKU's DCASE 2025 Task 4 system (rank 2): an M2D SED tagger (strong + attention
# heads) and the "AudioSep-SED" separator (ResUNet30 with Time-FiLM, embedding injection of the SED's
# hidden states, a trainable copy of the SED, optional DPRNN and iterative refinement).
# The stages are shared (./stages.sh --help); local/stage3.sh hands stage 2's SED to the separator.
# Options given on the command line come last and override them.
set -euo pipefail

exec ./stages.sh \
  --data_config conf/prep_data.yaml \
  --infer_config conf/infer.yaml \
  --score_config conf/score.yaml \
  --baseline_tagger ../baseline/exp/tagger \
  "$@"
