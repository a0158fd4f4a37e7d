"""The DCASE 2024 Task 9 (LASS) measures, as the challenge's evaluator computes them.

Per (mixture, caption) pair, with ``s`` the source, ``m`` the mixture and ``e`` the estimate
(mono, same length):

* ``SDR(s, e) = 10 log10( max(mean(s^2), 1e-10) / max(mean((e - s)^2), 1e-10) )``;
* ``SDRi = SDR(s, e) - SDR(s, m)``;
* ``SI-SDR(s, e) = 10 log10( (eps + |a s|^2) / (eps + |e - a s|^2) )`` with
  ``a = (eps + <s, e>) / (eps + <s, s>)`` and ``eps`` the machine epsilon of the signals' dtype
  (float32 for audio read as the evaluator reads it); no mean removal.

The set's figures are the means over its pairs (``summarise``).
"""
import numpy as np

SDR_FLOOR = 1e-10


def lass_sdr(ref, est):
    ref = np.asarray(ref)
    est = np.asarray(est)
    _check(ref, est)
    numerator = max(float(np.mean(ref.astype(np.float64) ** 2)), SDR_FLOOR)
    denominator = max(float(np.mean((est.astype(np.float64) - ref) ** 2)), SDR_FLOOR)
    return 10.0 * np.log10(numerator / denominator)


def lass_sisdr(ref, est):
    ref = np.asarray(ref)
    est = np.asarray(est)
    _check(ref, est)
    eps = float(np.finfo(ref.dtype).eps) if np.issubdtype(ref.dtype, np.floating) else float(
        np.finfo(np.float64).eps)
    r = ref.reshape(-1).astype(np.float64)
    e = est.reshape(-1).astype(np.float64)
    scale = (eps + float(r @ e)) / (eps + float(r @ r))
    target = scale * r
    residual = e - target
    return 10.0 * np.log10((eps + float(target @ target)) / (eps + float(residual @ residual)))


def _check(ref, est):
    if ref.shape != est.shape:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} differ in shape")
    if ref.ndim != 1:
        raise ValueError(f"LASS measures take mono signals (1-d), got shape {ref.shape}")


def score_pair(source, mixture, estimate):
    """{"sdr", "sdri", "sisdr"} of one pair (the evaluator's definitions)."""
    sdr = lass_sdr(source, estimate)
    return {"sdr": float(sdr), "sdri": float(sdr - lass_sdr(source, mixture)),
            "sisdr": float(lass_sisdr(source, estimate))}


def summarise(rows):
    """Mean SDR / SDRi / SI-SDR over per-pair rows (dicts with those keys)."""
    if not rows:
        raise ValueError("no pairs to summarise")
    return {key: float(np.mean([row[key] for row in rows])) for key in ("sdr", "sdri", "sisdr")}
