#!/usr/bin/env bash
# Stage 3 (shared): separator training, python -m s5lib.bin.train_separator with $separator_config.
set -euo pipefail
. steps/common.sh
run_training s5lib.bin.train_separator "$separator_config"
