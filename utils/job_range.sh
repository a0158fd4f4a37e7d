# shellcheck shell=bash
# Shared by the job runners (run_local.sh, run_slurm.sh): the optional JOB=START[:END] argument.
#
#   . "$(dirname "$0")/job_range.sh"
#   if [ $# -gt 0 ] && parse_job_range "$1"; then shift; fi
#
# parse_job_range sets job_var (empty without a range), job_start and job_end, returns 0 when its
# argument was a range and 1 when it was not, and exits with a message (prefixed with $me) for a
# malformed or empty range.
parse_job_range() {
  job_var=""
  job_start=1
  job_end=1
  if [[ "$1" =~ ^([A-Z][A-Z0-9_]*)=([0-9]+)(:([0-9]+))?$ ]]; then
    job_var=${BASH_REMATCH[1]}
    job_start=${BASH_REMATCH[2]}
    job_end=${BASH_REMATCH[4]:-$job_start}
    if [ "$job_end" -lt "$job_start" ]; then
      echo "$me: empty job range $job_var=$job_start:$job_end" >&2
      exit 1
    fi
    return 0
  fi
  if [[ "$1" =~ ^[A-Z][A-Z0-9_]*=.*$ ]]; then
    echo "$me: bad job range '$1' (expected e.g. JOB=1:4)" >&2
    exit 1
  fi
  return 1
}
