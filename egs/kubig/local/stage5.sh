#!/usr/bin/env bash
# Stage 5 (kubig): the shared scoring (CAPI-SDRi, accuracies, the DoA error of the TP estimates,
# the anchors), then RESULTS.md regenerated with egs/baseline's 2026 rows beside this recipe's when
# they have been scored (../baseline/exp/*_2026*/decode_*/scores: run egs/baseline with --year 2026
# on the same data seed: the same test set).
set -euo pipefail
bash steps/stage5.sh
. ./path.sh
shopt -s nullglob
summaries=("$exp_dir"/*/decode_*/scores/*/summary.json)
baseline=(../baseline/exp/*_2026*/decode_*/scores/*/summary.json)
if [ ${#baseline[@]} -gt 0 ]; then
  "$python" -m s5lib.bin.make_results --summaries "${summaries[@]}" "${baseline[@]}" --out RESULTS.md
  echo "RESULTS.md: with egs/baseline's 2026 rows (${#baseline[@]} scoring runs)"
fi
