#!/usr/bin/env bash
# Recipe baseline: the DCASE 2025/2026 Task 4 baseline (M2D-AT tagger + ResUNet(K) separator).
# The stages are shared (./stages.sh --help); this file only holds the system's choices.
# Options given on the command line come last and override them.
set -euo pipefail

exec ./stages.sh \
  --data_config conf/prep_data.yaml \
  --score_config conf/score.yaml \
  "$@"
