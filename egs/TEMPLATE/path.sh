# shellcheck shell=bash
# Environment of every recipe: source it from the recipe directory ('. ./path.sh').
# Makes s5lib importable from this checkout without installing it, and puts utils/ on PATH.
S5_ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
export S5_ROOT
export PYTHONPATH="$S5_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$S5_ROOT/utils:$PATH"
export LC_ALL=C
export PYTHONUNBUFFERED=1
