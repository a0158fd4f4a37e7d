#!/usr/bin/env bash
# Run a command (or an array of commands) on this machine, with its output in a log file.
# The local counterpart of utils/run_slurm.sh (same interface, like Kaldi's run.pl).
#
# Usage:
#   utils/run_local.sh [options] [JOB=START:END] LOGFILE COMMAND [ARGS...]
#
#   JOB=1:4 runs four jobs; every "JOB" in LOGFILE and in the command becomes the job number
#   (plain text replacement, as in Kaldi; any upper-case name can stand for JOB, e.g. SPLIT=1:4).
#   JOB=3 runs job 3 only. Without a job range the command runs once.
#
#   Arguments without white space are pasted into the command line as they are, so shell
#   syntax works when quoted for the calling shell ('|', '>'); arguments with white space are
#   quoted and stay one argument. A single COMMAND argument is taken as a whole command line
#   (run_local.sh log 'a | b > c'). The command runs with 'bash -o pipefail -c'.
#
# Options:
#   --max_jobs_run N   run at most N jobs at the same time (default: all at once)
#   --gpu, --mem, --num_threads, --time, --config VALUE
#                      accepted for compatibility with utils/run_slurm.sh and ignored here.
#
# Each log file gets the command line, start time, output, end time and exit code; it is
# overwritten, never appended to. The exit status is 0 only if every job succeeded; otherwise
# the failed jobs' logs are named on stderr. Needs bash >= 4.3 (wait -n).
set -u

me=$(basename "$0")
max_jobs_run=0

while [ $# -gt 0 ]; do
  case "$1" in
    --max_jobs_run|--max-jobs-run)
      [ $# -ge 2 ] || { echo "$me: option $1 needs a value" >&2; exit 1; }
      max_jobs_run=$2; shift 2 ;;
    --gpu|--mem|--num_threads|--num-threads|--time|--config)
      [ $# -ge 2 ] || { echo "$me: option $1 needs a value" >&2; exit 1; }
      shift 2 ;;
    --*)
      echo "$me: unknown option $1" >&2; exit 1 ;;
    *) break ;;
  esac
done
if ! [[ "$max_jobs_run" =~ ^[0-9]+$ ]]; then
  echo "$me: --max_jobs_run must be a non-negative integer, got '$max_jobs_run'" >&2
  exit 1
fi

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

# Paste the arguments into one command line (see the header for the quoting rule).
command_template=""
if [ $# -eq 1 ]; then
  command_template=$1
else
  for arg in "$@"; do
    if [[ -n "$arg" && "$arg" =~ ^[^[:space:]]+$ ]]; then
      command_template+="$arg "
    else
      command_template+="$(printf '%q' "$arg") "
    fi
  done
  command_template=${command_template% }
fi

substitute() {  # substitute TEXT JOB_NUMBER
  if [ -n "$job_var" ]; then
    printf '%s' "${1//"$job_var"/$2}"
  else
    printf '%s' "$1"
  fi
}

run_one() {  # run_one JOB_NUMBER: runs the job, writes its log, returns its exit code
  local log_file command_line start_s end_s rc
  log_file=$(substitute "$log_template" "$1")
  command_line=$(substitute "$command_template" "$1")
  mkdir -p "$(dirname "$log_file")" || return 1
  start_s=$(date +%s)
  {
    echo "# $command_line"
    echo "# Started at $(date) on $(hostname)"
  } > "$log_file" || return 1
  bash -o pipefail -c "$command_line" < /dev/null >> "$log_file" 2>&1
  rc=$?
  end_s=$(date +%s)
  {
    echo "# Accounting: time=$((end_s - start_s)) seconds"
    echo "# Ended (code $rc) at $(date), elapsed time $((end_s - start_s)) seconds"
  } >> "$log_file"
  return $rc
}

status_dir=$(mktemp -d "${TMPDIR:-/tmp}/run_local.XXXXXX")
trap 'rm -rf "$status_dir"' EXIT

running=0
for ((job = job_start; job <= job_end; job++)); do
  if [ "$max_jobs_run" -gt 0 ] && [ "$running" -ge "$max_jobs_run" ]; then
    wait -n
    running=$((running - 1))
  fi
  ( run_one "$job"; echo $? > "$status_dir/$job" ) &
  running=$((running + 1))
done
wait

failed=()
for ((job = job_start; job <= job_end; job++)); do
  rc=$(cat "$status_dir/$job" 2>/dev/null || echo missing)
  [ "$rc" = 0 ] || failed+=("$job")
done

n_jobs=$((job_end - job_start + 1))
if [ ${#failed[@]} -gt 0 ]; then
  if [ ${#failed[@]} -eq 1 ]; then
    echo "$me: job failed, log is in $(substitute "$log_template" "${failed[0]}")" >&2
  else
    echo "$me: ${#failed[@]} / $n_jobs jobs failed, logs are in" \
      "$(substitute "$log_template" "${failed[0]}") ... (jobs ${failed[*]})" >&2
  fi
  exit 1
fi
exit 0
