"""Permutation-invariant training (PIT) around any pairwise loss.

Conventions (Asteroid's habit of naming output shapes):

* a **single-source** loss maps ``(B, ..., T), (B, ..., T) -> (B, ...)``;
* a **pairwise** loss maps ``est (B, n, ..., T), ref (B, m, ..., T) -> (B, n, m)`` with
  ``pw[b, i, j] = loss(est[b, i], ref[b, j])`` (axes between the source axis and time averaged);
* a **permutation** ``perm`` is a (B, n) long tensor where ``perm[b, j]`` is the index of the
  estimate matched with reference ``j``; :func:`reorder_sources` applies it, so
  ``reorder_sources(est, perm)[:, j]`` goes with ``ref[:, j]``.

The best permutation is chosen on detached costs; the returned loss is gathered from the pairwise
matrix, so gradients flow only through the chosen pairs.
"""
import itertools

import torch

from s5lib.constants import SILENCE_INDEX
from s5lib.losses.waveform import neg_snr

MAX_EXHAUSTIVE_SOURCES = 8


class pairwise:  # noqa: N801 - used like a function decorator: pairwise(neg_snr)
    """Turn a single-source loss into a pairwise one: ``(B, n, ..., T), (B, m, ..., T) -> (B, n, m)``."""

    def __init__(self, loss_fn):
        if not callable(loss_fn):
            raise TypeError(f"pairwise: loss_fn must be callable, got {type(loss_fn).__name__}")
        self.loss_fn = loss_fn

    def __call__(self, est, ref):
        if est.dim() < 3 or ref.dim() < 3:
            raise ValueError(f"pairwise loss: est and ref must be (B, n, T), got {tuple(est.shape)} "
                             f"and {tuple(ref.shape)}")
        if est.shape[0] != ref.shape[0] or est.shape[2:] != ref.shape[2:]:
            raise ValueError(f"pairwise loss: est {tuple(est.shape)} and ref {tuple(ref.shape)} "
                             "differ in batch or signal shape")
        n, m = est.shape[1], ref.shape[1]
        shape = (est.shape[0], n, m) + tuple(est.shape[2:])
        values = self.loss_fn(est.unsqueeze(2).expand(shape), ref.unsqueeze(1).expand(shape))
        return values.reshape(est.shape[0], n, m, -1).mean(-1)

    def __repr__(self):
        name = getattr(self.loss_fn, "__name__", repr(self.loss_fn))
        return f"pairwise({name})"


def reorder_sources(est, perm):
    """Reorder estimates ``(B, n, ...)`` by ``perm`` (B, n): output[:, j] = est[:, perm[:, j]]."""
    index = perm.to(est.device).reshape(perm.shape + (1,) * (est.dim() - 2)).expand_as(est)
    return torch.gather(est, 1, index)


def all_permutations(n, device=None):
    """All n! permutations of ``range(n)`` as a (n!, n) long tensor, identity first."""
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long, device=device)


def best_permutation(cost):
    """Permutation minimising the mean cost. ``cost`` (B, n, n) with cost[b, i, j] for est i, ref j.

    Returns ``perm`` (B, n) with perm[b, j] = estimate for reference j. Exhaustive search up to
    ``MAX_EXHAUSTIVE_SOURCES`` sources (ties go to the lexicographically first permutation, so the
    identity wins a tie), the Hungarian algorithm (scipy) above that.
    """
    if cost.dim() != 3 or cost.shape[1] != cost.shape[2]:
        raise ValueError(f"best_permutation: cost must be (B, n, n), got {tuple(cost.shape)}")
    cost = cost.detach()
    n = cost.shape[1]
    if n <= MAX_EXHAUSTIVE_SOURCES:
        perms = all_permutations(n, device=cost.device)  # (P, n)
        # totals[b, p] = sum_j cost[b, perms[p, j], j]
        totals = cost[:, perms, torch.arange(n, device=cost.device)].sum(-1)
        return perms[totals.argmin(dim=1)]
    from scipy.optimize import linear_sum_assignment
    out = []
    for matrix in cost.double().cpu().numpy():
        rows, cols = linear_sum_assignment(matrix)  # rows: est, cols: ref
        perm = [0] * n
        for est_index, ref_index in zip(rows, cols):
            perm[ref_index] = est_index
        out.append(perm)
    return torch.tensor(out, dtype=torch.long, device=cost.device)


def gather_pairs(pw, perm):
    """Values pw[b, perm[b, j], j] as a (B, n) tensor (differentiable)."""
    n = pw.shape[2]
    cols = torch.arange(n, device=pw.device).expand_as(perm)
    return pw[torch.arange(pw.shape[0], device=pw.device)[:, None], perm, cols]


