# shellcheck shell=bash
# Logging helpers for recipe scripts. Source it: '. utils/log.sh'.
#
#   log "Stage 1: data preparation: db -> data"
#     prints "2026-01-31T12:00:00 (run.sh:42:main) Stage 1: ..." to stderr.
#   die "message"
#     logs "ERROR: message" and exits 1.

log() {
  local where="${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}:${FUNCNAME[1]:-main}"
  printf '%s (%s) %s\n' "$(date '+%Y-%m-%dT%H:%M:%S')" "$where" "$*" >&2
}

die() {
  local where="${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}:${FUNCNAME[1]:-main}"
  printf '%s (%s) ERROR: %s\n' "$(date '+%Y-%m-%dT%H:%M:%S')" "$where" "$*" >&2
  exit 1
}
