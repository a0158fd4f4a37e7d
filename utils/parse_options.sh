# shellcheck shell=bash
# Turn command-line options into shell variables, with Kaldi's semantics.
#
# Usage (in a script, after defining its options as plain shell variables):
#
#     stage=1          # an option: --stage N
#     use_gpu=false    # a boolean option: accepts only true or false
#     help_message="Usage: $0 [options] <in> <out>"
#     . utils/parse_options.sh
#     # "$@" now holds only the positional arguments
#
# Rules:
#   * Any shell variable that is defined when this file is sourced is an option:
#     "--name value" (or "--name=value") assigns "value" to it. "-" and "_" are the same
#     in option names, so --stop-stage and --stop_stage both set $stop_stage.
#   * An option that names no defined variable is an error (the script exits 1).
#   * A variable whose current value is "true" or "false" only accepts "true" or "false".
#   * "--config FILE" sources FILE (a shell file of name=value lines). Unlike Kaldi, it may
#     appear anywhere among the options: every --config file is read first, in the order given,
#     and the other options are applied afterwards, so the command line always wins.
#   * "--help" or "-h" prints $help_message (or a short usage line) and exits 0.
#   * Option parsing stops at the first argument that does not start with "--", or at "--"
#     (which is removed). What is left stays in "$@".
#
# This file must be sourced without arguments ('. utils/parse_options.sh'), so that it sees and
# changes the caller's positional parameters.

__po_options=()   # name value name value ... (after --config files are extracted)
__po_configs=()
__po_rest=()

while [ $# -gt 0 ]; do
  __po_arg=$1
  case "$__po_arg" in
    --)
      shift
      break
      ;;
    --help|-h)
      if [ -n "${help_message:-}" ]; then
        printf '%s\n' "$help_message"
      else
        echo "Usage: $0 [--option value ...] [arguments]"
        echo "(every variable the script defines before parse_options.sh is an option)"
      fi
      exit 0
      ;;
    --*=*)
      __po_name=${__po_arg%%=*}
      __po_value=${__po_arg#*=}
      shift
      ;;
    --*)
      __po_name=$__po_arg
      if [ $# -lt 2 ]; then
        echo "$0: option $__po_arg needs a value" >&2
        exit 1
      fi
      __po_value=$2
      shift 2
      ;;
    *)
      break
      ;;
  esac
  __po_name=${__po_name#--}
  __po_name=${__po_name//-/_}
  if [ "$__po_name" = config ]; then
    __po_configs+=("$__po_value")
  else
    __po_options+=("$__po_name" "$__po_value")
  fi
done
__po_rest=("$@")

for __po_file in ${__po_configs[@]+"${__po_configs[@]}"}; do
  if [ ! -f "$__po_file" ]; then
    echo "$0: config file given by --config does not exist: $__po_file" >&2
    exit 1
  fi
  # shellcheck disable=SC1090
  . "$__po_file" || { echo "$0: error while reading config file $__po_file" >&2; exit 1; }
done

__po_i=0
while [ $__po_i -lt ${#__po_options[@]} ]; do
  __po_name=${__po_options[$__po_i]}
  __po_value=${__po_options[$((__po_i + 1))]}
  __po_i=$((__po_i + 2))
  if ! [[ "$__po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "$0: invalid option name --$__po_name" >&2
    exit 1
  fi
  if [ -z "${!__po_name+defined}" ]; then
    echo "$0: unknown option --$__po_name (run '$0 --help' for the options)" >&2
    exit 1
  fi
  __po_old=${!__po_name}
  if [ "$__po_old" = true ] || [ "$__po_old" = false ]; then
    if [ "$__po_value" != true ] && [ "$__po_value" != false ]; then
      echo "$0: option --$__po_name is a boolean: expected true or false, got '$__po_value'" >&2
      exit 1
    fi
  fi
  printf -v "$__po_name" '%s' "$__po_value"
done

set -- ${__po_rest[@]+"${__po_rest[@]}"}
unset __po_arg __po_name __po_value __po_options __po_configs __po_rest __po_file __po_i __po_old
true
