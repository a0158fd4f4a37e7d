#!/usr/bin/env bash
# Stage 5 (srpol): RESULTS.md from every LASS evaluation of this recipe (exp/*/decode_*/summary.json),
# with mean +- std over runs named <variant> and <variant>_seedN.
set -euo pipefail
. ./path.sh
shopt -s nullglob
summaries=("$exp_dir"/*/decode_*/summary.json)
[ ${#summaries[@]} -gt 0 ] || { echo "stage 5: no $exp_dir/*/decode_*/summary.json; run stage 4 first" >&2; exit 1; }
mkdir -p "$stage_dir"
"$python" -m s5lib.bin.eval_lass --summaries "$(IFS=,; echo "${summaries[*]}")" \
  --out RESULTS.md --title "egs/srpol: LASS on the mini bank"
cp RESULTS.md "$stage_dir/RESULTS.md"
