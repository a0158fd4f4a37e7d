#!/usr/bin/env bash
# The shared stage script of every recipe. A recipe's run.sh calls it with the recipe's choices:
#     ./stages.sh --separator_config conf/separator.yaml ... "$@"
# Run it from the recipe directory (the one holding path.sh, cmd.sh, conf/ and local/).
#
# Stages (each runs when stage <= N <= stop_stage):
#   1 data      build the embedded mini soundbank (or verify --db_root), write the fixed
#               validation and test sets                        -> $data_dir
#   2 tagger    tagger training                                 -> $exp_dir/tagger[_<name>]
#   3 separator separator training                              -> $exp_dir/separator[_<name>]
#   4 infer     (iterative) inference on the test set           -> <separator dir>/decode_<test>
#   5 score     scoring + anchors, RESULTS.md                   -> <decode dir>/scores/<labels>
# Stages 2-5 run the recipe's local/stageN.sh when it exists, else the shared steps/stageN.sh
# (both see the options below and stage_dir, tagger_exp, separator_exp, infer_exp, score_exp,
# train_cmd, decode_cmd, cuda_cmd as environment variables); with neither the stage stops with
# exit status 2.
#
# Every stage logs to <stage dir>/logs/stageN.log (overwritten), writes <stage dir>/run.sh that
# replays it, and marks finished work with <stage dir>/.stageN.done holding the settings it ran
# with. A stage whose marker matches the current settings is skipped unless --force true.
set -euo pipefail

stage=1                # first stage to run
stop_stage=5           # last stage to run
year=2025              # DCASE rule set: 2025 or 2026
db_root=""             # DCASE dev_set to use; empty: build the embedded mini soundbank
data_dir=""            # stage 1 output; default: data (2025), data_2026 (2026)
exp_dir=exp            # experiment directories go here
ngpu=0                 # GPUs per node for training / inference (0: CPU)
num_nodes=1            # nodes for training
nj=2                   # parallel jobs / processes for data work
seed=0                 # random seed of training (model initialisation and data order)
data_seed=0            # random seed of stage 1 (mini soundbank, validation and test sets)
tag=""                 # name of the stage 2-5 experiment dirs instead of the config names
tagger_tag=""          # name of the tagger dir alone (default: --tag): separators sharing one tagger
force=false            # re-run stages even when their .stageN.done marker matches
cmd_backend=${cmd_backend:-local}  # job backend: local or slurm (see cmd.sh)
train_side_by_side=auto  # stages 2 and 3 at the same time when both run: auto = when the stage-3
                         # script never names $tagger_exp (it cannot read stage 2's tagger) and
                         # the two jobs would not share this machine's GPUs
budget=quick          # training budget: quick (tiny models, minutes on a CPU), small (~15 min
                      # of training per model on 2 CPU cores), full (the reports' settings, GPUs)
data_config=conf/prep_data.yaml
tagger_config=""      # default: conf/tagger.yaml (quick) or conf/<budget>/tagger.yaml
separator_config=""   # default: conf/separator.yaml (quick) or conf/<budget>/separator.yaml
infer_config=""       # default: conf/<budget>/infer.yaml where it exists, else conf/infer.yaml
score_config=conf/score.yaml
python=python
tagger_checkpoint=""   # stage 4: a tagger model file (e.g. the released m2dat.ckpt) instead of stage 2's
separator_checkpoint=""  # stage 4: a separator model file (e.g. resunetk.ckpt) instead of stage 3's
tagger_checkpoint_config=""     # YAML with a model: section for tagger_checkpoint (default: read from the file)
separator_checkpoint_config=""  # same for separator_checkpoint
trust_checkpoint=false # allow a full unpickle of checkpoint files that weights-only loading refuses
class_eq_mixtures=300  # stage 5: training mixtures the class-EQ anchor is fitted on
report_mixtures=3      # stage 5: worst / best / random mixtures each on the listening page
test_dir=""            # stages 4-5: a folder of soundscapes other than the data dir's test set (e.g. eval)
baseline_tagger=""     # stage 4: a second tagger whose labels are decoded too (label mode
                       # baseline_tagger): a stage-2 dir (../baseline/exp/tagger) or a model file (m2dat.ckpt)

