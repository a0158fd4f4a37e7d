#!/usr/bin/env bash
# The shared stage script of every recipe. A recipe's run.sh calls it with the recipe's choices:
#     ./stages.sh --separator_config conf/separator.yaml ... "$@"
# Run it from the recipe directory (the one holding path.sh, cmd.sh, conf/ and local/).
#
# Stages (each runs when stage <= N <= stop_stage):
#   1 data      build the embedded mini soundbank (or verify --db_root), write the fixed
#               validation and test sets                        -> $data_dir
#   2 tagger    tagger training                                 -> $exp_dir/tagger_<config|tag>
#   3 separator separator training                              -> $exp_dir/separator_<config|tag>
#   4 infer     (iterative) inference on the test set           -> $exp_dir/infer_<config|tag>
#   5 score     scoring, RESULTS.md                             -> $exp_dir/score_<config|tag>
# Stages 2-5 run the recipe's local/stageN.sh when it exists, else the shared steps/stageN.sh
# (both see the options below and stage_dir, tagger_exp, separator_exp, infer_exp, score_exp,
# train_cmd, decode_cmd, cuda_cmd as environment variables); with neither the stage stops with
# exit status 2.
#
# Every stage logs to <stage dir>/logs/stageN.log (overwritten), writes <stage dir>/run.sh that
# replays it, and marks finished work with <stage dir>/.done holding the settings it ran with.
# A stage whose .done matches the current settings is skipped unless --force true.
set -euo pipefail

stage=1                # first stage to run
stop_stage=5           # last stage to run
year=2025              # DCASE rule set: 2025 or 2026
db_root=""             # DCASE dev_set to use; empty: build the embedded mini soundbank
data_dir=data          # stage 1 output
exp_dir=exp            # experiment directories go here
ngpu=0                 # GPUs per node for training / inference (0: CPU)
num_nodes=1            # nodes for training
nj=2                   # parallel jobs / processes for data work
seed=0                 # random seed of data generation and training
tag=""                 # name of the stage 2-5 experiment dirs instead of the config names
force=false            # re-run stages even when their .done marker matches
cmd_backend=${cmd_backend:-local}  # job backend: local or slurm (see cmd.sh)
data_config=conf/prep_data.yaml
tagger_config=conf/tagger.yaml
separator_config=conf/separator.yaml
infer_config=conf/infer.yaml
score_config=conf/score.yaml
python=python
tagger_checkpoint=""   # stage 4: a tagger model file (e.g. the released m2dat.ckpt) instead of stage 2's
separator_checkpoint=""  # stage 4: a separator model file (e.g. resunetk.ckpt) instead of stage 3's
tagger_checkpoint_config=""     # YAML with a model: section for tagger_checkpoint (default: read from the file)
separator_checkpoint_config=""  # same for separator_checkpoint
trust_checkpoint=false # allow a full unpickle of checkpoint files that weights-only loading refuses
test_dir=""            # stages 4-5: a folder of soundscapes other than the data dir's test set (e.g. eval)

help_message="Usage: ./run.sh [options]   (the recipe's run.sh passes them on to stages.sh)
Runs the stages of this recipe (see the top of stages.sh for what each one does).
Options (default):
  --stage N              first stage to run ($stage)
  --stop_stage N         last stage to run ($stop_stage)
  --year Y               DCASE rule set, 2025 or 2026 ($year)
  --db_root DIR          DCASE dev_set to verify and use; empty builds the mini soundbank ('$db_root')
  --data_dir DIR         data directory ($data_dir)
  --exp_dir DIR          experiment directory ($exp_dir)
  --ngpu N               GPUs per node, 0 for CPU ($ngpu)
  --num_nodes N          nodes for training ($num_nodes)
  --nj N                 parallel jobs for data work ($nj)
  --seed N               random seed ($seed)
  --tag NAME             experiment dir suffix instead of the config name ('$tag')
  --force true|false     re-run finished stages ($force)
  --cmd_backend NAME     job backend, local or slurm ($cmd_backend)
  --data_config FILE     stage 1 config ($data_config)
  --tagger_config FILE   stage 2 config ($tagger_config)
  --separator_config FILE  stage 3 config ($separator_config)
  --infer_config FILE    stage 4 config ($infer_config)
  --score_config FILE    stage 5 config ($score_config)
  --python CMD           python interpreter of the Python steps ($python)
  --tagger_checkpoint FILE     stage 4: tagger model file instead of stage 2's ('$tagger_checkpoint')
  --separator_checkpoint FILE  stage 4: separator model file instead of stage 3's ('$separator_checkpoint')
  --tagger_checkpoint_config FILE, --separator_checkpoint_config FILE
                         YAML (model: section) describing those files; default: read from the file
  --trust_checkpoint true|false  allow a full unpickle of files weights-only loading refuses ($trust_checkpoint)
  --test_dir DIR         stages 4-5: soundscapes to process instead of the data dir's test set;
                         without oracle_target/ (an evaluation set) scoring is skipped ('$test_dir')
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
for name in stage stop_stage ngpu num_nodes nj seed; do
  [[ "${!name}" =~ ^[0-9]+$ ]] || die "--$name must be a non-negative integer, got '${!name}'"
