#!/usr/bin/env bash
# CP-JKU's ablation (the report's Table 1 and Fig. 2) in one command:
#     local/ablation.sh [--seeds "0 1"] [--variants "full no_time_film ..."] [--tagger_seed N]
#                       [-- run.sh options]
# For every seed: stages 1-2 once (the SED tagger exp/tagger_seed<s>, shared by the variants; with
# --tagger_seed N one tagger, exp/tagger_seed<N>, serves every seed: separator seeds only),
# then stages 3-5 of every variant conf/ablation/<variant>.yaml (exp/separator_<variant>_seed<s>;
# the iterative ones decoded with conf/infer_iterative.yaml, every refinement step scored). Each
# decode has the three label sources when ../baseline/exp/tagger exists (run.sh's --baseline_tagger):
# the baseline tagger, our SED tagger, oracle labels. Finished runs are skipped (stage markers), so
# an interrupted ablation resumes where it stopped. The table: exp/ablation/table.md, mean ± std
# over the seeds next to egs/baseline's rows (python -m s5lib.bin.compare --seed_table); the
# iterative variants' score after every step: exp/ablation/refinement_steps.png (Fig. 2).
set -euo pipefail
seeds="0 1"
variants="full no_time_film no_injection frozen_sed dprnn iter2 iter3 iter4"
tagger_seed=""
run_options=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --tagger_seed) tagger_seed=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    --) shift; run_options=("$@"); break ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$0: unknown option $1 (run.sh options go after --)" >&2; exit 1 ;;
  esac
done
[ -f run.sh ] && [ -d conf/ablation ] || { echo "$0: run this from egs/cpjku" >&2; exit 1; }
for variant in $variants; do
  [ -f "conf/ablation/$variant.yaml" ] || { echo "$0: no conf/ablation/$variant.yaml" >&2; exit 1; }
done
for seed in $seeds; do
  t_seed=${tagger_seed:-$seed}
  ./run.sh --stop_stage 2 --seed "$t_seed" --tagger_tag "seed$t_seed" "${run_options[@]}"
  for variant in $variants; do
    infer=conf/infer.yaml
    case $variant in iter*) infer=conf/infer_iterative.yaml ;; esac
    ./run.sh --stage 3 --seed "$seed" --tagger_tag "seed$t_seed" --tag "${variant}_seed$seed" \
      --separator_config "conf/ablation/$variant.yaml" --infer_config "$infer" "${run_options[@]}"
  done
done
mkdir -p exp/ablation
results=(exp)
# egs/baseline's scored runs, when there are any
if [ -d ../baseline/exp ] && [ -n "$(find -L ../baseline/exp -name summary.json -print -quit)" ]; then
  results+=(../baseline/exp)
fi
. ./path.sh
python -m s5lib.bin.compare --seed_table --results "${results[@]}" --out exp/ablation/table.md \
  --plot exp/ablation/refinement_steps.png
cat exp/ablation/table.md
