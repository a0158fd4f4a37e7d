"""Output-gain calibration: one scalar per refinement step that scales every written estimate,
fitted on the validation mixtures with oracle labels.

The S5 score is an SNR, not a scale-invariant measure, so an estimate at the wrong level loses
dB however clean it is. A separator trained on short segments (the quick start's 3 s crops)
reads 10 s mixtures at test time, and its estimates come out too loud on the whole clip: on the
mini bank's 2025 test set, every quick-start separator measured gained 0.1-0.3 dB of SDRi from
a common scale of 0.75-0.85 (README, "Output gain"). Here that scale is chosen on data the
test set never sees: the data dir's fixed validation mixtures, separated with their reference
labels exactly as the test set is (same procedure, same refinement steps).

Per mixture and true-positive pair (s, ŝ), SNR(g·ŝ, s) = 10·log10((Σs² + ε) / (Σs² − 2g·Σsŝ +
g²·Σŝ² + ε)) needs only the three sums, so the oracle-label CA-SDRi (2025) / CAPI-SDRi (2026) of
the whole validation set is evaluated for every gain of a grid at once. The pairs are the ones
the metric forms at gain 1 (for 2026 duplicates: the best-SNR pairing).
"""
import numpy as np
import torch

from s5lib import constants
from s5lib.metrics.s5 import ca_sdri, capi_sdri
from s5lib.metrics.signal import snr

EPS = float(np.finfo(np.float32).eps)
GAIN_GRID = np.round(np.arange(0.05, 2.0 + 1e-9, 0.01), 2)


def check_output_gain(value):
    """``output_gain`` of an inference config: a positive number, or ``"valid"`` (fit it)."""
    if isinstance(value, str) and value == "valid":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or value <= 0:
        raise ValueError(f"output_gain must be a positive number or 'valid' (fitted on the "
                         f"validation set), got {value!r}")
    return float(value)


def mixture_statistics(year, estimates, references, mix0):
    """One mixture's share of the calibration objective.

    ``estimates`` / ``references``: lists of (label, waveform (T,)). Returns ``(pairs, count)``:
    ``pairs`` a (P, 4) array of (Σs², Σsŝ, Σŝ², SNR(y₀, s)) per true-positive pair, ``count`` the
    number of values the mixture's score averages; None when the metric skips the mixture.
    """
    est = [(label, np.asarray(wave, dtype=np.float64)) for label, wave in estimates]
    ref = [(label, np.asarray(wave, dtype=np.float64)) for label, wave in references]
    mix0 = np.asarray(mix0, dtype=np.float64)
    if year == 2025:
        score, details = ca_sdri(dict(est), dict(ref), mix0)
    else:
        score, details = capi_sdri(est, ref, mix0)
    if score is None:
        return None
    pairs = []
    for d in details:
        if d.kind != "TP":
            continue
        e, s = est[d.est_index][1], ref[d.ref_index][1]
        pairs.append((float(s @ s), float(s @ e), float(e @ e), float(snr(mix0, s))))
    return np.asarray(pairs, dtype=np.float64).reshape(-1, 4), len(details)


def score_by_gain(statistics, gains=GAIN_GRID):
    """Mean over mixtures of the oracle-label score, for every gain: ``statistics`` a list of
    :func:`mixture_statistics` results (None entries skipped) -> array (len(gains),)."""
    gains = np.asarray(gains, dtype=np.float64)
    per_mixture = []
    for entry in statistics:
        if entry is None:
            continue
        pairs, count = entry
        ss, se, ee, base = (pairs[:, k:k + 1] for k in range(4))
        err = np.maximum(ss - 2 * gains[None] * se + gains[None] ** 2 * ee, 0.0)
        snri = 10 * np.log10((ss + EPS) / (err + EPS)) - base
        per_mixture.append(snri.sum(0) / count)
    if not per_mixture:
        raise ValueError("output gain: no validation mixture has a label to score")
    return np.mean(per_mixture, axis=0)


def fit_output_gain(statistics, gains=GAIN_GRID):
    """The grid gain with the best mean score; returns a dict with the gain, the score at it and
    at gain 1, and the number of mixtures and pairs it was fitted on."""
    scores = score_by_gain(statistics, gains)
    best = int(np.argmax(scores))
    kept = [e for e in statistics if e is not None]
    at_one = float(score_by_gain(kept, [1.0])[0])
    return {"gain": float(gains[best]), "score": float(scores[best]), "score_at_1": at_one,
            "mixtures": len(kept), "pairs": int(sum(len(p) for p, _ in kept))}


@torch.no_grad()
def calibrate(separate_fn, dataset, year, n_steps, batch_size=4, device="cpu", max_mixtures=None):
    """Fit one gain per step on ``dataset`` (items with ``mixture``, ``references``,
    ``label_index``, ``n_targets``: e.g. :class:`~s5lib.data.datasets.MetadataMixtures`).

    ``separate_fn(mixture, label_lists)`` returns per step the estimates of every item, as
    :func:`s5lib.bin.infer.separate_rows` does. Returns a list of :func:`fit_output_gain` dicts.
    """
    n = len(dataset) if max_mixtures is None else min(len(dataset), int(max_mixtures))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, list(range(n))),
                                         batch_size=batch_size)
    statistics = [[] for _ in range(n_steps)]
    for batch in loader:
        counts = batch["n_targets"].tolist()
        labels = [[constants.CLASSES[c] for c in row[:k].tolist()]
                  for row, k in zip(batch["label_index"], counts)]
        per_step = separate_fn(batch["mixture"].to(device), labels)
        if len(per_step) != n_steps:
            raise ValueError(f"output gain: {len(per_step)} refinement steps, expected {n_steps}")
        mix0 = batch["mixture"][:, 0].numpy()
        references = batch["references"].numpy()
        for step, estimates in zip(statistics, per_step):
            for b, row in enumerate(estimates):
                refs = [(label, references[b, k]) for k, label in enumerate(labels[b])]
                step.append(mixture_statistics(
                    year, [(label, wave.float().cpu().numpy()) for label, wave in row], refs,
                    mix0[b]))
    return [fit_output_gain(step) for step in statistics]
