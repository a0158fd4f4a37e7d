"""Separation losses shared by every recipe, and a registry so a YAML can pick one by name.

Output shapes follow Asteroid's habit:

==============================  ==========================================  =====================
name                            call                                        returns
==============================  ==========================================  =====================
neg_snr                         (est (B, ..., T), ref (B, ..., T))          (B, ...)
neg_si_sdr                      same                                        (B, ...)
l1_wave                         same                                        (B, ...)
weighted_sdr_sisdr              same                                        (B, ...)
masked_multislot_neg_snr        (est (B, K, T), ref (B, K, T), active)      (B,)
pit                             (est (B, n, T), ref (B, n, T))              ((B,), perm (B, n))
class_aware_pit                 (est, ref, ref_labels, est_labels=None)     ((B,), perm (B, K))
class_aware_pit_neg_snr         (est, ref, est_labels, ref_labels)          ((B,), perm (B, K))
mixit                           (est (B, M, T), mix1 (B, T), mix2 (B, T))   ((B,), assign (B, M))
==============================  ==========================================  =====================

``get_loss("pit", loss="neg_si_sdr")`` wraps any single-source loss (by name or callable) into
PIT; ``loss_kwargs`` passes options to it, e.g.
``get_loss("mixit", loss="weighted_sdr_sisdr", loss_kwargs={"sdr_weight": 0.9})``.
"""
import functools
import inspect

from s5lib.losses.mixit import all_assignments, mixit
from s5lib.losses.pit import (PITWrapper, all_permutations, best_permutation, class_aware_pit,
                              class_aware_pit_neg_snr, pairwise, reorder_sources)
from s5lib.losses.waveform import (EPS, l1_wave, masked_multislot_neg_snr, neg_si_sdr, neg_snr,
                                   si_sdr, snr, weighted_sdr_sisdr)

SINGLE_SOURCE_LOSSES = {
    "neg_snr": neg_snr,
    "neg_si_sdr": neg_si_sdr,
    "l1_wave": l1_wave,
    "weighted_sdr_sisdr": weighted_sdr_sisdr,
}


def _bind(name, fn, kwargs):
    """functools.partial with a clear error for options the loss does not take."""
    params = inspect.signature(fn).parameters
    unknown = [key for key in kwargs if key not in params]
    if unknown:
        raise TypeError(f"loss {name!r} has no option(s) {unknown}; it takes "
                        f"{[p for p in params if p not in ('est', 'ref')]}")
    return functools.partial(fn, **kwargs) if kwargs else fn


def _inner_loss(loss, loss_kwargs):
    if callable(loss):
        return functools.partial(loss, **loss_kwargs) if loss_kwargs else loss
    if loss not in SINGLE_SOURCE_LOSSES:
        raise ValueError(f"unknown single-source loss {loss!r}; known: {sorted(SINGLE_SOURCE_LOSSES)}")
    return _bind(loss, SINGLE_SOURCE_LOSSES[loss], loss_kwargs or {})


def _make_pit(loss="neg_snr", loss_kwargs=None):
    return PITWrapper(pairwise(_inner_loss(loss, loss_kwargs)))


def _make_class_aware_pit(loss="neg_snr", loss_kwargs=None, **kwargs):
    return _bind("class_aware_pit", class_aware_pit,
                 dict(kwargs, loss_fn=_inner_loss(loss, loss_kwargs)))


def _make_mixit(loss="neg_snr", loss_kwargs=None, **kwargs):
    return _bind("mixit", mixit, dict(kwargs, loss=_inner_loss(loss, loss_kwargs)))


LOSS_FACTORIES = {
    **{name: functools.partial(_bind, name, fn) for name, fn in SINGLE_SOURCE_LOSSES.items()},
    "masked_multislot_neg_snr": functools.partial(_bind, "masked_multislot_neg_snr",
                                                  masked_multislot_neg_snr),
    "class_aware_pit_neg_snr": functools.partial(_bind, "class_aware_pit_neg_snr",
                                                 class_aware_pit_neg_snr),
}


def get_loss(name, **kwargs):
    """The loss called ``name`` with ``kwargs`` bound (see the module table for names)."""
    if name == "pit":
        return _make_pit(**kwargs)
    if name == "class_aware_pit":
        return _make_class_aware_pit(**kwargs)
    if name == "mixit":
        return _make_mixit(**kwargs)
    if name not in LOSS_FACTORIES:
        known = sorted(list(LOSS_FACTORIES) + ["pit", "class_aware_pit", "mixit"])
        raise ValueError(f"unknown loss {name!r}; known: {known}")
    return LOSS_FACTORIES[name](kwargs)


__all__ = [
    "EPS", "snr", "si_sdr", "neg_snr", "neg_si_sdr", "l1_wave", "weighted_sdr_sisdr",
    "masked_multislot_neg_snr", "pairwise", "PITWrapper", "best_permutation", "all_permutations",
    "reorder_sources", "class_aware_pit", "class_aware_pit_neg_snr", "mixit", "all_assignments",
    "get_loss",
]
