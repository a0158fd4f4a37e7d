#!/usr/bin/env bash
# Stage 5 (srpol): for the S5 pipeline (conf/infer_s5.yaml) the shared scoring first (CA-SDRi /
# CAPI-SDRi, accuracies, anchors); then RESULTS.md from every evaluation of this recipe: the LASS
# table (exp/*/decode_*/summary.json, mean +- std over runs named <variant> and <variant>_seedN)
# followed by the S5 tables (exp/*/decode_*/scores/*/summary.json) when there are any.
set -euo pipefail
. ./path.sh
. local/s5.sh
if is_s5; then
  bash steps/stage5.sh > "$stage_dir/logs/s5_scoring.log" 2>&1 \
    || { tail -n 30 "$stage_dir/logs/s5_scoring.log" >&2; exit 1; }
fi
shopt -s nullglob
lass=("$exp_dir"/*/decode_*/summary.json)
s5=("$exp_dir"/*/decode_*/scores/*/summary.json)
[ ${#lass[@]} -gt 0 ] || [ ${#s5[@]} -gt 0 ] || { echo "stage 5: nothing to report; run stage 4 first" >&2; exit 1; }
mkdir -p "$stage_dir"
parts=()
if [ ${#lass[@]} -gt 0 ]; then
  "$python" -m s5lib.bin.eval_lass --summaries "$(IFS=,; echo "${lass[*]}")" \
    --out "$stage_dir/results_lass.md" --title "egs/srpol, LASS on the mini bank"
  parts+=("$stage_dir/results_lass.md")
fi
if [ ${#s5[@]} -gt 0 ]; then
  "$python" -m s5lib.bin.make_results --summaries "${s5[@]}" --out "$stage_dir/results_s5.md"
  parts+=("$stage_dir/results_s5.md")
fi
cat "${parts[@]}" > RESULTS.md
cp RESULTS.md "$stage_dir/RESULTS.md"
cat RESULTS.md
