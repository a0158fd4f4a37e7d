#!/usr/bin/env bash
# Stage 3 (srpol): the text-queried separator (python -m s5lib.bin.train_lass).
set -euo pipefail
. steps/common.sh
require_file "$separator_config"
run_training s5lib.bin.train_lass "$separator_config"
