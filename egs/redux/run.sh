#!/usr/bin/env bash
# Recipe redux: REDUX (University of Thessaly, DCASE 2025 Task 4): the baseline's M2D tagger, an
# attentive ResUNeXt separator trained in two phases (without, then with SpecAugment), and the
# classify / separate / verify / subtract strategy at inference.
# The stages are shared (./stages.sh --help); local/stage3.sh trains the two phases.
# Options given on the command line come last and override them.
set -euo pipefail

exec ./stages.sh \
  --data_config conf/prep_data.yaml \
  --infer_config conf/infer.yaml \
  --score_config conf/score.yaml \
  "$@"
