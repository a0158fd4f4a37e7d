#!/usr/bin/env bash
# The report's Table 2 on this data in one command:
#     local/table2.sh [--seeds "0 1"] [--tagger_seed 0] [--rows "resunet resunetk resunext continued"]
#                     [-- run.sh options]
# Stages 1-2 once (the baseline M2D tagger, exp/tagger_table2, shared by every row and seed), then
# for every seed s the separators (stage 3) and their decodes (stages 4-5):
#   resunet    egs/baseline's ResUNet (one label per pass)   exp/separator_t2_resunet_seed<s>
#   resunetk   egs/baseline's ResUNetK (3 slots)              exp/separator_t2_resunetk_seed<s>
#   resunext   attentive ResUNeXt, both phases               exp/separator_t2_resunext_seed<s>
#              ("w/o SpecAugment" = its phase 1, decoded as exp/separator_t2_nospecaug_seed<s>)
#   continued  control: phase 1 + the same 150 updates without SpecAugment
#                                                            exp/separator_t2_continued_seed<s>
# Every separator is decoded without the strategy (conf/infer_single.yaml: tagger and oracle
# labels) and, for resunetk and resunext, with it (conf/table2/strategy.yaml, and
# conf/table2/strategy_level.yaml: estimates re-labelled at their mixture's level); each decode's
# strategy.json holds the per-case counts. Finished runs are skipped (stage markers), so an
# interrupted table resumes. Output: exp/table2/{table.md,label_accuracy.md,strategy_cases.md}
# (mean ± std over the seeds, next to egs/baseline's scored rows when there are any).
set -euo pipefail
seeds="0 1"
tagger_seed=0
rows="resunet resunetk resunext continued"
run_options=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --tagger_seed) tagger_seed=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --) shift; run_options=("$@"); break ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$0: unknown option $1 (run.sh options go after --)" >&2; exit 1 ;;
  esac
done
[ -f run.sh ] && [ -d conf/table2 ] || { echo "$0: run this from egs/redux" >&2; exit 1; }
for row in $rows; do
  case $row in resunet|resunetk|resunext|continued) ;;
    *) echo "$0: unknown row '$row' (resunet resunetk resunext continued)" >&2; exit 1 ;; esac
done
exp_dir=exp
for ((i = 0; i < ${#run_options[@]}; i++)); do   # where run.sh puts the experiments
  [ "${run_options[$i]}" = --exp_dir ] && exp_dir=${run_options[$((i + 1))]}
done
run() { ./run.sh --tagger_tag table2 "$@" "${run_options[@]}"; }
strategies="conf/table2/strategy.yaml conf/table2/strategy_level.yaml"
run --stop_stage 2 --seed "$tagger_seed"
for seed in $seeds; do
  for row in $rows; do
    case $row in
      resunet|resunetk)
        run --stage 3 --seed "$seed" --tag "t2_${row}_seed$seed" \
          --separator_config "conf/table2/$row.yaml" --infer_config conf/infer_single.yaml
        if [ "$row" = resunetk ]; then
          for infer in $strategies; do
            run --stage 4 --seed "$seed" --tag "t2_${row}_seed$seed" \
              --separator_config "conf/table2/$row.yaml" --infer_config "$infer"
          done
        fi
        ;;
      resunext)
        for infer in conf/infer_single.yaml $strategies; do
          run --stage 3 --seed "$seed" --tag "t2_resunext_seed$seed" \
            --separator_config conf/separator.yaml --infer_config "$infer"
        done
        # the "w/o SpecAugment" row: phase 1's best checkpoint, decoded by itself
        run --stage 4 --seed "$seed" --tag "t2_nospecaug_seed$seed" \
          --separator_config conf/separator_nospecaug.yaml --infer_config conf/infer_single.yaml \
          --separator_checkpoint "$exp_dir/separator_t2_resunext_seed$seed/phase1/checkpoint_best.pt"
        ;;
      continued)
        # phase 1 is the resunext row's (same config and seed): copied, not trained again
        source=$exp_dir/separator_t2_resunext_seed$seed/phase1
        target=$exp_dir/separator_t2_continued_seed$seed/phase1
        if [ -f "$source/checkpoint_best.pt" ] && [ ! -f "$target/checkpoint_best.pt" ]; then
          mkdir -p "$(dirname "$target")"
          cp -r "$source" "$target"
        fi
        run --stage 3 --seed "$seed" --tag "t2_continued_seed$seed" \
          --separator_config conf/table2/continued.yaml --infer_config conf/infer_single.yaml
        ;;
    esac
  done
done
mkdir -p "$exp_dir/table2"
results=("$exp_dir")
if [ -d ../baseline/exp ] && [ -n "$(find -L ../baseline/exp -name summary.json -print -quit)" ]; then
  results+=(../baseline/exp)
fi
. ./path.sh
python -m s5lib.bin.compare --seed_table --results "${results[@]}" --out "$exp_dir/table2/table.md"
python -m s5lib.bin.compare --seed_table --metric label_accuracy --results "${results[@]}" \
  --out "$exp_dir/table2/label_accuracy.md"
python -m s5lib.bin.compare --strategy_table --results "$exp_dir" --out "$exp_dir/table2/strategy_cases.md"
cat "$exp_dir/table2/table.md" "$exp_dir/table2/label_accuracy.md" "$exp_dir/table2/strategy_cases.md"
