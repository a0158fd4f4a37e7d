#!/usr/bin/env bash
# The template recipe: shared stages with the default configs in conf/.
# A real recipe (made by ./setup.sh ../<system>) sets its system choices here; every option
# given on the command line comes later and overrides them. See ./stages.sh --help.
set -euo pipefail

exec ./stages.sh \
  --data_config conf/prep_data.yaml \
  --score_config conf/score.yaml \
  "$@"
