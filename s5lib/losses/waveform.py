"""Single-source waveform losses: ``(..., T), (..., T) -> (...)``.

Every loss here compares an estimate with a reference along the last (time) axis and returns one
value per leading index: ``(B, T) -> (B,)``, ``(B, K, T) -> (B, K)``. Losses are "lower is better"
(negated measures), computed in float32 whatever the input dtype (so they are safe under bf16
autocast).

The measures follow SPEC §4:

* SNR (called "SDR" in the S5 papers, *not* scale-invariant, no mean removal)::

      SNR(est, ref) = 10 log10((sum ref^2 + eps) / (sum (ref - est)^2 + eps))

  with ``eps`` the float32 machine epsilon.
* SI-SDR with ``alpha = (<est, ref> + eps) / (||ref||^2 + eps)``::

      SI-SDR = 10 log10((||alpha ref||^2 + eps) / (||alpha ref - est||^2 + eps))

  No mean is removed unless ``zero_mean=True`` (the DCASE 2024 LASS evaluator removes none).
"""
import torch

EPS = torch.finfo(torch.float32).eps


def _check_pair(est, ref, name):
    if not torch.is_tensor(est) or not torch.is_tensor(ref):
        raise TypeError(f"{name}: est and ref must be tensors, got {type(est).__name__} and "
                        f"{type(ref).__name__}")
    if est.shape != ref.shape:
        raise ValueError(f"{name}: est and ref must have the same shape (..., T), got "
                         f"{tuple(est.shape)} and {tuple(ref.shape)}")
    if est.dim() < 1 or est.shape[-1] == 0:
        raise ValueError(f"{name}: need at least one time sample, got shape {tuple(est.shape)}")
    return est.float(), ref.float()


def snr(est, ref, eps=EPS):
    """SNR in dB (SPEC §4) along the last axis: ``(..., T) -> (...)``."""
    est, ref = _check_pair(est, ref, "snr")
    signal = ref.pow(2).sum(-1)
    noise = (ref - est).pow(2).sum(-1)
    return 10.0 * torch.log10((signal + eps) / (noise + eps))


def neg_snr(est, ref, eps=EPS):
    """Negative SNR (the baseline's separation loss): ``(..., T) -> (...)``, e.g. (B,)."""
    return -snr(est, ref, eps=eps)


def si_sdr(est, ref, zero_mean=False, eps=EPS):
    """Scale-invariant SDR in dB along the last axis: ``(..., T) -> (...)``."""
    est, ref = _check_pair(est, ref, "si_sdr")
    if zero_mean:
        est = est - est.mean(-1, keepdim=True)
        ref = ref - ref.mean(-1, keepdim=True)
    alpha = ((est * ref).sum(-1, keepdim=True) + eps) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    scaled_ref = alpha * ref
    signal = scaled_ref.pow(2).sum(-1)
    noise = (scaled_ref - est).pow(2).sum(-1)
    return 10.0 * torch.log10((signal + eps) / (noise + eps))


def neg_si_sdr(est, ref, zero_mean=False, eps=EPS):
    """Negative SI-SDR: ``(..., T) -> (...)``."""
    return -si_sdr(est, ref, zero_mean=zero_mean, eps=eps)


def l1_wave(est, ref):
    """Mean absolute sample error (the DCASE 2024 LASS baseline loss): ``(..., T) -> (...)``."""
    est, ref = _check_pair(est, ref, "l1_wave")
    return (est - ref).abs().mean(-1)


def weighted_sdr_sisdr(est, ref, sdr_weight=0.9, zero_mean=False, eps=EPS):
    """SRPOL's loss ``-[w * SNR + (1 - w) * SI-SDR]`` with ``w = sdr_weight`` (0.9): ``(...)``."""
    if not 0.0 <= sdr_weight <= 1.0:
        raise ValueError(f"weighted_sdr_sisdr: sdr_weight must be in [0, 1], got {sdr_weight}")
    return -(sdr_weight * snr(est, ref, eps=eps)
             + (1.0 - sdr_weight) * si_sdr(est, ref, zero_mean=zero_mean, eps=eps))


def masked_multislot_neg_snr(est, ref, active, normalize="all_slots", eps=EPS):
    """The baseline ResUNetK loss: -SNR per slot, inactive slots masked out. ``(B, K, T) -> (B,)``.

    ``active`` is a (B, K) bool (or 0/1) tensor. Inactive slots contribute **0** to the loss (and
    no gradient). ``normalize`` says what the per-mixture sum is divided by:

    * ``"all_slots"`` (default, the DCASE 2025 baseline's ``snr_masked`` loss): divide by K, so the
      batch mean equals the baseline's ``mean(-SNR * mask)`` over all B x K slots;
    * ``"active_slots"``: divide by the number of active slots (a mixture with no active slot
      gives 0).

    Extra axes between K and T (e.g. channels, ``(B, K, C, T)``) are averaged like slots.
    """
    if est.dim() < 3:
        raise ValueError(f"masked_multislot_neg_snr: est must be (B, K, T), got {tuple(est.shape)}")
    if tuple(active.shape) != tuple(est.shape[:2]):
        raise ValueError(f"masked_multislot_neg_snr: active must be (B, K) = {tuple(est.shape[:2])}, "
                         f"got {tuple(active.shape)}")
    per_slot = neg_snr(est, ref, eps=eps)  # (B, K, ...)
    per_slot = per_slot.reshape(per_slot.shape[0], per_slot.shape[1], -1).mean(-1)  # (B, K)
    mask = active.to(per_slot.device).bool()
    masked = torch.where(mask, per_slot, torch.zeros_like(per_slot))
    if normalize == "all_slots":
        return masked.sum(1) / per_slot.shape[1]
    if normalize == "active_slots":
        return masked.sum(1) / mask.sum(1).clamp(min=1).to(masked.dtype)
    raise ValueError(f"masked_multislot_neg_snr: normalize must be 'all_slots' or 'active_slots', "
                     f"got {normalize!r}")
