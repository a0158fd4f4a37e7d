#!/usr/bin/env bash
# Stage 5 (shared): score every label mode of stage 4 and the model-free anchor rows against
# the test set, then regenerate the recipe's RESULTS.md (never edit it by hand).
set -euo pipefail
. steps/common.sh
if [ -z "${test_dir:-}" ]; then
  test_dir=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['test_dir'])" \
    "$data_dir/dataset.json")
fi
if [ ! -d "$test_dir/oracle_target" ]; then
  echo "scoring skipped: $test_dir has no oracle_target/ (an evaluation set); the estimates are in"
  echo "$infer_exp/*/estimates; package them with python -m s5lib.bin.package_submission"
  exit 0
fi
recipe=$(basename "$(pwd)")
score_args=(--year "$year" --ref_dir "$test_dir" --recipe "$recipe" --nj "$nj")
[ -f "$score_config" ] && score_args+=(--config "$score_config")
found=false
for mode_dir in "$infer_exp"/*/; do
  mode_dir=${mode_dir%/}
  mode=$(basename "$mode_dir")
  [ -d "$mode_dir/estimates" ] || continue
  found=true
  probs=()
  [ -f "$mode_dir/eval_results.json" ] && probs=(--probs "$mode_dir/eval_results.json")
  $decode_cmd "$stage_dir/logs/score_$mode.log" "$python" -m s5lib.bin.score "${score_args[@]}" \
    --est_dir "$mode_dir/estimates" "${probs[@]}" --out_dir "$stage_dir/$mode" \
    --label_mode "$mode" --tag "$(basename "$infer_exp")" \
    || { tail -n 20 "$stage_dir/logs/score_$mode.log" >&2; exit 1; }
done
$found || { echo "no estimates found under $infer_exp/*/estimates; run stage 4 first" >&2; exit 1; }
for anchor in mixture silence oracle; do
  $decode_cmd "$stage_dir/logs/anchor_$anchor.log" "$python" -m s5lib.bin.score "${score_args[@]}" \
    --anchor "$anchor" --out_dir "$stage_dir/anchor_$anchor" \
    --tag "$(basename "$infer_exp")_anchor_$anchor" \
    || { tail -n 20 "$stage_dir/logs/anchor_$anchor.log" >&2; exit 1; }
done
# RESULTS.md covers every scored experiment of this recipe (each with its own anchors)
summaries=("$exp_dir"/score_*/*/summary.json)
"$python" -m s5lib.bin.make_results --summaries "${summaries[@]}" --out RESULTS.md
cat RESULTS.md
