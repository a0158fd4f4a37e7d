"""KUBIG's joint permutation-invariant loss over the output slots (``FinalJointPITLoss``).

For output slot i and target slot j of a mixture the pair cost is

    w_si_sdr * (-SI-SDR(est_i, ref_j))        if target j is a source
    w_energy * energy_db(est_i)                if target j is silent
  + w_ce * CE(logits_i, class_j)               (class 18 = silence)
  + w_doa * ||doa_i - doa_j||^2 / 3            (silent target: [0, 0, 0])

The permutation of the K slots (3! orders) with the smallest total cost is chosen on detached
costs (:func:`~s5lib.losses.pit.best_permutation`); the loss is the mean over the K pairs of that
permutation, taken from the same cost matrix with gradients. Weights of the report: 0.3, 0.1, 1.0,
10.0.

``energy_db`` (the report names the term, not its form; this toolkit's reading): the estimate's
power relative to the mixture's channel 0, with a floor,
``10 log10((P(est) + floor * P(mix)) / P(mix))``; it pushes a silent slot down to about
``10 log10(floor)`` dB (-30 dB for the default 1e-3) below the mixture and no further, so a silent
slot costs a bounded amount and its gradient fades once it is quiet.
"""
import torch
import torch.nn.functional as F

from s5lib import constants
from s5lib.losses.pit import best_permutation, gather_pairs, pairwise
from s5lib.losses.waveform import neg_si_sdr

WEIGHTS = {"w_si_sdr": 0.3, "w_energy": 0.1, "w_ce": 1.0, "w_doa": 10.0}


def energy_db(est, mix0, floor=1e-3, eps=1e-10):
    """Power of ``est`` (..., T) relative to ``mix0`` (B, T) in dB, floored: (B, ...)."""
    mix_power = mix0.float().pow(2).mean(-1) + eps
    shape = (mix0.shape[0],) + (1,) * (est.dim() - 2)
    ref = mix_power.view(shape)
    return 10.0 * torch.log10((est.float().pow(2).mean(-1) + floor * ref) / ref)


def pairwise_costs(outputs, batch, w_si_sdr=0.3, w_energy=0.1, w_ce=1.0, w_doa=10.0,
                   energy_floor=1e-3):
    """Pair costs (B, K, K), [b, i, j] = output slot i against target slot j, and their parts.

    ``outputs``: ``waveforms`` (B, K, T), ``logits`` (B, K, 19), ``doa`` (B, K, 3).
    ``batch``: ``references`` (B, K, T), ``active`` (B, K), ``label_index`` (B, K) (18 in silent
    slots), ``doa`` (B, K, 3) unit vectors, ``mixture`` (B, C, T).
    """
    est, logits, doa = outputs["waveforms"], outputs["logits"], outputs["doa"]
    refs, active = batch["references"], batch["active"].bool()
    labels = torch.where(active, batch["label_index"],
                         torch.full_like(batch["label_index"], constants.SILENCE_INDEX))
    doa_target = batch["doa"].float() * active[..., None].float()
    B, K = est.shape[:2]
    if refs.shape[1] != K:
        raise ValueError(f"joint PIT: {K} output slots but {refs.shape[1]} target slots")
    sisdr = pairwise(neg_si_sdr)(est, refs)  # (B, K, K)
    energy = energy_db(est, batch["mixture"][:, 0], floor=energy_floor)[:, :, None].expand(B, K, K)
    is_source = active[:, None, :].expand(B, K, K)
    separation = torch.where(is_source, w_si_sdr * sisdr, w_energy * energy)
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, K, 19)
    ce = -torch.gather(log_probs, 2, labels[:, None, :].expand(B, K, K))  # [b, i, j]
    doa_err = (doa.float()[:, :, None, :] - doa_target[:, None, :, :]).pow(2).mean(-1)
    cost = separation + w_ce * ce + w_doa * doa_err
    parts = {"si_sdr": sisdr, "energy": energy, "ce": ce, "doa": doa_err, "is_source": is_source}
    return cost, parts


class JointPITLoss:
    """``loss(outputs, batch) -> (loss (B,), perm (B, K), logs)``; ``perm[b, j]`` is the output
    slot given to target slot j."""

    def __init__(self, w_si_sdr=0.3, w_energy=0.1, w_ce=1.0, w_doa=10.0, energy_floor=1e-3):
        self.weights = dict(w_si_sdr=float(w_si_sdr), w_energy=float(w_energy), w_ce=float(w_ce),
                            w_doa=float(w_doa))
        if not 0 < energy_floor < 1:
            raise ValueError(f"joint_pit: energy_floor must be in (0, 1), got {energy_floor}")
        self.energy_floor = float(energy_floor)

    def __call__(self, outputs, batch):
        cost, parts = pairwise_costs(outputs, batch, energy_floor=self.energy_floor, **self.weights)
        perm = best_permutation(cost)  # chosen on detached costs
        loss = gather_pairs(cost, perm).mean(-1)
        with torch.no_grad():
            chosen = {name: gather_pairs(value.float(), perm) for name, value in parts.items()}
            source = chosen.pop("is_source").bool()
            logs = {"ce": float(chosen["ce"].mean()), "doa_mse": float(chosen["doa"].mean())}
            if source.any():
                logs["si_sdr"] = float(-chosen["si_sdr"][source].mean())
            if (~source).any():
                logs["silent_db"] = float(chosen["energy"][~source].mean())
        return loss, perm, logs

    def __repr__(self):
        return f"JointPITLoss({self.weights}, energy_floor={self.energy_floor})"
