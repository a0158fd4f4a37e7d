"""Mixture invariant training (MixIT), generalised to all 2^M assignments (SPEC §7.5).

Each of the M estimates is assigned to one of the two mixtures; a mixture may receive no estimate
at all (an empty group: its estimate is silence). The loss is

    min over A in {0, 1}^M of  L(sum_{m: A_m = 0} est_m, mix1) + L(sum_{m: A_m = 1} est_m, mix2)

where L is a single-source loss ``(B, ..., T) -> (B, ...)`` (extra axes averaged).
"""
import torch

from s5lib.losses.waveform import neg_snr

MAX_MIXIT_ESTIMATES = 16


def all_assignments(n_estimates, device=None):
    """All 2^M binary assignments as a (2^M, M) long tensor; row a is the binary digits of a
    (most significant first), so row 0 puts every estimate into mixture 1."""
    codes = torch.arange(2 ** n_estimates, device=device)
    shifts = torch.arange(n_estimates - 1, -1, -1, device=device)
    return (codes.unsqueeze(1) >> shifts) & 1


def _per_example(loss_fn, est, ref):
    values = loss_fn(est, ref)
    return values.reshape(values.shape[0], -1).mean(-1)


def _remix(est, assignment):
    """Mixture estimates (B, 2, ..., T) from est (B, M, ..., T) and an assignment (B, M) in {0, 1}."""
    to_second = assignment.to(est.dtype).reshape(assignment.shape + (1,) * (est.dim() - 2))
    return torch.stack([(est * (1 - to_second)).sum(1), (est * to_second).sum(1)], dim=1)


def mixit(est, mix1, mix2, loss=neg_snr, chunk_size=64):
    """MixIT loss. est (B, M, ..., T); mix1, mix2 (B, ..., T); ``loss`` a single-source loss.

    Returns (loss (B,), assignment (B, M)) where assignment[b, m] is 0 if estimate m goes to mix1
    and 1 if it goes to mix2. The assignment is chosen on detached values (evaluated in chunks of
    ``chunk_size`` assignments to bound memory); the loss is then recomputed with gradients for the
    chosen assignment only. Ties go to the lowest assignment code.
    """
    if est.dim() < 3:
        raise ValueError(f"mixit: est must be (B, M, T), got {tuple(est.shape)}")
    if mix1.shape != mix2.shape or tuple(mix1.shape) != (est.shape[0],) + tuple(est.shape[2:]):
        raise ValueError(f"mixit: mix1 {tuple(mix1.shape)} and mix2 {tuple(mix2.shape)} must both be "
                         f"(B, ..., T) = {(est.shape[0],) + tuple(est.shape[2:])}")
    n_estimates = est.shape[1]
    if n_estimates > MAX_MIXIT_ESTIMATES:
        raise ValueError(f"mixit: {n_estimates} estimates give 2^{n_estimates} assignments; at most "
                         f"{MAX_MIXIT_ESTIMATES} are supported")
    batch = est.shape[0]
    assignments = all_assignments(n_estimates, device=est.device)  # (A, M)
    signal_shape = tuple(est.shape[2:])
    with torch.no_grad():
        totals = []
        for start in range(0, assignments.shape[0], chunk_size):
            chunk = assignments[start:start + chunk_size]  # (a, M)
            a = chunk.shape[0]
            to_second = chunk.to(est.dtype).reshape((1, a, n_estimates) + (1,) * len(signal_shape))
            est_exp = est.unsqueeze(1)  # (B, 1, M, ...)
            first = (est_exp * (1 - to_second)).sum(2)  # (B, a, ...)
            second = (est_exp * to_second).sum(2)
            ref1 = mix1.unsqueeze(1).expand_as(first)
            ref2 = mix2.unsqueeze(1).expand_as(second)
            flat = (batch * a,) + signal_shape
            cost = (_per_example(loss, first.reshape(flat), ref1.reshape(flat))
                    + _per_example(loss, second.reshape(flat), ref2.reshape(flat)))
            totals.append(cost.reshape(batch, a))
        best = torch.cat(totals, dim=1).argmin(dim=1)  # (B,)
    assignment = assignments[best]  # (B, M)
    remixed = _remix(est, assignment)
    value = _per_example(loss, remixed[:, 0], mix1) + _per_example(loss, remixed[:, 1], mix2)
    return value, assignment