done
[ "$year" = 2025 ] || [ "$year" = 2026 ] || die "--year must be 2025 or 2026, got '$year'"

recipe_dir=$(pwd)
config_name() {  # config_name FILE: the file name without directory and .yaml/.yml
  local name
  name=$(basename "$1")
  name=${name%.yaml}
  printf '%s' "${name%.yml}"
}
config_fingerprint() {  # config_fingerprint FILE...: "file=checksum" for each existing file
  local file
  for file in "$@"; do
    if [ -f "$file" ]; then
      printf '%s=%s ' "$file" "$(cksum < "$file" | cut -d' ' -f1)"
    else
      [ -z "$file" ] || printf '%s=missing ' "$file"
    fi
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

prep_exp=$exp_dir/prep_$(basename "$data_dir")  # exp/prep_data for the default data dir
tagger_exp=$exp_dir/tagger_${tag:-$(config_name "$tagger_config")}
separator_exp=$exp_dir/separator_${tag:-$(config_name "$separator_config")}
infer_exp=$exp_dir/infer_${tag:-$(config_name "$infer_config")}
score_exp=$exp_dir/score_${tag:-$(config_name "$score_config")}

# Settings each stage's results depend on; a .done marker holding other settings is stale.
settings_1="year=$year db_root=$db_root data_dir=$data_dir seed=$seed $(config_fingerprint "$data_config")"
settings_2="$settings_1 $(config_fingerprint "$tagger_config")"
settings_3="$settings_2 $(config_fingerprint "$separator_config")"
settings_4="$settings_3 $(config_fingerprint "$infer_config") test_dir=$test_dir trust_checkpoint=$trust_checkpoint"
settings_4+=" $(file_identity "$tagger_checkpoint" "$separator_checkpoint") $(config_fingerprint \
  "$tagger_checkpoint_config" "$separator_checkpoint_config")"
settings_5="$settings_4 $(config_fingerprint "$score_config")"

is_done() {  # is_done STAGE_DIR SETTINGS: true when the stage finished with these settings
  [ "$force" = false ] && [ -f "$1/.done" ] && [ "$(cat "$1/.done")" = "$2" ]
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
  for name in year db_root data_dir exp_dir ngpu num_nodes nj seed tag cmd_backend \
      data_config tagger_config separator_config infer_config score_config \
      tagger_checkpoint separator_checkpoint tagger_checkpoint_config separator_checkpoint_config \
      trust_checkpoint test_dir; do
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
  if is_done "$dir" "$settings"; then
    log "Stage $n: already done with these settings ($dir/.done); skipping (--force true re-runs it)"
    return 0
  fi
  mkdir -p "$dir/logs"
  rm -f "$dir/.done"
  local options=()
  mapfile -t options < <(resolved_options)
  write_replay "$dir" ./stages.sh --stage "$n" --stop_stage "$n" --force true "${options[@]}"
  if ! (
    export stage_dir=$dir
    export year db_root data_dir exp_dir ngpu num_nodes nj seed tag force python \
      data_config tagger_config separator_config infer_config score_config \
      tagger_checkpoint separator_checkpoint tagger_checkpoint_config separator_checkpoint_config \
      trust_checkpoint test_dir prep_exp tagger_exp separator_exp infer_exp score_exp train_cmd decode_cmd cuda_cmd
    bash "$script"
  ) 2>&1 | tee "$dir/logs/stage$n.log"; then
    die "Stage $n failed; see $dir/logs/stage$n.log"
  fi
  printf '%s\n' "$settings" > "$dir/.done"
  log "Stage $n: done (log: $dir/logs/stage$n.log)"
}

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: data preparation: ${db_root:-embedded mini soundbank} -> $data_dir"
  if is_done "$prep_exp" "$settings_1" && [ -f "$data_dir/dataset.json" ]; then
    log "Stage 1: already done with these settings ($prep_exp/.done); skipping (--force true re-runs it)"
  else
    mkdir -p "$prep_exp/logs"
    rm -f "$prep_exp/.done"
    command=("$python" -m s5lib.bin.prep_data)
    if [ -n "$data_config" ]; then
      [ -f "$data_config" ] || die "--data_config file not found: $data_config"
      command+=(--config "$data_config")
    fi
    command+=(--year "$year" --db_root "$db_root" --out_dir "$data_dir" --seed "$seed" --nj "$nj")
    write_replay "$prep_exp" "${command[@]}"
    stage_log=$prep_exp/logs/stage1.log
    if ! $train_cmd --num_threads "$nj" "$stage_log" "$(printf '%q ' "${command[@]}")"; then
      tail -n 20 "$stage_log" >&2 || true
      die "Stage 1 failed; see $stage_log"
    fi
    printf '%s\n' "$settings_1" > "$prep_exp/.done"
    log "Stage 1: done (log: $stage_log)"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  run_local_stage 2 "tagger training" "$data_dir" "$tagger_exp" "$settings_2"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  run_local_stage 3 "separator training" "$data_dir" "$separator_exp" "$settings_3"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  run_local_stage 4 "inference" "$separator_exp" "$infer_exp" "$settings_4"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  run_local_stage 5 "scoring" "$infer_exp" "$score_exp" "$settings_5"
fi

log "Finished stages $stage to $stop_stage."