class PITWrapper:
    """PIT around a pairwise loss: ``(est (B, n, ..., T), ref (B, n, ..., T)) -> (loss (B,), perm (B, n))``.

    ``loss[b]`` is the mean over the n sources of the pairwise loss under the best permutation.
    Build it as ``PITWrapper(pairwise(neg_snr))``.
    """

    def __init__(self, pairwise_loss):
        if not callable(pairwise_loss):
            raise TypeError("PITWrapper: pairwise_loss must be callable")
        self.pairwise_loss = pairwise_loss

    def __call__(self, est, ref):
        if est.shape[:2] != ref.shape[:2]:
            raise ValueError(f"PIT: est {tuple(est.shape)} and ref {tuple(ref.shape)} need the same "
                             "(B, n)")
        pw = self.pairwise_loss(est, ref)
        perm = best_permutation(pw)
        return gather_pairs(pw, perm).mean(1), perm

    def __repr__(self):
        return f"PITWrapper({self.pairwise_loss!r})"


def _slot_classes(est_labels, ref_labels, silence_label):
    """Return (same_class (B, K, K) [est i, ref j], est_silent (B, K), ref_silent (B, K))."""
    if est_labels.shape != ref_labels.shape:
        raise ValueError(f"class-aware PIT: est_labels {tuple(est_labels.shape)} and ref_labels "
                         f"{tuple(ref_labels.shape)} differ in shape")
    if est_labels.dim() == 2:  # class indices, silence = silence_label (or negative)
        est_silent = (est_labels == silence_label) | (est_labels < 0)
        ref_silent = (ref_labels == silence_label) | (ref_labels < 0)
        same = est_labels.unsqueeze(2) == ref_labels.unsqueeze(1)
    elif est_labels.dim() == 3:  # one-hot / multi-hot vectors per slot, silence = all zero
        est_silent = (est_labels == 0).all(-1)
        ref_silent = (ref_labels == 0).all(-1)
        same = (est_labels.unsqueeze(2) == ref_labels.unsqueeze(1)).all(-1)
    else:
        raise ValueError("class-aware PIT: labels must be (B, K) class indices or (B, K, L) vectors, "
                         f"got {tuple(est_labels.shape)}")
    return same, est_silent, ref_silent


def class_aware_pit(est, ref, ref_labels, est_labels=None, loss_fn=neg_snr,
                    silence_label=SILENCE_INDEX):
    """Class-aware PIT (DCASE 2026 baseline): slots are permuted only among slots of one class.

    Shapes: est, ref (B, K, ..., T); labels (B, K) class indices (silence = ``silence_label`` or a
    negative value) or (B, K, L) label vectors (silence = all zero). ``est_labels`` are the labels
    the estimates were queried with; ``None`` means the same as ``ref_labels`` (the 2026 baseline,
    whose separator is queried with the reference labels).

    Rules (the 2026 baseline's, generalised to est_labels != ref_labels):

    * an estimate may take the place of a reference only if both carry the same non-silence label;
    * a silence estimate paired with a silence reference contributes 0 (no gradient);
    * a pairing of different labels is never chosen while an allowed one exists; if it must be
      (label multisets differ), it contributes 0 (nothing to learn from that slot);
    * loss[b] = sum of the chosen values / K (silence slots count in the denominator, as in the
      baseline).

    Returns (loss (B,), perm (B, K)) with perm[b, j] the estimate slot matched with reference j.
    """
    if est.shape[:2] != ref.shape[:2]:
        raise ValueError(f"class-aware PIT: est {tuple(est.shape)} and ref {tuple(ref.shape)} need "
                         "the same (B, K)")
    if est_labels is None:
        est_labels = ref_labels
    if tuple(ref_labels.shape[:2]) != tuple(est.shape[:2]):
        raise ValueError(f"class-aware PIT: labels {tuple(ref_labels.shape)} do not match (B, K) = "
                         f"{tuple(est.shape[:2])}")
    same, est_silent, ref_silent = _slot_classes(est_labels.to(est.device),
                                                 ref_labels.to(est.device), silence_label)
    allowed = same & ~est_silent.unsqueeze(2) & ~ref_silent.unsqueeze(1)
    both_silent = est_silent.unsqueeze(2) & ref_silent.unsqueeze(1)
    pw = pairwise(loss_fn)(est, ref)  # (B, K, K)
    # Selection cost: the loss where allowed, 0 for silence with silence, a large penalty otherwise.
    penalty = 1e9
    cost = torch.full(pw.shape, penalty, dtype=torch.float64, device=pw.device)
    cost = torch.where(allowed, pw.detach().double(), cost)
    cost = torch.where(both_silent, torch.zeros_like(cost), cost)
    perm = best_permutation(cost)
    values = gather_pairs(pw, perm)
    chosen_allowed = gather_pairs(allowed, perm)
    values = torch.where(chosen_allowed, values, torch.zeros_like(values))
    return values.sum(1) / values.shape[1], perm


def class_aware_pit_neg_snr(est, ref, est_labels=None, ref_labels=None, silence_label=SILENCE_INDEX):
    """Class-aware PIT -SNR (the 2026 baseline loss): ``-> (loss (B,), perm (B, K))``.

    Argument order follows the brief: ``(est, ref, est_labels, ref_labels)``; ``est_labels=None``
    means "queried with the reference labels". See :func:`class_aware_pit`.
    """
    if ref_labels is None:
        raise ValueError("class_aware_pit_neg_snr: ref_labels are required")
    return class_aware_pit(est, ref, ref_labels, est_labels=est_labels, loss_fn=neg_snr,
                           silence_label=silence_label)
