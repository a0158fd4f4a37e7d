#!/usr/bin/env bash
# Stage 2 (kubig): the encoder stage 3 freezes. When the separator config names a BEATs release
# (model.encoder_checkpoint, e.g. conf/full/separator.yaml with BEATs_iter3_plus_AS2M.pt) there
# is nothing to train; otherwise a small BEATs-shaped tagger is trained on the mini bank
# ($tagger_config, as the shared stage 2 does).
set -euo pipefail
. steps/common.sh
. local/encoder_checkpoint.sh
require_2026
require_file "$separator_config"
release=$(encoder_checkpoint "$separator_config")
if [ -n "$release" ]; then
  [ -f "$release" ] || { echo "stage 2: model.encoder_checkpoint of $separator_config: $release not found (BEATs_iter3_plus_AS2M.pt from github.com/microsoft/unilm/tree/master/beats)" >&2; exit 1; }
  echo "stage 2 skipped: the encoder is the BEATs release $release ($separator_config)"
  exit 0
fi
run_training s5lib.bin.train_tagger "$tagger_config"
