#!/usr/bin/env bash
# Stage 2 (srpol): the LASS queries are captions, embedded by a frozen text encoder that ships with
# its weights (s5lib/models/text_encoder.py): this checks that it loads offline. For the S5
# pipeline (--infer_config conf/infer_s5.yaml) the shared step trains the baseline tagger whose
# labels become the captions.
set -euo pipefail
. ./path.sh
. local/s5.sh
if is_s5; then
  exec bash steps/stage2.sh
fi
HF_HUB_OFFLINE=1 "$python" - "$separator_config" <<'PY'
import sys
import yaml
from s5lib.models.text_encoder import build_text_encoder
with open(sys.argv[1]) as f:
    section = (yaml.safe_load(f) or {}).get("text_encoder") or {}
if section.get("type", "minilm") != "minilm":
    print(f"stage 2: text encoder {section.get('type')}: loaded in stage 3")
    sys.exit(0)
encoder = build_text_encoder(section)
vector = encoder.embed(["a dog barking"])
print(f"stage 2: no tagger in this recipe; text encoder minilm loads offline from "
      f"{encoder.model_dir} (weights' sha256 checked), {encoder.dim}-d, |v| = {float(vector.norm()):.3f}")
PY
