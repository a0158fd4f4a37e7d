# shellcheck shell=bash
# encoder_checkpoint CONFIG: the model.encoder_checkpoint of a separator config (its base: chain
# resolved), empty when the encoder comes from stage 2. Sourced by local/stage2.sh and stage3.sh.
encoder_checkpoint() {
  "$python" - "$1" <<'PY'
import sys
from s5lib.config import load_config_file
print((load_config_file(sys.argv[1]).get("model") or {}).get("encoder_checkpoint") or "")
PY
}
require_2026() {
  [ "$year" = 2026 ] || { echo "$(basename "$0"): kubig follows the DCASE 2026 rules (0-3 targets, duplicates, CAPI-SDRi); run it with --year 2026 (the default of run.sh)" >&2; exit 1; }
}
