#!/usr/bin/env bash
# Stage 3 (cpjku): train the AudioSep-SED separator; its SED starts as stage 2's SED tagger
# (architecture from $tagger_exp/config.yaml, weights from its checkpoint_best.pt).
set -euo pipefail
. steps/common.sh
[ -f "$tagger_exp/checkpoint_best.pt" ] || {
  echo "stage 3: $tagger_exp/checkpoint_best.pt not found: the separator's SED is stage 2's SED" >&2
  echo "tagger; run stage 2 first (./run.sh --stage 2)" >&2
  exit 1
}
run_training s5lib.bin.train_separator "$separator_config" --model.sed_exp "$tagger_exp"
