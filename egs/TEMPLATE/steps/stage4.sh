#!/usr/bin/env bash
# Stage 4 (shared): inference on the test set, python -m s5lib.bin.infer with $infer_config:
# estimated labels (the tagger) and oracle labels, estimates under the official names.
# The models are stage 2/3's experiment dirs, or the model files of --tagger_checkpoint /
# --separator_checkpoint (released checkpoints: no stage 2/3 needed). --test_dir processes
# another folder of soundscapes (an evaluation set: estimates only).
set -euo pipefail
. steps/common.sh
require_file "$infer_config"
log_file=$stage_dir/logs/infer.log
args=(--config "$infer_config" --data "$data_dir" --out_dir "$stage_dir" --year "$year"
      --device "$(device_name)" --trust_checkpoint "${trust_checkpoint:-false}")
if [ -n "${tagger_checkpoint:-}" ]; then
  args+=(--tagger_checkpoint "$tagger_checkpoint" --tagger_config "${tagger_checkpoint_config:-}")
else
  args+=(--tagger_exp "$tagger_exp")
fi
if [ -n "${separator_checkpoint:-}" ]; then
  args+=(--separator_checkpoint "$separator_checkpoint"
         --separator_config "${separator_checkpoint_config:-}")
else
  args+=(--separator_exp "$separator_exp")
fi
[ -n "${test_dir:-}" ] && args+=(--test_dir "$test_dir")
if [ -n "${baseline_tagger:-}" ]; then  # a second tagger's labels (label mode baseline_tagger)
  if [ -f "$baseline_tagger/checkpoint_best.pt" ]; then
    args+=(--baseline_tagger_exp "$baseline_tagger")
  elif [ -f "$baseline_tagger" ]; then
    args+=(--baseline_tagger_checkpoint "$baseline_tagger")
  else
    echo "note: --baseline_tagger $baseline_tagger is neither a trained stage-2 dir nor a model file;"
    echo "      label mode baseline_tagger skipped (train egs/baseline stages 1-2, or give m2dat.ckpt)"
  fi
fi
echo "inference: log in $log_file"
$decode_cmd --gpu "$ngpu" "$log_file" "$python" -m s5lib.bin.infer "${args[@]}" \
  || { tail -n 20 "$log_file" >&2; exit 1; }
grep -E "estimates for|skipped|: (Lightning|trainer|state_dict)" "$log_file" || true
