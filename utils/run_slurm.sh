#!/usr/bin/env bash
# Run a command (or an array of commands) as SLURM jobs and wait for them; the SLURM counterpart
# of utils/run_local.sh, with the same interface (like Kaldi's slurm.pl).
#
# Usage:
#   utils/run_slurm.sh [options] [JOB=START:END] LOGFILE COMMAND [ARGS...]
#
#   A job range becomes one SLURM array job; "JOB" in LOGFILE and in the command becomes the
#   array task id. Each task runs the command through utils/run_local.sh on its node, so the
#   command quoting and the log file contents are those of run_local.sh.
#
# Options (the job's resources; what each one becomes is set by the config file):
#   --config FILE      backend config in Kaldi slurm.pl format (default: ./conf/slurm.conf if the
#                      recipe has one, else conf/slurm.conf at the repository root)
#   --gpu N  --mem 8G  --num_threads N  --time 4:00:00  ... any option named in the config
#   --max_jobs_run N   at most N tasks of the array at once (sbatch --array=...%N)
#
# The job is submitted with "sbatch --wait", so this script returns when all tasks have ended.
# Its exit status is 0 only if every task's log records exit code 0; a task killed by SLURM
# (time or memory limit) leaves no exit code and counts as failed. The generated batch script
# and SLURM's own output are kept in LOGDIR/q/. Ctrl-C cancels the submitted job.
set -u

me=$(basename "$0")
utils_dir=$(cd "$(dirname "$0")" && pwd)

config=""
max_jobs_run=0
user_names=()
user_values=()
while [ $# -gt 0 ]; do
  case "$1" in
    --*)
      [ $# -ge 2 ] || { echo "$me: option $1 needs a value" >&2; exit 1; }
      name=${1#--}
      name=${name//-/_}
      case "$name" in
        config) config=$2 ;;
        max_jobs_run) max_jobs_run=$2 ;;
        *) user_names+=("$name"); user_values+=("$2") ;;
      esac
      shift 2 ;;
    *) break ;;
  esac
done

if [ -z "$config" ]; then
  if [ -f conf/slurm.conf ]; then
    config=conf/slurm.conf
  else
    config=$utils_dir/../conf/slurm.conf
  fi
fi
[ -f "$config" ] || { echo "$me: SLURM config file not found: $config" >&2; exit 1; }
if ! [[ "$max_jobs_run" =~ ^[0-9]+$ ]]; then
  echo "$me: --max_jobs_run must be a non-negative integer, got '$max_jobs_run'" >&2
  exit 1
fi

