# shellcheck shell=bash
# Sourced by stages.sh: stage 2 trains the baseline tagger only for the S5 pipeline
# (--infer_config conf/infer_s5.yaml) and checks the text encoder otherwise, so its marker records
# which of the two it did.
. local/s5.sh
if is_s5; then settings_2+=" srpol_stage2=tagger"; else settings_2+=" srpol_stage2=text_encoder"; fi
