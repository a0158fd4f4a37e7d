"""Signal-level measures of one estimate against one reference (SPEC §4).

Every function works on arrays shaped (..., T): the last axis is time, leading axes are batch
axes and the result has the leading shape. Inputs may be numpy arrays (or anything
``np.asarray`` accepts) or torch tensors:

* numpy in -> numpy/float out; sums are accumulated in float64.
* torch in -> torch out, computed in the tensor's own dtype and device (differentiable, so a
  loss may call these functions).

``EPS`` is the float32 machine epsilon. It is added to numerator and denominator, so a perfect
estimate gives a large but finite value instead of +inf.
"""
import numpy as np

EPS = float(np.finfo(np.float32).eps)


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def _pair(est, ref):
    """Return (est, ref, backend) with matching types; backend is "torch" or "numpy"."""
    if _is_torch(est) or _is_torch(ref):
        import torch
        if not _is_torch(est):
            est = torch.as_tensor(np.asarray(est), dtype=ref.dtype, device=ref.device)
        if not _is_torch(ref):
            ref = torch.as_tensor(np.asarray(ref), dtype=est.dtype, device=est.device)
        backend = "torch"
    else:
        est = np.asarray(est, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        backend = "numpy"
    if est.shape != ref.shape:
        raise ValueError(f"estimate shape {tuple(est.shape)} differs from reference shape "
                         f"{tuple(ref.shape)}")
    if est.ndim == 0:
        raise ValueError("signals must have a time axis (shape (..., T))")
    return est, ref, backend


def _finish(value, backend):
    if backend == "numpy" and np.ndim(value) == 0:
        return float(value)
    return value


def _log_ratio(num, den, backend):
    if backend == "torch":
        import torch
        return 10.0 * torch.log10((num + EPS) / (den + EPS))
    return 10.0 * np.log10((num + EPS) / (den + EPS))


def snr(est, ref):
    """SNR in dB, called "SDR" in the S5 papers: 10·log10((Σs² + ε) / (Σ(s − ŝ)² + ε)).

    Not scale-invariant and no mean removal. Shapes (..., T) -> (...).
    """
    est, ref, backend = _pair(est, ref)
    num = (ref ** 2).sum(-1)
    den = ((ref - est) ** 2).sum(-1)
    return _finish(_log_ratio(num, den, backend), backend)


def si_sdr(est, ref, zero_mean=False):
    """Scale-invariant SDR in dB.

    α = ⟨ŝ, s⟩ / ‖s‖², SI-SDR = 10·log10(‖αs‖² / ‖αs − ŝ‖²), with ε added to ⟨ŝ, s⟩, ‖s‖²
    and to both energies so that silent or perfect signals stay finite. ``zero_mean=False``
    (the default) matches the DCASE 2024 LASS evaluator, which does not remove the mean;
    ``zero_mean=True`` subtracts each signal's mean over time first.
    """
    est, ref, backend = _pair(est, ref)
    if zero_mean:
        est = est - est.mean(-1, keepdims=True) if backend == "numpy" else \
            est - est.mean(-1, keepdim=True)
        ref = ref - ref.mean(-1, keepdims=True) if backend == "numpy" else \
            ref - ref.mean(-1, keepdim=True)
    alpha = ((est * ref).sum(-1) + EPS) / ((ref ** 2).sum(-1) + EPS)
    target = alpha[..., None] * ref
    num = (target ** 2).sum(-1)
    den = ((target - est) ** 2).sum(-1)
    return _finish(_log_ratio(num, den, backend), backend)


def sdri(est, ref, mix0):
    """SDR improvement: SNR(ŝ, s) − SNR(y₀, s), y₀ = channel 0 of the mixture (SPEC §4)."""
    return snr(est, ref) - snr(mix0, ref)
