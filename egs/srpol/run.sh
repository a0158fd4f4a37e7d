#!/usr/bin/env bash
# Recipe srpol: SRPOL's DCASE 2024 Task 9 system, language-queried audio source separation (LASS):
# the LASS baseline's ResUNet30 at 16 kHz conditioned on a frozen text encoder's embedding of a
# free-text caption, trained with the L1 loss on two-source mixtures made on the fly, and scored
# as the Task 9 evaluator does (SDR, SDRi, SI-SDR). The report's systems are conf/systems/*.yaml.
# The stages are shared (./stages.sh --help): stage 1 also writes the LASS validation and test
# sets (conf/prep_data.yaml, lass: section), local/stage2.sh has no tagger to train, stage 3
# trains the separator, stage 4 separates the LASS test set and stage 5 writes RESULTS.md.
# Options given on the command line come last and override them.
set -euo pipefail

exec ./stages.sh \
  --data_config conf/prep_data.yaml \
  --infer_config conf/infer.yaml \
  "$@"