help_message="Usage: ./run.sh [options]   (the recipe's run.sh passes them on to stages.sh)
Runs the stages of this recipe (see the top of stages.sh for what each one does).
Options (default):
  --stage N              first stage to run ($stage)
  --stop_stage N         last stage to run ($stop_stage)
  --year Y               DCASE rule set, 2025 or 2026 ($year)
  --db_root DIR          DCASE dev_set to verify and use; empty builds the mini soundbank ('$db_root')
  --data_dir DIR         data directory (default: data for 2025, data_2026 for 2026)
  --exp_dir DIR          experiment directory ($exp_dir)
  --ngpu N               GPUs per node, 0 for CPU ($ngpu)
  --num_nodes N          nodes for training ($num_nodes)
  --nj N                 parallel jobs for data work ($nj)
  --seed N               random seed of training ($seed); a second seed: --seed 1 --tag seed1
  --data_seed N          random seed of stage 1, the bank and its test set ($data_seed)
  --tag NAME             name of this run's model dirs: exp/tagger_NAME, exp/separator_NAME
                         (default: from the config names, plus the year for 2026)
  --tagger_tag NAME      name of the tagger dir only (exp/tagger_NAME; default: --tag), e.g. several
                         separator variants (--tag) that share one tagger
  --force true|false     re-run finished stages ($force)
  --cmd_backend NAME     job backend, local or slurm ($cmd_backend)
  --train_side_by_side auto|true|false  train the tagger (stage 2) and the separator (stage 3)
                         at the same time, each on half the CPU threads ($train_side_by_side; auto:
                         when the stage-3 script never names \$tagger_exp and no local GPUs are shared)
  --data_config FILE     stage 1 config ($data_config)
  --budget NAME          quick | small | full: picks conf/[<budget>/]{tagger,separator}.yaml and
                         conf/<budget>/infer.yaml where it exists ($budget)
  --tagger_config FILE   stage 2 config (default: from --budget)
  --separator_config FILE  stage 3 config (default: from --budget)
  --infer_config FILE    stage 4 config (default: from --budget)
  --score_config FILE    stage 5 config ($score_config)
  --python CMD           python interpreter of the Python steps ($python)
  --tagger_checkpoint FILE     stage 4: tagger model file instead of stage 2's ('$tagger_checkpoint')
  --separator_checkpoint FILE  stage 4: separator model file instead of stage 3's ('$separator_checkpoint')
  --tagger_checkpoint_config FILE, --separator_checkpoint_config FILE
                         YAML (model: section) describing those files; default: read from the file
  --trust_checkpoint true|false  allow a full unpickle of files weights-only loading refuses ($trust_checkpoint)
  --class_eq_mixtures N  stage 5: training mixtures of the class-EQ anchor ($class_eq_mixtures)
  --report_mixtures N    stage 5: worst, best and random mixtures each on scores/report.html ($report_mixtures)
  --test_dir DIR         stages 4-5: soundscapes to process instead of the data dir's test set;
                         without oracle_target/ (an evaluation set) scoring is skipped ('$test_dir')
  --baseline_tagger PATH stage 4: also decode with this tagger (label mode baseline_tagger): a
                         stage-2 dir or a model file such as m2dat.ckpt; skipped when missing ('$baseline_tagger')
  --config FILE          shell file of name=value lines, read before the other options"

if [ ! -f ./path.sh ] || [ ! -f ./cmd.sh ] || [ ! -d ./utils ]; then
  echo "$0: run this from a recipe directory (one with path.sh, cmd.sh and utils/)" >&2
  exit 1
fi
. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
. utils/log.sh

[ $# -eq 0 ] || die "unexpected arguments: $* (options are --name value)"
for name in stage stop_stage ngpu num_nodes nj seed data_seed; do
  [[ "${!name}" =~ ^[0-9]+$ ]] || die "--$name must be a non-negative integer, got '${!name}'"
done
[ "$year" = 2025 ] || [ "$year" = 2026 ] || die "--year must be 2025 or 2026, got '$year'"
case "$train_side_by_side" in
  auto|true|false) ;;
  *) die "--train_side_by_side must be auto, true or false, got '$train_side_by_side'" ;;
esac

case "$budget" in
  quick) budget_dir=conf ;;
  small|full) budget_dir=conf/$budget ;;
  *) die "--budget must be quick, small or full, got '$budget'" ;;
