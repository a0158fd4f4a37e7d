"""A LASS separator inside the S5 pipeline: every label the tagger gives (or the oracle's) becomes
a caption, the caption queries the text-queried separator, and the estimates are written and
scored as every recipe's (``procedure: caption_queried`` of ``s5lib.bin.infer``).

:class:`CaptionQueriedSeparator` looks like a single-query S5 separator (``forward(mixture
(B, 4, N) at 32 kHz, one-hot (B, 18)) -> (B, 1, N)``): it takes channel 0 (W, the omnidirectional
one, as the S5 reference's channel), resamples it to 16 kHz, separates it with the caption of the
queried class (:func:`s5lib.data.captions.caption_for` with ``caption_set`` and ``seed``: one
fixed caption per class, from the held-out phrasings by default) and resamples the estimate back
to 32 kHz.
"""
import os

import torch
import torchaudio
import yaml

from s5lib import constants
from s5lib.data.captions import CAPTION_SETS, caption_for
from s5lib.data.lass import LASS_SAMPLE_RATE

CAPTION_QUERY_DEFAULTS = {"caption_set": "heldout", "seed": 0}


class CaptionQueriedSeparator(torch.nn.Module):
    kind = "caption_queried"

    def __init__(self, separator, encoder, caption_set="heldout", seed=0):
        super().__init__()
        if caption_set not in CAPTION_SETS:
            raise ValueError(f"caption_query.caption_set must be one of {CAPTION_SETS}, got "
                             f"{caption_set!r}")
        self.separator = separator
        self.encoder = encoder
        self.captions = [caption_for(label, int(seed), "s5", caption_set) for label in constants.CLASSES]
        self.register_buffer("conditions", encoder.embed(self.captions), persistent=False)

    def caption_of(self, label):
        return self.captions[constants.CLASS_INDEX[label]]

    def forward(self, mixture, query):
        if mixture.dim() != 3:
            raise ValueError(f"mixture must be (batch, channels, samples), got {tuple(mixture.shape)}")
        if query.shape != (mixture.shape[0], constants.N_CLASSES):
            raise ValueError(f"query must be (batch, {constants.N_CLASSES}) one-hot, got "
                             f"{tuple(query.shape)}")
        silent = query.abs().sum(1) == 0
        condition = self.conditions[query.argmax(1)]
        low = torchaudio.functional.resample(mixture[:, 0], constants.SAMPLE_RATE, LASS_SAMPLE_RATE)
        estimate = self.separator(low[:, None], condition)
        estimate = torchaudio.functional.resample(estimate, LASS_SAMPLE_RATE, constants.SAMPLE_RATE)
        length = mixture.shape[-1]
        if estimate.shape[-1] < length:
            estimate = torch.nn.functional.pad(estimate, (0, length - estimate.shape[-1]))
        estimate = estimate[..., :length] * (~silent)[:, None].to(estimate.dtype)
        return estimate[:, None]


def is_lass_experiment(exp_dir):
    """True for a train_lass experiment dir (its config's model.type is lass)."""
    path = os.path.join(exp_dir or "", "config.yaml")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    return (cfg.get("model") or {}).get("type") == "lass"


def load_caption_queried(exp_dir, options=None, trust=False):
    """The :class:`CaptionQueriedSeparator` of a train_lass experiment (its best checkpoint, its
    text encoder)."""
    from s5lib.models.lass import build_lass_separator, load_lass_weights, read_lass_experiment
    from s5lib.models.text_encoder import build_text_encoder, text_encoder_dim
    values = dict(CAPTION_QUERY_DEFAULTS)
    unknown = sorted(set(options or {}) - set(values))
    if unknown:
        raise ValueError(f"caption_query: unknown option(s) {unknown}; known: {sorted(values)}")
    values.update(options or {})
    model_cfg, encoder_cfg, checkpoint = read_lass_experiment(exp_dir)
    separator = build_lass_separator(model_cfg, text_encoder_dim(encoder_cfg))
    load_lass_weights(separator, checkpoint)
    separator.eval()
    encoder = build_text_encoder(encoder_cfg, trust=trust)
    return CaptionQueriedSeparator(separator, encoder, values["caption_set"], values["seed"]).eval()
