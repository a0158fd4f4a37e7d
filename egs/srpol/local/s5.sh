# shellcheck shell=bash
# is_s5: true when the stage-4 config runs the S5 pipeline with captions (procedure:
# caption_queried) rather than the LASS evaluation
is_s5() {
  [ -f "$infer_config" ] && grep -Eq '^procedure:[[:space:]]*caption_queried' "$infer_config"
}
