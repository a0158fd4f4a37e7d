#!/usr/bin/env bash
# The loss study of SRPOL's report on the mini bank: one separator (conf/separator.yaml) trained
# for the same 150 updates with L1, the SDR-based loss, -SNR and MixIT (conf/loss/*.yaml), each
# with 2 seeds, every run evaluated on the LASS test set, and one table (mean +- std over the
# seeds) written to loss_study.md. Runs stages 1-4 through run.sh (finished runs are skipped).
#   local/loss_study.sh [--jobs 2] [other run.sh options, e.g. --ngpu 1]
set -euo pipefail
jobs=1
if [ "${1:-}" = --jobs ]; then jobs=$2; shift 2; fi
./run.sh --stop_stage 1 "$@"
runs=()
for loss in l1 sdr snr mixit; do
  for seed in 0 1; do
    tag=loss_$loss
    [ "$seed" = 0 ] || tag=${tag}_seed$seed
    runs+=("$loss $seed $tag")
  done
done
run_one() {  # run_one LOSS SEED TAG [options]
  local loss=$1 seed=$2 tag=$3
  shift 3
  ./run.sh --stage 3 --stop_stage 4 --separator_config "conf/loss/$loss.yaml" --seed "$seed" \
    --tag "$tag" "$@" > "exp/loss_study_$tag.log" 2>&1 \
    || { echo "loss study: $tag failed; see exp/loss_study_$tag.log" >&2; return 1; }
  echo "loss study: $tag done"
}
mkdir -p exp
running=0
for entry in "${runs[@]}"; do
  read -r loss seed tag <<< "$entry"
  run_one "$loss" "$seed" "$tag" "$@" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
summaries=()
for entry in "${runs[@]}"; do
  read -r _ _ tag <<< "$entry"
  summaries+=("exp/separator_$tag/decode_test/summary.json")
done
. ./path.sh
python -m s5lib.bin.eval_lass --summaries "$(IFS=,; echo "${summaries[*]}")" --out loss_study.md \
  --title "egs/srpol loss study (same model, 150 updates, 2 seeds, LASS test set)"
cat loss_study.md