esac
[ -n "$tagger_config" ] || tagger_config=$budget_dir/tagger.yaml
[ -n "$separator_config" ] || separator_config=$budget_dir/separator.yaml
if [ -z "$infer_config" ]; then
  infer_config=conf/infer.yaml
  [ ! -f "$budget_dir/infer.yaml" ] || infer_config=$budget_dir/infer.yaml
fi

recipe_dir=$(pwd)
config_name() {  # config_name FILE: the file name without directory and .yaml/.yml
  local name
  name=$(basename "$1")
  name=${name%.yaml}
  printf '%s' "${name%.yml}"
}
config_fingerprint() {  # config_fingerprint FILE...: "file=checksum" for each file and its base: chain
  local file base depth
  for file in "$@"; do
    depth=0
    while [ -n "$file" ] && [ "$depth" -lt 8 ]; do
      if [ ! -f "$file" ]; then
        printf '%s=missing ' "$file"
        break
      fi
      printf '%s=%s ' "$file" "$(cksum < "$file" | cut -d' ' -f1)"
      base=$(sed -n 's/^base:[[:space:]]*\([^#[:space:]]*\).*/\1/p' "$file" | head -n 1)
      case "$base" in
        "") file="" ;;
        /*) file=$base ;;
        *) file=$(dirname "$file")/$base ;;
      esac
      depth=$((depth + 1))
    done
  done
}

file_identity() {  # file_identity FILE...: "file=size:mtime" of each given (non-empty) path
  local file
  for file in "$@"; do
    [ -n "$file" ] || continue
    [ -f "$file" ] || die "file not found: $file"
    printf '%s=%s ' "$file" "$(stat -c '%s:%Y' "$file")"
  done
}

# Experiment dirs: one per trained model, its decodes and their scores nested in it:
#   exp/tagger[_<name>]/  exp/separator[_<name>]/decode_<test set>/{estimated,oracle}/  .../scores/
# <name> is --tag, else the config's name without a leading "tagger_"/"separator_" (none for the
# default conf/tagger.yaml and conf/separator.yaml; the budget for conf/<budget>/tagger.yaml),
# plus the year for 2026 when --tag is empty.
model_dir_name() {  # model_dir_name KIND CONFIG
  local kind=$1 name
  if [ -n "$tag" ]; then
    name=$tag
  else
    name=$(config_name "$2")
    name=${name#"$kind"}
    name=${name#_}
    if [ "$budget" != quick ] && [ -z "$name" ]; then name=$budget; fi
    [ "$year" = 2025 ] || name=${name:+${name}_}$year
  fi
  printf '%s' "$kind${name:+_$name}"
}
[ -n "$data_dir" ] || { if [ "$year" = 2025 ]; then data_dir=data; else data_dir=data_$year; fi; }
file_identity_if_present() {  # file_identity_if_present FILE: file_identity, or nothing if absent
  [ ! -f "$1" ] || file_identity "$1"
}

prep_exp=$exp_dir/prep_$(basename "$data_dir")  # exp/prep_data for the default data dir
tagger_exp=$exp_dir/$(tag=${tagger_tag:-$tag} model_dir_name tagger "$tagger_config")
separator_exp=$exp_dir/$(model_dir_name separator "$separator_config")
test_name=$(basename "${test_dir:-test}")
decode_name=decode_$test_name
[ "$(config_name "$infer_config")" = infer ] || decode_name+=_$(config_name "$infer_config")
infer_exp=$separator_exp/$decode_name
score_exp=$infer_exp/scores

# Settings each stage's results depend on; a marker holding other settings is stale.
settings_1="year=$year db_root=$db_root data_dir=$data_dir data_seed=$data_seed $(config_fingerprint "$data_config")"
settings_2="$settings_1 seed=$seed $(config_fingerprint "$tagger_config")"
settings_3="$settings_2 $(config_fingerprint "$separator_config")"
settings_4="$settings_3 $(config_fingerprint "$infer_config") test_dir=$test_dir trust_checkpoint=$trust_checkpoint"
settings_4+=" $(file_identity "$tagger_checkpoint" "$separator_checkpoint") $(config_fingerprint \
  "$tagger_checkpoint_config" "$separator_checkpoint_config")"
if [ -n "$baseline_tagger" ]; then
  settings_4+=" baseline_tagger=$baseline_tagger"
  if [ -d "$baseline_tagger" ]; then
    settings_4+=" $(file_identity_if_present "$baseline_tagger/checkpoint_best.pt")"
  else
    settings_4+=" $(file_identity_if_present "$baseline_tagger")"
  fi
fi
settings_5="$settings_4 $(config_fingerprint "$score_config") class_eq_mixtures=$class_eq_mixtures report_mixtures=$report_mixtures"
# A recipe whose stage does different work for different options may add to that stage's own
# settings here (local/settings.sh, sourced; e.g. egs/srpol's stage 2 trains a tagger only for its
# S5 pipeline): only that stage's marker changes, not the later stages'.
[ ! -f local/settings.sh ] || . local/settings.sh

is_done() {  # is_done MARKER SETTINGS: true when the stage finished with these settings
  [ "$force" = false ] && [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}

write_replay() {  # write_replay STAGE_DIR COMMAND...: STAGE_DIR/run.sh re-runs the stage
  local dir=$1
  shift
  {
    echo "#!/usr/bin/env bash"
    echo "# Replays this stage; written by stages.sh at $(date '+%Y-%m-%dT%H:%M:%S')."
    printf 'cd %q && . ./path.sh || exit 1\n' "$recipe_dir"
    printf '%q ' "$@"
    echo
  } > "$dir/run.sh"
  chmod +x "$dir/run.sh"
}

resolved_options() {  # the options of this run, to replay a stage through stages.sh
  local name
  for name in year db_root data_dir exp_dir ngpu num_nodes nj seed data_seed tag tagger_tag budget cmd_backend \
      data_config tagger_config separator_config infer_config score_config \
      tagger_checkpoint separator_checkpoint tagger_checkpoint_config separator_checkpoint_config \
      trust_checkpoint test_dir class_eq_mixtures report_mixtures baseline_tagger; do
    printf '%s\n%s\n' "--$name" "${!name}"
  done
}

run_local_stage() {  # run_local_stage N NAME INPUT STAGE_DIR SETTINGS
  local n=$1 name=$2 input=$3 dir=$4 settings=$5
  local script=local/stage$n.sh
  [ -f "$script" ] || script=steps/stage$n.sh
  if [ ! -f "$script" ]; then
    log "Stage $n ($name): not implemented for this recipe (no local/stage$n.sh or steps/stage$n.sh)"
    exit 2
  fi
  log "Stage $n: $name: $input -> $dir"
  local marker=$dir/.stage$n.done
  if is_done "$marker" "$settings"; then
    log "Stage $n: already done with these settings ($marker); skipping (--force true re-runs it)"
    return 0
  fi
  mkdir -p "$dir/logs"
  rm -f "$marker"
  local options=()
  mapfile -t options < <(resolved_options)
  write_replay "$dir" ./stages.sh --stage "$n" --stop_stage "$n" --force true "${options[@]}"
  if ! (
    export stage_dir=$dir
    export year db_root data_dir exp_dir ngpu num_nodes nj seed data_seed tag force python \
      data_config tagger_config separator_config infer_config score_config \
      tagger_checkpoint separator_checkpoint tagger_checkpoint_config separator_checkpoint_config \
      trust_checkpoint test_dir class_eq_mixtures report_mixtures baseline_tagger prep_exp tagger_exp separator_exp infer_exp score_exp train_cmd decode_cmd cuda_cmd
    bash "$script"
  ) 2>&1 | tee "$dir/logs/stage$n.log"; then
    die "Stage $n failed; see $dir/logs/stage$n.log"
  fi
  printf '%s\n' "$settings" > "$marker"
  log "Stage $n: done (log: $dir/logs/stage$n.log)"
}

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: data preparation: ${db_root:-embedded mini soundbank} -> $data_dir"
  mkdir -p "$prep_exp/logs"
  # Runs started at once on the same data (a second seed, --year 2026 twice) must not build it
  # at the same time: the first takes the lock, the others wait and then find it done.
  if command -v flock > /dev/null; then
    exec 8> "$prep_exp/.stage1.lock"
    if ! flock -n 8; then
      log "Stage 1: another run is preparing $data_dir (lock $prep_exp/.stage1.lock); waiting for it"
      flock 8
    fi
  fi
  if is_done "$prep_exp/.stage1.done" "$settings_1" && [ -f "$data_dir/dataset.json" ]; then
    log "Stage 1: already done with these settings ($prep_exp/.stage1.done); skipping (--force true re-runs it)"
  else
    rm -f "$prep_exp/.stage1.done"
    command=("$python" -m s5lib.bin.prep_data)
    if [ -n "$data_config" ]; then
      [ -f "$data_config" ] || die "--data_config file not found: $data_config"
      command+=(--config "$data_config")
    fi
    command+=(--year "$year" --db_root "$db_root" --out_dir "$data_dir" --seed "$data_seed" --nj "$nj")
    write_replay "$prep_exp" "${command[@]}"
    stage_log=$prep_exp/logs/stage1.log
    if ! $train_cmd --num_threads "$nj" "$stage_log" "$(printf '%q ' "${command[@]}")"; then
      tail -n 20 "$stage_log" >&2 || true
      die "Stage 1 failed; see $stage_log"
    fi
    printf '%s\n' "$settings_1" > "$prep_exp/.stage1.done"
    log "Stage 1: done (log: $stage_log)"
  fi
  exec 8>&-  # releases the lock
fi

side_by_side=false  # stages 2 and 3 at once (--train_side_by_side)
if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 3 ]; then
  case "$train_side_by_side" in
    true) side_by_side=true ;;
    auto)  # a stage 3 finds stage 2's tagger only through $tagger_exp: one that never names it
      stage3_script=local/stage3.sh  # trains on the data alone
      [ -f "$stage3_script" ] || stage3_script=steps/stage3.sh
      if [ -f "$stage3_script" ] && ! grep -q 'tagger_exp' "$stage3_script" \
          && { [ "$cmd_backend" != local ] || [ "$ngpu" -eq 0 ]; }; then
        side_by_side=true
      fi ;;
  esac
fi

if [ "$side_by_side" = true ]; then
  # each job gets half the CPU threads unless the caller chose them (OMP_NUM_THREADS); stages 4-5
  # keep the caller's setting
  threads=$(( $(nproc) / 2 ))
  [ "$threads" -ge 1 ] || threads=1
  threads=${OMP_NUM_THREADS:-$threads}
  log "Stages 2 and 3 run side by side (--train_side_by_side $train_side_by_side," \
    "OMP_NUM_THREADS=$threads each); stage 2 prints to its log while stage 3 runs:" \
    "$tagger_exp/logs/stage2.log"
  stage2_out=$(mktemp)  # what stage 2 printed, of which the end is shown once both are done
  ( export OMP_NUM_THREADS=$threads
    run_local_stage 2 "tagger training" "$data_dir" "$tagger_exp" "$settings_2" > "$stage2_out" ) &
  tagger_pid=$!
  kill_tree() {  # kill_tree PID: the process and everything it started
    local child
    for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
  }
  # stage 3 failed or was interrupted: stop stage 2 too
  trap 'kill_tree "$tagger_pid"; rm -f "$stage2_out"' EXIT
  ( export OMP_NUM_THREADS=$threads
    run_local_stage 3 "separator training" "$data_dir" "$separator_exp" "$settings_3" )
  log "Stage 3 finished; waiting for stage 2 (log: $tagger_exp/logs/stage2.log)"
  # (a failed stage 2: the EXIT trap, still set, removes the output file)
  wait "$tagger_pid" || { log "Stopping after stage 3: stage 2 did not finish (its error is above)"; exit 1; }
  trap - EXIT
  if [ -s "$stage2_out" ]; then
    log "Stage 2 (ran side by side): the last lines it printed (all of it: $tagger_exp/logs/stage2.log)"
    tail -n 5 "$stage2_out"
  fi
  rm -f "$stage2_out"
else
  if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    run_local_stage 2 "tagger training" "$data_dir" "$tagger_exp" "$settings_2"
  fi
  if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    run_local_stage 3 "separator training" "$data_dir" "$separator_exp" "$settings_3"
  fi
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  # the models decoded, as they are now (a model retrained since makes the old decode stale)
  [ -n "$tagger_checkpoint" ] || settings_4+=" $(file_identity_if_present "$tagger_exp/checkpoint_best.pt")"
  [ -n "$separator_checkpoint" ] || settings_4+=" $(file_identity_if_present "$separator_exp/checkpoint_best.pt")"
  settings_5="$settings_4 $(config_fingerprint "$score_config") class_eq_mixtures=$class_eq_mixtures report_mixtures=$report_mixtures"
  run_local_stage 4 "inference" "$separator_exp" "$infer_exp" "$settings_4"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  run_local_stage 5 "scoring" "$infer_exp" "$score_exp" "$settings_5"
fi

log "Finished stages $stage to $stop_stage."
