"""Label-queried separation of a batch of mixtures, for either separator kind.

``resunetk`` / ``resunextk`` take all (up to 3) labels of a mixture at once as a 54-d query (3
concatenated one-hots, zeros for empty slots); the single-query kinds (``resunet``,
``resunext``, ``audiosep_sed``) take one 18-d one-hot per pass, so every (mixture, label) pair is
one batch row.
"""
import torch

from s5lib import constants
from s5lib.models.factory import SINGLE_QUERY_KINDS

K = constants.MAX_TARGETS


def slot_query(label_lists, device=None):
    """(B, 54) query of concatenated per-slot one-hots; labels beyond 3 are an error."""
    query = torch.zeros(len(label_lists), K, constants.N_CLASSES, device=device)
    for b, labels in enumerate(label_lists):
        if len(labels) > K:
            raise ValueError(f"at most {K} labels per mixture, got {labels}")
        for k, label in enumerate(labels):
            query[b, k, constants.CLASS_INDEX[label]] = 1.0
    return query.flatten(1)


@torch.no_grad()
def separate_batch(model, mixture, label_lists, max_rows=16):
    """Estimates for every requested label: a list (per mixture) of (label, (N,) tensor)."""
    kind = getattr(model, "kind", "resunetk")
    device = mixture.device
    out = [[] for _ in label_lists]
    if kind not in SINGLE_QUERY_KINDS:
        est = model(mixture, slot_query(label_lists, device))  # (B, 3, N)
        for b, labels in enumerate(label_lists):
            out[b] = [(label, est[b, k].float()) for k, label in enumerate(labels)]
        return out
    for chunk, mix, query in single_query_chunks(mixture, label_lists, max_rows):
        est = model(mix, query)[:, 0]
        for r, (b, label) in enumerate(chunk):
            out[b].append((label, est[r].float()))
    return out


def single_query_chunks(mixture, label_lists, max_rows=16):
    """One batch row per (mixture, label), at most ``max_rows`` rows at a time: yields
    ``(rows, mixtures, queries)`` with ``rows`` a list of (mixture position, label), the mixtures
    repeated per row and the 18-d one-hot queries."""
    rows = [(b, label) for b, labels in enumerate(label_lists) for label in labels]
    for start in range(0, len(rows), max_rows):
        chunk = rows[start:start + max_rows]
        query = torch.zeros(len(chunk), constants.N_CLASSES, device=mixture.device)
        for r, (_, label) in enumerate(chunk):
            query[r, constants.CLASS_INDEX[label]] = 1.0
        yield chunk, mixture[[b for b, _ in chunk]], query
