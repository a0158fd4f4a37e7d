#!/usr/bin/env bash
# Stage 3 (redux): separator training, in the report's two phases when the config asks for them.
# A config whose model.init_checkpoint is the word "phase1" is phase 2: the first config of its
# base: chain without that setting is trained first (phase 1, into $separator_exp/phase1), then
# the config itself from phase 1's best checkpoint (into $separator_exp). A finished phase 1 there
# is reused (the trainer resumes it).
# Any other config is trained once, as the shared stage 3 does.
set -euo pipefail
. steps/common.sh
require_file "$separator_config"
phase1=$("$python" - "$separator_config" <<'PY'
import os
import sys
from s5lib.config import load_config_file, load_yaml


def starts_from_phase1(path):
    return (load_config_file(path).get("model") or {}).get("init_checkpoint") == "phase1"


path = first = sys.argv[1]
while starts_from_phase1(path):  # phase 1: the first config of the base: chain that does not
    base = load_yaml(path).get("base")
    if not base:
        sys.exit(f"{first}: model.init_checkpoint: phase1 needs a base: config without it (phase 1)")
    path = os.path.normpath(base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base))
if path != first:
    print(path)
PY
)
if [ -z "$phase1" ]; then
  run_training s5lib.bin.train_separator "$separator_config"
  exit 0
fi
phase1_dir=$separator_exp/phase1
echo "phase 1: $phase1 -> $phase1_dir"
mkdir -p "$phase1_dir/logs"
stage_dir=$phase1_dir run_training s5lib.bin.train_separator "$phase1"
best=$phase1_dir/checkpoint_best.pt
[ -f "$best" ] || { echo "stage 3: phase 1 wrote no $best" >&2; exit 1; }
echo "phase 2: $separator_config -> $separator_exp, starting from $best"
run_training s5lib.bin.train_separator "$separator_config" --model.init_checkpoint "$best"
