#!/usr/bin/env bash
# Stage 4 (srpol): separate the LASS test set (stage 1's lass_test, or the split / set that
# conf/infer.yaml names) with stage 3's separator, or with --separator_checkpoint FILE (e.g. the
# LASS baseline's Lightning file; --separator_checkpoint_config a YAML with its model: and
# text_encoder: sections), scored per pair as the DCASE 2024 Task 9 evaluator does
# (python -m s5lib.bin.eval_lass): <separator dir>/decode_test/{pairs.csv,summary.json,audio/}.
# With --infer_config conf/infer_s5.yaml (procedure: caption_queried) it is the shared S5 inference
# instead: the tagger's labels as captions, estimates under the official names.
set -euo pipefail
. steps/common.sh
. local/s5.sh
require_file "$infer_config"
if is_s5; then
  exec bash steps/stage4.sh
fi
args=(--config "$infer_config")
if [ -n "$separator_checkpoint" ]; then
  [ -z "$separator_checkpoint_config" ] || args+=(--config "$separator_checkpoint_config")
  args+=(--checkpoint "$separator_checkpoint")
else
  args+=(--exp_dir "$separator_exp")
fi
$decode_cmd "$stage_dir/logs/eval_lass.log" \
  "$python" -m s5lib.bin.eval_lass "${args[@]}" --data "$data_dir" --out_dir "$stage_dir" \
  --device "$(device_name)" --trust_checkpoint "${trust_checkpoint:-false}" \
  || { tail -n 20 "$stage_dir/logs/eval_lass.log" >&2; exit 1; }
tail -n 1 "$stage_dir/logs/eval_lass.log"
