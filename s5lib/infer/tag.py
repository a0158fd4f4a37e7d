"""Tagging a batch of mixtures with any of the M2D taggers: labels and a confidence per label.

* ``m2d_2025`` (multi-label): sigmoid probabilities, decoded with p >= threshold, at least
  ``min_labels`` and at most ``max_labels`` (SPEC §7.1); the confidence is the class probability.
* ``m2d_2026`` / ``m2d_2026_4c`` (3 slots x 19): arg-max per slot, silence dropped, duplicates kept;
  the confidence is the slot's softmax probability.
"""
import torch

from s5lib import constants
from s5lib.models.tagger import decode_multilabel, decode_slots


@torch.no_grad()
def tag_batch(tagger, mixture, threshold=0.5, min_labels=1, max_labels=constants.MAX_TARGETS):
    """mixture (B, 4, N) -> per mixture a list of (label, confidence), at most 3."""
    kind = getattr(tagger, "kind", "m2d_2025")
    logits = tagger(mixture)
    if kind == "m2d_2025":
        probs = torch.sigmoid(logits.float())
        keep = decode_multilabel(probs, threshold, min_labels, max_labels)
        out = []
        for row_p, row_k in zip(probs.tolist(), keep.tolist()):
            chosen = [(constants.CLASSES[c], row_p[c]) for c in range(constants.N_CLASSES) if row_k[c]]
            out.append(sorted(chosen, key=lambda lp: -lp[1]))
        return out
    return decode_slots(logits.float())
