# shellcheck shell=bash
# Helpers of the shared stage steps (sourced by steps/stageN.sh, which stages.sh runs with the
# recipe's options exported: year data_dir exp_dir ngpu num_nodes nj seed python stage_dir
# tagger_exp separator_exp infer_exp score_exp *_config train_cmd decode_cmd cuda_cmd).
. ./path.sh

require_file() {
  [ -f "$1" ] || { echo "$(basename "$0"): config file not found: $1" >&2; exit 1; }
}

device_name() {  # the device of the Python steps: cpu unless GPUs were asked for
  if [ "${ngpu:-0}" -gt 0 ]; then echo cuda; else echo cpu; fi
}

run_training() {  # run_training MODULE CONFIG [--key value ...]: train on ngpu GPUs x num_nodes
  local module=$1 config=$2   # (CPU when 0); further arguments are config overrides
  shift 2
  require_file "$config"
  # an interrupted run resumes from its last checkpoint; --force true trains from scratch
  # (the checkpoints are then overwritten as training goes)
  local resume=true
  [ "${force:-false}" = true ] && resume=false
  local log_file=$stage_dir/logs/train.log
  echo "training ($module): log in $log_file"
  $cuda_cmd --gpu "$ngpu" "$log_file" \
    utils/launch_python.sh --ngpu "$ngpu" --num_nodes "$num_nodes" --python "$python" -- \
    "$module" --config "$config" --data "$data_dir" --exp_dir "$stage_dir" --year "$year" \
    --train.seed "$seed" --train.device "$(device_name)" --train.progress false \
    --train.resume "$resume" --trust_checkpoint "${trust_checkpoint:-false}" "$@" \
    || { tail -n 30 "$log_file" >&2; exit 1; }
  grep -E "validation after|training finished" "$log_file" | tail -n 4 || true
}
