#!/usr/bin/env bash
# Stage 4 (shared): inference on the test set, python -m s5lib.bin.infer with $infer_config:
# estimated labels (tagger of stage 2) and oracle labels, estimates under the official names.
set -euo pipefail
. steps/common.sh
require_file "$infer_config"
log_file=$stage_dir/logs/infer.log
echo "inference: log in $log_file"
$decode_cmd --gpu "$ngpu" "$log_file" "$python" -m s5lib.bin.infer --config "$infer_config" \
  --data "$data_dir" --tagger_exp "$tagger_exp" --separator_exp "$separator_exp" \
  --out_dir "$stage_dir" --year "$year" --device "$(device_name)" \
  || { tail -n 20 "$log_file" >&2; exit 1; }
grep -E "estimates for" "$log_file" || true
