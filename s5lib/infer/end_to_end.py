"""Inference with an end-to-end separator (KUBIG, ``procedure: end_to_end``): no tagger, no query.

The model gives K slots, each with a waveform, 19 class logits and a DoA vector. A slot whose
arg-max class is silence is dropped; the others are estimates of their class (2026: a class may
come more than once), with the class's softmax probability as the confidence. The DoA of an
estimate is its predicted (x, y, z) made a unit vector, or None when the prediction is shorter than
``doa_threshold`` (the report's 0.1: silent-slot targets are [0, 0, 0], so a short vector is a
direction the model is not sure of).
"""
import torch

from s5lib import constants

E2E_DEFAULTS = {"doa_threshold": 0.1}


def check_end_to_end(options):
    """The ``end_to_end:`` options with defaults filled in; a clear error for unknown ones."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(E2E_DEFAULTS))
    if unknown:
        raise ValueError(f"end_to_end: unknown option(s) {unknown}; known: {sorted(E2E_DEFAULTS)}")
    full = dict(E2E_DEFAULTS, **options)
    if not 0.0 <= float(full["doa_threshold"]) < 1.0:
        raise ValueError(f"end_to_end: doa_threshold must be in [0, 1), got {full['doa_threshold']}")
    return full


def is_end_to_end(separator):
    """Whether a separator labels its own slots (trained by the joint PIT step) rather than
    being queried with labels."""
    return getattr(separator, "training_step", None) == "joint_pit"


def decode_outputs(outputs, doa_threshold=0.1):
    """A model's output dict -> per mixture a list of dicts (slot order): ``slot``, ``label``,
    ``probability``, ``waveform`` (N,), ``doa`` (a unit [x, y, z] list or None)."""
    probs = torch.softmax(outputs["logits"].float(), dim=-1)
    confidence, classes = probs.max(dim=-1)
    doa = outputs["doa"].float()
    norms = doa.norm(dim=-1)
    decoded = []
    for b in range(classes.shape[0]):
        row = []
        for k in range(classes.shape[1]):
            c = int(classes[b, k])
            if c == constants.SILENCE_INDEX:
                continue
            direction = None
            if float(norms[b, k]) >= doa_threshold and float(norms[b, k]) > 0:
                direction = (doa[b, k] / norms[b, k]).tolist()
            row.append({"slot": k, "label": constants.CLASSES[c],
                        "probability": float(confidence[b, k]),
                        "waveform": outputs["waveforms"][b, k].float(), "doa": direction})
        decoded.append(row)
    return decoded


@torch.no_grad()
def separate_end_to_end(separator, mixture, doa_threshold=0.1):
    return decode_outputs(separator(mixture), doa_threshold)
