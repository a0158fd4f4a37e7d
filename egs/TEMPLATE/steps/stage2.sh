#!/usr/bin/env bash
# Stage 2 (shared): tagger training, python -m s5lib.bin.train_tagger with $tagger_config.
# Called by stages.sh (a recipe's local/stage2.sh replaces it); see stages.sh for the variables.
set -euo pipefail
. steps/common.sh
run_training s5lib.bin.train_tagger "$tagger_config"