# ---- read the config ----
submit_command=()
declare -A exact_flags=() any_value_flags=() default_value=() known=()
line_number=0
while IFS= read -r line || [ -n "$line" ]; do
  line_number=$((line_number + 1))
  line=${line%%#*}
  read -r -a words <<< "$line"
  [ ${#words[@]} -eq 0 ] && continue
  case "${words[0]}" in
    command)
      submit_command=("${words[@]:1}") ;;
    option|default)
      if [ ${#words[@]} -lt 2 ] || ! [[ "${words[1]}" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
        echo "$me: $config:$line_number: expected '${words[0]} NAME=VALUE ...', got: $line" >&2
        exit 1
      fi
      name=${BASH_REMATCH[1]}
      value=${BASH_REMATCH[2]}
      known[$name]=1
      if [ "${words[0]}" = default ]; then
        default_value[$name]=$value
      elif [ "$value" = "*" ]; then
        any_value_flags[$name]="${words[*]:2}"
      else
        exact_flags[$name=$value]="${words[*]:2}"
      fi ;;
    *)
      echo "$me: $config:$line_number: unknown line type '${words[0]}'" >&2
      exit 1 ;;
  esac
done < "$config"
[ ${#submit_command[@]} -gt 0 ] || { echo "$me: $config has no 'command' line" >&2; exit 1; }

# ---- turn the job's options into submit flags ----
declare -A chosen=()
for name in "${!default_value[@]}"; do
  chosen[$name]=${default_value[$name]}
done
for i in "${!user_names[@]}"; do
  name=${user_names[$i]}
  if [ -z "${known[$name]+x}" ]; then
    echo "$me: option --$name is not defined in $config" >&2
    exit 1
  fi
  chosen[$name]=${user_values[$i]}
done
submit_flags=()
for name in "${!chosen[@]}"; do
  value=${chosen[$name]}
  if [ -n "${exact_flags[$name=$value]+x}" ]; then
    flags=${exact_flags[$name=$value]}
  elif [ -n "${any_value_flags[$name]+x}" ]; then
    flags=${any_value_flags[$name]//\$0/$value}
  else
    echo "$me: --$name $value is not allowed by $config" >&2
    exit 1
  fi
  read -r -a words <<< "$flags"
  submit_flags+=(${words[@]+"${words[@]}"})
done

# ---- job range, log file, command ----
. "$(dirname "$0")/job_range.sh"
if [ $# -gt 0 ] && parse_job_range "$1"; then
  shift
fi
if [ $# -lt 2 ]; then
  echo "Usage: $me [options] [JOB=START:END] LOGFILE COMMAND [ARGS...]" >&2
  exit 1
fi
log_template=$1
shift

log_of() {  # log_of JOB_NUMBER
  if [ -n "$job_var" ]; then printf '%s' "${log_template//"$job_var"/$1}"; else printf '%s' "$log_template"; fi
}

log_dir=$(dirname "$log_template")
queue_dir=$log_dir/q
base=$(basename "$log_template")
if [ -n "$job_var" ]; then
  base=${base//".$job_var"/}
  base=${base//"$job_var"/}
fi
base=${base%.log}
mkdir -p "$queue_dir" || exit 1
batch_script=$queue_dir/$base.sh
submit_log=$queue_dir/$base.submit

# The batch script runs the job through run_local.sh in this directory with this environment.
{
  echo "#!/usr/bin/env bash"
  echo "# Written by $me at $(date); submitted with $(printf '%q ' "${submit_command[@]}")"
  printf 'cd %q || exit 1\n' "$(pwd)"
  echo '[ -f ./path.sh ] && . ./path.sh'
  if [ -n "$job_var" ]; then
    printf 'job_number=${SLURM_ARRAY_TASK_ID:-%d}\n' "$job_start"
    printf 'exec %q %s %q' "$utils_dir/run_local.sh" "$job_var=\$job_number" "$log_template"
  else
    printf 'exec %q %q' "$utils_dir/run_local.sh" "$log_template"
  fi
  printf ' %q' "$@"
  echo
} > "$batch_script"
chmod +x "$batch_script"

for ((job = job_start; job <= job_end; job++)); do  # stale logs must not look like results
  rm -f "$(log_of "$job")"
done

array_flags=()
if [ -n "$job_var" ]; then
  array_spec="$job_start-$job_end"
  [ "$max_jobs_run" -gt 0 ] && array_spec+="%$max_jobs_run"
  array_flags=("--array=$array_spec" "--output=$queue_dir/$base.%a.out")
else
  array_flags=("--output=$queue_dir/$base.out")
fi

submitted_id=""
cancel_job() {
  submitted_id=$(grep -o 'Submitted batch job [0-9]*' "$submit_log" 2>/dev/null | grep -o '[0-9]*$')
  if [ -n "$submitted_id" ]; then
    echo "$me: interrupted, cancelling SLURM job $submitted_id" >&2
    scancel "$submitted_id"
  fi
  exit 130
}
trap cancel_job INT TERM

"${submit_command[@]}" ${submit_flags[@]+"${submit_flags[@]}"} "--job-name=$base" \
  "${array_flags[@]}" --wait "$batch_script" > "$submit_log" 2>&1 &
wait $!
submit_rc=$?
trap - INT TERM
submitted_id=$(grep -o 'Submitted batch job [0-9]*' "$submit_log" | grep -o '[0-9]*$')
if [ -z "$submitted_id" ]; then
  echo "$me: submission failed (exit code $submit_rc): $(printf '%q ' "${submit_command[@]}")" >&2
  cat "$submit_log" >&2
  exit 1
fi

failed=()
for ((job = job_start; job <= job_end; job++)); do
  log_file=$(log_of "$job")
  if [ ! -f "$log_file" ]; then
    echo "$me: job $job of SLURM job $submitted_id wrote no log $log_file" \
      "(never started or killed; see $queue_dir/ and 'sacct -j $submitted_id')" >&2
    failed+=("$job")
  elif ! tail -n 1 "$log_file" | grep -q '^# Ended (code 0)'; then
    if ! tail -n 1 "$log_file" | grep -q '^# Ended (code'; then
      echo "$me: $log_file has no exit code: job $job was killed by SLURM" \
        "(time or memory limit?); see $queue_dir/ and 'sacct -j $submitted_id'" >&2
    fi
    failed+=("$job")
  fi
done

n_jobs=$((job_end - job_start + 1))
if [ ${#failed[@]} -gt 0 ]; then
  if [ ${#failed[@]} -eq 1 ]; then
    echo "$me: job failed, log is in $(log_of "${failed[0]}")" >&2
  else
    echo "$me: ${#failed[@]} / $n_jobs jobs failed, logs are in $(log_of "${failed[0]}")" \
      "... (jobs ${failed[*]})" >&2
  fi
  exit 1
fi
exit 0
