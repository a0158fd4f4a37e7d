#!/usr/bin/env bash
# Stage 3 (kubig): the end-to-end separator on the frozen encoder: stage 2's BEATs tagger
# (model.encoder_exp), or the BEATs release the config names (model.encoder_checkpoint).
set -euo pipefail
. steps/common.sh
. local/encoder_checkpoint.sh
require_2026
require_file "$separator_config"
if [ -n "$(encoder_checkpoint "$separator_config")" ]; then
  run_training s5lib.bin.train_separator "$separator_config"
else
  [ -f "$tagger_exp/checkpoint_best.pt" ] || { echo "stage 3: no encoder: $tagger_exp/checkpoint_best.pt not found; run stage 2 first" >&2; exit 1; }
  run_training s5lib.bin.train_separator "$separator_config" --model.encoder_exp "$tagger_exp"
fi
