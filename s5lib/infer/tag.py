"""Tagging a batch of mixtures with any of the M2D taggers: labels and a confidence per label.

Decoding options (the ``decode:`` section of the inference and tagger configs):

* ``m2d_2025`` (multi-label): sigmoid probabilities, decoded with p >= ``threshold``, at least
  ``min_labels`` and at most ``max_labels`` (SPEC §7.1); the confidence is the class probability.
* ``beats`` (KUBIG's stage-2 BEATs tagger): as ``m2d_2025``.
* ``sed`` (CP-JKU's SED tagger): decoded as ``m2d_2025`` from its clip scores (the attention-pooled
  frame probabilities, ``weak_probs``).
* ``m2d_2026`` / ``m2d_2026_4c`` (3 slots x 19): arg-max per slot, silence dropped, duplicates kept;
  the confidence is the slot's softmax probability. ``min_confidence`` (default 0: the official
  arg-max decoding) turns a slot whose class probability is below it into silence.

An option that does not act on the tagger at hand is an error when it is set to anything but
its default (:func:`check_decode`), so no setting is silently ignored.
"""
import torch

from s5lib import constants
from s5lib.models.tagger import decode_multilabel, decode_slots

DECODE_DEFAULTS = {"threshold": 0.5, "min_labels": 1, "max_labels": constants.MAX_TARGETS,
                   "min_confidence": 0.0}
MULTILABEL_OPTIONS = ("threshold", "min_labels", "max_labels")
SLOT_OPTIONS = ("min_confidence",)


MULTILABEL_KINDS = ("m2d_2025", "sed", "beats")


def is_slot_tagger(tagger):
    return getattr(tagger, "kind", "m2d_2025") not in MULTILABEL_KINDS


def check_decode(kind, decode, defaults=DECODE_DEFAULTS):
    """The decoding options for a tagger of type ``kind``, all of ``defaults`` filled in.

    Raises ValueError naming an unknown option, or an option that the tagger kind does not use
    but that is set to something else than its default.
    """
    decode = dict(decode or {})
    unknown = sorted(set(decode) - set(defaults))
    if unknown:
        raise ValueError(f"decode: unknown option(s) {unknown}; known: {sorted(defaults)}")
    multilabel = kind in MULTILABEL_KINDS
    unused = SLOT_OPTIONS if multilabel else MULTILABEL_OPTIONS
    ignored = sorted(key for key in unused if key in decode and decode[key] != defaults[key])
    if ignored:
        what = ("a multi-label tagger (threshold, min_labels, max_labels)" if multilabel
                else "a slot tagger (arg-max per slot; min_confidence)")
        raise ValueError(f"decode: {', '.join(f'{k}={decode[k]!r}' for k in ignored)} has no effect "
                         f"on the {kind} tagger, {what}; remove it")
    full = dict(defaults)
    full.update(decode)
    if not 0.0 <= float(full["min_confidence"]) <= 1.0:
        raise ValueError(f"decode: min_confidence must be in [0, 1], got {full['min_confidence']}")
    return full


def class_probabilities(outputs):
    """A multi-label tagger's output -> (B, 18) class probabilities: the SED tagger's clip scores
    (``weak_probs``, probabilities already) or the sigmoid of the 2025 tagger's logits."""
    if isinstance(outputs, dict):
        return outputs["weak_probs"].float()
    return torch.sigmoid(outputs.float())


@torch.no_grad()
def tag_batch(tagger, mixture, threshold=0.5, min_labels=1, max_labels=constants.MAX_TARGETS,
              min_confidence=0.0):
    """mixture (B, 4, N) -> per mixture a list of (label, confidence), at most 3."""
    return decode_outputs(tagger, tagger(mixture), threshold, min_labels, max_labels,
                          min_confidence)


def decode_outputs(tagger, logits, threshold=0.5, min_labels=1, max_labels=constants.MAX_TARGETS,
                   min_confidence=0.0):
    """:func:`tag_batch` on outputs ``tagger`` has already given (``tagger(mixture)``)."""
    if not is_slot_tagger(tagger):
        probs = class_probabilities(logits)
        keep = decode_multilabel(probs, threshold, min_labels, max_labels)
        out = []
        for row_p, row_k in zip(probs.tolist(), keep.tolist()):
            chosen = [(constants.CLASSES[c], row_p[c]) for c in range(constants.N_CLASSES) if row_k[c]]
            out.append(sorted(chosen, key=lambda lp: -lp[1]))
        return out
    decoded = decode_slots(logits.float())
    if min_confidence > 0:
        decoded = [[(label, p) for label, p in row if p >= min_confidence] for row in decoded]
    return decoded
