#!/usr/bin/env bash
# Recipe kubig: KUBIG's DCASE 2026 Task 4 system, an end-to-end spatial semantic separator: a
# frozen BEATs encoder on the W channel, intensity-vector spatial features, and per output slot a
# masked waveform, a 19-way class and a direction of arrival, trained with one joint PIT loss.
# The first 2026-only recipe (0-3 targets, same-class duplicates, CAPI-SDRi); no tagger at
# inference. The stages are shared (./stages.sh --help); local/stage2.sh trains the encoder (or
# skips when the separator config names a BEATs release), local/stage3.sh freezes it.
# Options given on the command line come last and override them.
set -euo pipefail

previous=""
for arg in "$@"; do  # a 2026-only system: refuse another rule set before stage 1 builds its data
  if [ "$previous" = --year ] && [ "$arg" != 2026 ]; then
    echo "$0: kubig follows the DCASE 2026 rules (0-3 targets, duplicates, CAPI-SDRi); --year $arg is not supported" >&2
    exit 1
  fi
  previous=$arg
done

exec ./stages.sh \
  --year 2026 \
  --data_config conf/prep_data.yaml \
  --infer_config conf/infer.yaml \
  --score_config conf/score.yaml \
  "$@"
