"""Stage 3: train a label-queried separator (ResUNet / ResUNetK) on on-the-fly FOA mixtures.

    python -m s5lib.bin.train_separator --config conf/separator.yaml --data data \
        --exp_dir exp/separator_x [--train.max_steps 100 ...]

Training items come from :class:`~s5lib.data.datasets.OnTheFlyMixtures` (seeded per mixture),
validation replays the fixed validation metadata and reports the mean SDRi with oracle labels
(``valid_sdri``, the checkpoint selection metric). Queries are the reference labels:

* ``resunetk``: the 3 slots at once (54-d query); loss ``masked_multislot_neg_snr`` (2025
  baseline) or ``class_aware_pit_neg_snr`` (2026 baseline), or any single-source loss of
  :mod:`s5lib.losses` applied to active slots;
* ``resunet``: one random target per mixture (the 2025 ResUNet), a single-source loss;
* ``kubig`` (KUBIG, end to end): no query; the model's waveform, class and DoA per slot against
  the targets under the joint PIT loss (``loss: joint_pit``, :mod:`s5lib.losses.joint_pit`;
  :class:`JointPITStep`); validation reports the joint loss (``valid_loss``, the report's
  early-stopping measure) and the decoded CAPI-SDRi / accuracy; the frozen BEATs comes from
  ``model.encoder_exp`` (stage 2's BEATs tagger) or ``model.encoder_checkpoint`` (a release);
* ``audiosep_sed`` (CP-JKU): as ``resunet``; its SED comes from ``model.sed_exp`` (the stage-2
  SED tagger's experiment dir); with ``refine_iterations`` N > 1 every update runs n_iter ~ U{1..N}
  refinement steps (:class:`SeparatorLossStep`).

Mixtures without targets (2026) are skipped by the single-query model and give silent slots
otherwise.

``training_mode: mixit`` trains any label-queried kind above without an isolated source
(:class:`SeparatorMixITStep`): each item is a pair of independent mixtures; the separator
hears their sum, is queried with the labels of both, and its estimates are assigned to the two
mixtures in the best of all 2^M ways (``loss`` is then the single-source loss of each re-mixed
mixture against its channel 0). Validation adds ``valid_mixit_loss`` on pairs of validation
mixtures, which selects the checkpoint unless ``train.best_metric`` says otherwise.

``synthesis`` says where training mixtures are rendered (``cpu``, ``device`` or ``auto``): the
data path every trainer shares, :mod:`s5lib.data.training_data`. Validation always replays the
validation metadata with the CPU synthesizer (cached in memory, ``valid_cache_mb``). The speed
switches of the ``train:`` section (``compile``, ``channels_last``, ``fused_optimizer``,
``persistent_workers``, ...) are described in :mod:`s5lib.train.trainer`.
"""
import inspect
import logging
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from s5lib import constants
from s5lib.bin.common import (RecipeError, crop_batch, crop_mixit_batch, read_dataset_info,
                              resolve_year, run_cli, record_training_config, start_training,
                              target_labels)
from s5lib.config import parse_config
from s5lib.data.training_data import TrainingDataError, build_training_data
from s5lib.infer.separate import separate_batch
from s5lib.losses import SINGLE_SOURCE_LOSSES, get_loss
from s5lib.losses.joint_pit import JointPITLoss
from s5lib.metrics import sdri
from s5lib.models.checkpoints import trust_checkpoints
from s5lib.models.factory import (SINGLE_QUERY_KINDS, START_WEIGHT_KEYS, build_separator,
                                  read_model_config)
from s5lib.train.trainer import Trainer

logger = logging.getLogger("train_separator")

DEFAULTS = {
    "data": "data",  # stage-1 output dir (dataset.json)
    "exp_dir": "exp/separator",
    "year": None,  # default: the data's year
    "model": {"type": "resunetk"},
    "loss": None,  # default: masked_multislot_neg_snr (2025) / class_aware_pit_neg_snr (2026)
    "loss_kwargs": {},
    # supervised: against the isolated references; mixit: from sums of two mixtures, no isolated
    # source read (SeparatorMixITStep; ``loss`` is then the single-source loss of each mixture)
    "training_mode": "supervised",
    "synth": {},  # SynthConfig overrides for training mixtures (e.g. n_interferers)
    "trust_checkpoint": False,  # allow a full unpickle of init/pretrained files weights-only refuses
    "epoch_size": 1000,  # on-the-fly mixtures per epoch
    "pool": {},  # data reuse: render a pool of mixtures once (s5lib.data.pool), e.g. {mixtures: 800}
    "synthesis": "cpu",  # cpu | device | auto: where training mixtures are rendered
    "segment_seconds": None,  # train on random segments of this length (None: 10 s)
    # weight of a frame-activity loss on the separator's frame gate (model.class_frame_gate):
    # BCE of its per-class frame logits against the frames where a reference of the class holds
    # energy (within frame_gate_floor_db of its loudest frame); 0: the gate learns from the
    # separation loss alone
    "frame_gate_weight": 0.0,
    "frame_gate_floor_db": -30.0,
    # start the per-class frequency bias at the class-EQ gains fitted on this many training
    # items (0: off; needs model.class_freq_bias and mag_phase masks): the model starts as the
    # class-EQ anchor instead of "mask_init x channel 0"; a resumed run keeps its checkpoint
    "class_eq_init": 0,
    "valid_max_mixtures": 50,
    "valid_cache_mb": 2048,  # validation mixtures kept in memory after their first render
    "valid_batch_size": 4,
    # best_metric / best_mode unset: valid_sdri / max (supervised), valid_mixit_loss / min (mixit)
    "train": {"epochs": 1, "batch_size": 4, "lr": 1e-4, "amsgrad": True, "grad_clip": 0.5,
              "best_metric": None, "best_mode": None},
}


def pick_query_slot(active, index):
    """The slot queried per item by the single-query ResUNet: one of the item's active slots,
    chosen from its index (reproducible), whichever slots are active (after ``crop_batch`` a
    silent slot may come before an active one). Items with no active slot get slot 0."""
    n_active = active.sum(1)
    choice = (index.to(torch.int64) * 7919 + 17) % n_active.clamp(min=1)
    position = active.to(torch.int64).cumsum(1) - 1  # rank of each active slot among them
    hit = active & (position == choice[:, None])
    return hit.to(torch.int64).argmax(1)


def refinement_depth(step, seed, max_iterations):
    """n_iter of one update, drawn from U{1..N} by (seed, update) alone: the same on every rank
    and after a resume."""
    if max_iterations <= 1:
        return 1
    rng = np.random.default_rng([int(seed), int(step), 7])
    return int(rng.integers(1, max_iterations + 1))


class _LabelQueriedStep:
    """What the loss steps of label-queried separators share: the model kind, the segment
    length and CP-JKU's iterative refinement (``refine_iterations`` N > 1: every update runs the
    separator for ``refinement_depth(update)`` steps and the loss reads the last one)."""

    def __init__(self, kind, segment_seconds, refine_iterations=1, seed=0):
        self.kind = kind
        self.segment_seconds = segment_seconds
        self.refine_iterations = int(refine_iterations)
        self.seed = int(seed)
        self.n_iter = 1

    def set_step(self, step):
        self.n_iter = refinement_depth(step, self.seed, self.refine_iterations)


def reference_frame_activity(references, slot_onehot, n_fft, hop, floor_db=-30.0):
    """(B, 18, T) targets of a frame gate: 1 where a reference of the class (B, K, L) holds
    energy within ``floor_db`` of its own loudest frame, over the frames of a centred STFT of
    ``n_fft`` / ``hop`` (those of the separator's gate); ``slot_onehot`` (B, K, 18) gives each
    reference's class (silent slots: zeros)."""
    pad = n_fft // 2
    power = F.pad(references.float().square(), (pad, pad))
    energy = F.avg_pool1d(power, n_fft, hop)                               # (B, K, T)
    active = energy > energy.amax(dim=-1, keepdim=True) * 10.0 ** (floor_db / 10.0)
    active = active & (energy > 0)
    per_class = torch.einsum("bkc,bkt->bct", slot_onehot.float(), active.float())
    return per_class.clamp(max=1.0)


def reference_band_activity(references, slot_onehot, stft, band_weights, floor_db=-30.0):
    """(B, 18, bands, T) targets of a band-resolved frame gate (``frame_gate_bands`` > 1): 1 where
    a reference of the class holds band energy (its power spectrum below the Nyquist bin through
    the separator's own ``stft`` front end, summed with ``band_weights`` (bands, n_fft // 2))
    within ``floor_db`` of its own loudest band and frame."""
    spec = stft.complex_spectrogram(references)                                # (B, K, T, F)
    power = spec.real.square() + spec.imag.square()
    energy = torch.einsum("nf,bktf->bknt", band_weights.float(), power[..., :band_weights.shape[1]])
    loudest = energy.flatten(2).amax(dim=-1)[:, :, None, None]
    active = (energy > loudest * 10.0 ** (floor_db / 10.0)) & (energy > 0)
    per_class = torch.einsum("bkc,bknt->bcnt", slot_onehot.float(), active.float())
    return per_class.clamp(max=1.0)


class SeparatorLossStep(_LabelQueriedStep):
    """The training loss of one batch (a named loss step; the trainer stays one).

    ``frame_gate_weight`` > 0 adds that weight times the BCE of the separator's frame-gate logits
    (``class_frame_gate``) against :func:`reference_frame_activity` of the cropped references
    (:func:`reference_band_activity` for a gate with ``frame_gate_bands`` > 1).
    """

    def __init__(self, kind, loss_name, loss_kwargs, segment_seconds, refine_iterations=1, seed=0,
                 frame_gate_weight=0.0, frame_gate_floor_db=-30.0):
        if kind in SINGLE_QUERY_KINDS and loss_name not in SINGLE_SOURCE_LOSSES:
            raise ValueError(f"the single-query {kind} needs a single-source loss "
                             f"({sorted(SINGLE_SOURCE_LOSSES)}), got {loss_name!r}")
        super().__init__(kind, segment_seconds, refine_iterations, seed)
        self.loss_name = loss_name
        self.loss_fn = get_loss(loss_name, **loss_kwargs)
        self.gate_weight = float(frame_gate_weight)
        self.gate_floor_db = float(frame_gate_floor_db)

    def __call__(self, model, batch):
        return self.loss(model, batch)

    def separate(self, model, mixture, query, **extra):
        """The model's estimates, and its frame-gate logits when the gate loss is on (else None)."""
        if self.gate_weight > 0:
            return model(mixture, query, return_frame_logits=True, **extra)
        return model(mixture, query, **extra), None

    def add_gate_loss(self, loss, logs, model, logits, references, slot_onehot):
        """``loss`` plus the weighted BCE of the frame-gate ``logits`` (B, 18, T) against the
        activity of the cropped ``references`` (a no-op without the gate loss)."""
        if logits is None:
            return loss, logs
        module = getattr(model, "module", model)
        cfg = module.config
        if logits.dim() == 4:   # (B, 18, bands, T): the band-resolved gate
            target = reference_band_activity(references, slot_onehot, module.base.stft,
                                             module.gate_bands, self.gate_floor_db)
        else:
            target = reference_frame_activity(references, slot_onehot, cfg.n_fft, cfg.hop_length,
                                              self.gate_floor_db)
        frames = min(target.shape[-1], logits.shape[-1])
        gate = F.binary_cross_entropy_with_logits(logits[..., :frames].float(),
                                                  target[..., :frames])
        return loss + self.gate_weight * gate, {**logs, "frame_gate_bce": float(gate.detach())}

    def loss(self, model, batch):
        batch = crop_batch(batch, self.segment_seconds, constants.SAMPLE_RATE)
        mixture, refs, active = batch["mixture"], batch["references"], batch["active"]
        loss_fn, loss_name, kind = self.loss_fn, self.loss_name, self.kind
        extra = {"n_iter": self.n_iter} if self.refine_iterations > 1 else {}
        if kind in SINGLE_QUERY_KINDS:
            keep = active.any(dim=1)
            if not keep.any():
                return (model(mixture[:1], batch["slot_onehot"][:1, 0], **extra).sum() * 0.0,
                        {"skipped": 1.0})
            rows = torch.arange(mixture.shape[0], device=mixture.device)[keep]
            slot = pick_query_slot(active, batch["index"])[keep]
            logs = {"n_iter": float(self.n_iter)} if extra else {}
            est, logits = self.separate(model, mixture[rows], batch["slot_onehot"][rows, slot],
                                        **extra)
            loss = loss_fn(est[:, 0], refs[rows, slot]).mean()
            return self.add_gate_loss(loss, logs, model, logits, refs[rows],
                                      batch["slot_onehot"][rows])
        est, logits = self.separate(model, mixture, batch["slot_onehot"].flatten(1))
        if loss_name == "masked_multislot_neg_snr":
            loss = loss_fn(est, refs, active)
        elif loss_name == "class_aware_pit_neg_snr":
            loss, _ = loss_fn(est, refs, ref_labels=batch["label_index"])
        elif loss_name in SINGLE_SOURCE_LOSSES:
            per_slot = loss_fn(est, refs)
            loss = (per_slot * active).sum(1) / active.sum(1).clamp(min=1)
        else:
            raise ValueError(f"loss {loss_name!r} does not fit label-queried training")
        return self.add_gate_loss(loss.mean(), {}, model, logits, refs, batch["slot_onehot"])


def make_loss_step(kind, loss_name, loss_kwargs, segment_seconds, refine_iterations=1, seed=0,
                   frame_gate_weight=0.0, frame_gate_floor_db=-30.0):
    return SeparatorLossStep(kind, loss_name, loss_kwargs, segment_seconds, refine_iterations, seed,
                             frame_gate_weight, frame_gate_floor_db)


class SeparatorMixITStep(_LabelQueriedStep):
    """MixIT for a label-queried separator (``training_mode: mixit``): no isolated source is read.

    Each item holds two independent mixtures (``mixture``, ``mixture2``) and their labels. The
    separator is given their sum and queried with every label of both (at most 2K queries); each
    estimate may go to either mixture (all 2^M assignments, an empty group allowed,
    :func:`s5lib.losses.mixit`) and the loss is the single-source ``loss`` of the re-mixed
    estimates against channel 0 of the two mixtures (reverberant, with their noise). The logs say
    how often the best assignment is the labels' own (``mixit_as_labelled``).
    """

    def __init__(self, kind, loss_name, loss_kwargs, segment_seconds, refine_iterations=1, seed=0):
        if loss_name not in SINGLE_SOURCE_LOSSES:
            raise ValueError(f"training_mode mixit takes a single-source loss for each mixture "
                             f"({sorted(SINGLE_SOURCE_LOSSES)}), got {loss_name!r}")
        super().__init__(kind, segment_seconds, refine_iterations, seed)
        self.loss_fn = get_loss("mixit", loss=loss_name, loss_kwargs=loss_kwargs or {})

    def estimates(self, model, mixture, queries, active):
        """(B, M, T) estimates from ``mixture`` for one-hot ``queries`` (B, M, 18); the estimates
        of inactive queries (B, M) are zero."""
        extra = {"n_iter": self.n_iter} if self.refine_iterations > 1 else {}
        batch, n_queries = active.shape
        if self.kind in SINGLE_QUERY_KINDS:
            rows, slots = active.nonzero(as_tuple=True)
            out = model(mixture[rows], queries[rows, slots], **extra)[:, 0]
            est = out.new_zeros((batch, n_queries, out.shape[-1]))
            return est.index_put((rows, slots), out)
        # a multi-slot separator answers K queries per pass: one pass per mixture's labels
        slots = constants.MAX_TARGETS
        groups = [model(mixture, queries[:, k:k + slots].flatten(1), **extra)
                  for k in range(0, n_queries, slots)]
        est = torch.cat(groups, dim=1)
        return est * active[..., None].to(est.dtype)

    def __call__(self, model, batch):
        return self.loss(model, batch)[:2]

    def loss(self, model, batch):
        """(loss, logs, per-item loss of the kept items)."""
        batch = crop_mixit_batch(batch, self.segment_seconds, constants.SAMPLE_RATE)
        active = torch.cat([batch["active"], batch["active2"]], dim=1)            # (B, 2K)
        queries = torch.cat([batch["slot_onehot"], batch["slot_onehot2"]], dim=1)  # (B, 2K, 18)
        keep = active.any(dim=1)
        if not keep.any():
            zero = model(batch["mixture"][:1], batch["slot_onehot"][:1, 0]
                         if self.kind in SINGLE_QUERY_KINDS
                         else batch["slot_onehot"][:1].flatten(1)).sum() * 0.0
            return zero, {"skipped": 1.0}, zero.new_zeros(0)
        rows = torch.arange(active.shape[0], device=active.device)[keep]
        first, second = batch["mixture"][rows], batch["mixture2"][rows]
        est = self.estimates(model, first + second, queries[rows], active[rows])
        per_item, assignment = self.loss_fn(est, first[:, 0], second[:, 0])
        labelled = torch.cat([torch.zeros_like(batch["active"]), torch.ones_like(batch["active2"])],
                             dim=1)[rows].to(assignment.dtype)
        on = active[rows]
        as_labelled = ((assignment == labelled) | ~on).all(dim=1).float().mean()
        logs = {"mixit_as_labelled": as_labelled.detach(),
                "mixit_queries": on.sum(1).float().mean().detach()}
        return per_item.mean(), logs, per_item.detach()


def pair_batch(batch):
    """Validation pairs for MixIT: items 0, 2, 4, ... of a batch become the first mixtures and
    items 1, 3, 5, ... the second (keys with a ``2`` suffix); an odd last item is dropped."""
    n = batch["mixture"].shape[0] // 2
    out = {}
    for key, value in batch.items():
        if torch.is_tensor(value) and value.dim() > 0:
            out[key] = value[0:2 * n:2]
            out[key + "2"] = value[1:2 * n:2]
    return out


class JointPITStep:
    """The loss of an end-to-end separator (KUBIG): its slots (waveform, class, DoA) against the
    targets under :class:`~s5lib.losses.joint_pit.JointPITLoss`; no label query."""

    def __init__(self, loss_name, loss_kwargs, segment_seconds):
        if loss_name != "joint_pit":
            raise ValueError(f"an end-to-end separator trains with loss joint_pit, got {loss_name!r}")
        try:
            self.loss_fn = JointPITLoss(**(loss_kwargs or {}))
        except TypeError as err:
            raise ValueError(f"loss_kwargs of joint_pit: {err}") from None
        self.segment_seconds = segment_seconds

    def __call__(self, model, batch):
        batch = crop_batch(batch, self.segment_seconds, constants.SAMPLE_RATE)
        loss, _, logs = self.loss_fn(model(batch["mixture"]), batch)
        return loss.mean(), logs


def make_joint_valid_fn(dataset, batch_size, max_mixtures, loss_kwargs, year):
    """Validation of an end-to-end separator: the joint loss on the fixed validation mixtures
    (``valid_loss``, the report's early-stopping measure) and, from the decoded slots, the
    mixture's CA(PI)-SDRi and label accuracy (``valid_sdri``, ``valid_accuracy``)."""
    from s5lib.infer.end_to_end import decode_outputs
    from s5lib.metrics import score_mixture
    n = min(len(dataset), max_mixtures)
    subset = torch.utils.data.Subset(dataset, list(range(n)))
    loss_fn = JointPITLoss(**(loss_kwargs or {}))

    def valid_fn(model):
        device = next(model.parameters()).device
        losses, scores, hits = [], [], []
        for batch in torch.utils.data.DataLoader(subset, batch_size=batch_size):
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            outputs = model(batch["mixture"])
            losses += loss_fn(outputs, batch)[0].tolist()
            for b, decoded in enumerate(decode_outputs(outputs)):
                refs = [(constants.CLASSES[int(c)], batch["references"][b, k].cpu())
                        for k, c in enumerate(batch["label_index"][b].tolist())
                        if bool(batch["active"][b, k])]
                result = score_mixture(year, str(b), batch["mixture"][b, 0].cpu(),
                                       [(d["label"], d["waveform"].cpu()) for d in decoded], refs,
                                       with_si_sdr=False, with_cross=False)
                hits.append(result.labels_correct)
                if result.score is not None:
                    scores.append(result.score)
        return {"valid_loss": float(np.mean(losses)) if losses else 0.0,
                "valid_sdri": float(np.mean(scores)) if scores else 0.0,
                "valid_accuracy": 100.0 * float(np.mean(hits)) if hits else 0.0}

    return valid_fn


def resolve_encoder_exp(model_cfg):
    """``model.encoder_exp: <stage-2 experiment dir>`` (kubig): the frozen encoder is that BEATs
    tagger's, its settings from the dir's ``config.yaml`` and its weights from
    ``checkpoint_best.pt``; written into the resolved config as ``model.beats_preset``,
    ``model.beats`` and ``model.encoder_checkpoint``."""
    exp = model_cfg.pop("encoder_exp", "") or ""
    if not exp:
        return
    tagger, checkpoint = read_stage2_tagger(exp, "model.encoder_exp", "beats", "a BEATs tagger")
    model_cfg["beats_preset"] = tagger.get("beats_preset", "small")
    model_cfg["beats"] = dict(tagger.get("beats") or {})
    model_cfg["encoder_checkpoint"] = checkpoint


# how each kind of separator trains: label-queried (a query per slot or per label, the reference
# labels as queries) or end to end (joint PIT over the slots); chosen by the model's
# ``training_step`` attribute
TRAINING_STEPS = ("label_queried", "joint_pit")


def read_stage2_tagger(exp, key, kind, what):
    """(``model:`` section, ``checkpoint_best.pt`` path) of the stage-2 tagger in ``exp``, which
    must be of type ``kind``; a clear error naming ``key`` otherwise."""
    cfg_path = os.path.join(exp, "config.yaml")
    checkpoint = os.path.join(exp, "checkpoint_best.pt")
    for path in (cfg_path, checkpoint):
        if not os.path.isfile(path):
            raise RecipeError(f"train_separator: {key}: {path} not found; train {what} first "
                              "(stage 2)")
    tagger = read_model_config(cfg_path, key)
    if tagger.get("type") != kind:
        raise RecipeError(f"train_separator: {key}: {cfg_path} is a {tagger.get('type')!r} "
                          f"tagger, not {what} (type: {kind})")
    return tagger, checkpoint


def resolve_sed_exp(model_cfg):
    """``model.sed_exp: <stage-2 experiment dir>`` (audiosep_sed): the separator's SED is that
    tagger, its architecture from the dir's ``config.yaml`` and its weights from
    ``checkpoint_best.pt``; written into the resolved config as ``model.sed`` and
    ``model.sed_checkpoint`` (what a replay or a resume reads)."""
    exp = model_cfg.pop("sed_exp", "") or ""
    if not exp:
        return
    if not (model_cfg.get("time_film", True) or model_cfg.get("embedding_injection", True)):
        logger.info("model.sed_exp %s not used: neither time_film nor embedding_injection", exp)
        return
    tagger, checkpoint = read_stage2_tagger(exp, "model.sed_exp", "sed", "an SED tagger")
    model_cfg["sed"] = {k: v for k, v in tagger.items()
                        if k not in ("type", "trainable") + START_WEIGHT_KEYS}
    model_cfg["sed_checkpoint"] = checkpoint


def make_train_data(synthesis, device, bank_root, split, synth, epoch_size, seed, pool=None,
                    mixit=False):
    """(dataset, collate_fn, batch_transform) of the training mixtures for ``synthesis``
    (``pool``: a ``pool:`` config section, CPU synthesis only; ``mixit``: pairs of mixtures
    without references); see :mod:`s5lib.data.training_data`."""
    try:
        data = build_training_data(bank_root, split, synth, epoch_size, seed, synthesis, device,
                                   pool=pool, mixit_pairs=mixit, with_references=not mixit)
    except TrainingDataError as err:
        raise RecipeError(f"train_separator: {err}") from None
    return data.dataset, data.collate_fn, data.batch_transform


def make_valid_fn(dataset, batch_size, max_mixtures):
    n = min(len(dataset), max_mixtures)
    subset = torch.utils.data.Subset(dataset, list(range(n)))

    def valid_fn(model):
        device = next(model.parameters()).device
        scores = []
        loader = torch.utils.data.DataLoader(subset, batch_size=batch_size)
        for batch in loader:
            mixture = batch["mixture"].to(device)
            estimates = separate_batch(model, mixture, target_labels(batch))
            for b, est in enumerate(estimates):
                values = [float(sdri(e.cpu(), batch["references"][b, k], batch["mixture"][b, 0]))
                          for k, (_, e) in enumerate(est)]
                if values:
                    scores.append(np.mean(values))
        return {"valid_sdri": float(np.mean(scores)) if scores else 0.0}

    return valid_fn


def make_mixit_valid_fn(dataset, batch_size, max_mixtures, mixit_step):
    """Validation of MixIT training: ``valid_mixit_loss``, the MixIT loss on pairs of fixed
    validation mixtures (0+1, 2+3, ...; mixtures and labels only: what selects the checkpoint
    by default), next to ``valid_sdri`` with oracle labels against the references (reported)."""
    supervised = make_valid_fn(dataset, batch_size, max_mixtures)
    n = min(len(dataset), max_mixtures) // 2 * 2
    subset = torch.utils.data.Subset(dataset, list(range(n)))

    def valid_fn(model):
        device = next(model.parameters()).device
        losses, as_labelled = [], []
        with torch.no_grad():
            for batch in torch.utils.data.DataLoader(subset, batch_size=2 * batch_size):
                pairs = {key: value.to(device) for key, value in pair_batch(batch).items()}
                if pairs["mixture"].shape[0] == 0:
                    continue
                _, logs, per_item = mixit_step.loss(model, pairs)
                losses += per_item.tolist()
                if "mixit_as_labelled" in logs:
                    as_labelled += [float(logs["mixit_as_labelled"])] * per_item.numel()
        metrics = supervised(model)
        metrics["valid_mixit_loss"] = float(np.mean(losses)) if losses else 0.0
        metrics["valid_mixit_as_labelled"] = float(np.mean(as_labelled)) if as_labelled else 0.0
        return metrics

    return valid_fn


def init_from_class_eq(model, train_set, collate_fn, batch_transform, n_items):
    """Fit class-EQ gains at the model's STFT size on the first ``n_items`` training items and
    start the model's ``class_freq_bias`` there (:meth:`ResUNet30.init_class_gains`)."""
    from s5lib.infer.class_eq import fit_class_eq
    cfg = model.config
    if getattr(model, "mask_prior", None) is None:
        raise RecipeError("train_separator: class_eq_init needs model.class_freq_bias: true")
    n_items = min(n_items, len(train_set))

    def items():
        for index in range(n_items):
            item = train_set[index]
            if batch_transform is not None:  # device synthesis: render the raw item here
                batch = batch_transform(collate_fn([item]), "cpu")
                item = {key: value[0] for key, value in batch.items() if torch.is_tensor(value)}
            yield item

    start = time.time()
    gains, count = fit_class_eq(items(), n_fft=cfg.n_fft, hop=cfg.hop_length)
    try:
        model.init_class_gains(gains)
    except ValueError as err:
        raise RecipeError(f"train_separator: class_eq_init: {err}") from None
    logger.info("class-EQ start: gains fitted on %d training mixtures at STFT %d/%d in %.1f s; "
                "classes never seen: %d", count, cfg.n_fft, cfg.hop_length, time.time() - start,
                int(np.sum(gains.max(axis=1) == 0)))


def resolve_training_mode(cfg):
    """Check ``training_mode`` and fill the default checkpoint selection of the mode; True for
    MixIT."""
    mode = cfg["training_mode"]
    if mode not in ("supervised", "mixit"):
        raise RecipeError(f"train_separator: training_mode must be supervised or mixit, got {mode!r}")
    train = cfg["train"]
    if train.get("best_metric") is None:
        train["best_metric"] = "valid_mixit_loss" if mode == "mixit" else "valid_sdri"
        if train.get("best_mode") is None:
            train["best_mode"] = "min" if mode == "mixit" else "max"
    elif train.get("best_mode") is None:
        train["best_mode"] = "min" if "loss" in train["best_metric"] else "max"
    return mode == "mixit"


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    trust_checkpoints(cfg["trust_checkpoint"])
    info = read_dataset_info(cfg["data"])
    year = resolve_year(cfg, info)
    kind = cfg["model"].get("type", "resunetk")
    if cfg["loss"] is None:
        cfg["loss"] = "masked_multislot_neg_snr" if year == 2025 else "class_aware_pit_neg_snr"
        if kind in SINGLE_QUERY_KINDS:
            cfg["loss"] = "neg_snr"
        elif kind == "kubig":
            cfg["loss"] = "joint_pit"
    mixit = resolve_training_mode(cfg)
    resolve_sed_exp(cfg["model"])
    resolve_encoder_exp(cfg["model"])
    dist, synth, valid_set = start_training(cfg, info)
    train_set, collate_fn, batch_transform = make_train_data(
        cfg["synthesis"], dist.device, info["bank_root"], info.get("train_split", "train"), synth,
        epoch_size=cfg["epoch_size"], seed=cfg["train"].get("seed", 0), pool=cfg["pool"],
        mixit=mixit)
    model = build_separator(cfg["model"])
    if int(cfg["class_eq_init"] or 0) > 0:
        if mixit:
            raise RecipeError("train_separator: class_eq_init fits gains on isolated references, "
                              "which training_mode mixit does not read; drop one of them")
        init_from_class_eq(model, train_set, collate_fn, batch_transform, int(cfg["class_eq_init"]))
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("separator %s: %s parameters, %s trainable; loss %s; year %d", model.kind,
                f"{n_params:,}", f"{n_train:,}", cfg["loss"], year)
    step = getattr(model, "training_step", "label_queried")
    if step not in TRAINING_STEPS:
        raise RecipeError(f"train_separator: model {model.kind} trains by {step!r}, unknown here "
                          f"(known: {TRAINING_STEPS})")
    gate_weight = float(cfg["frame_gate_weight"])
    if gate_weight < 0:
        raise RecipeError(f"train_separator: frame_gate_weight must be >= 0, got {gate_weight}")
    gate_ok = (getattr(model, "frame_gate", None) is not None
               and "return_frame_logits" in inspect.signature(model.forward).parameters)
    if gate_weight > 0 and (mixit or step != "label_queried" or not gate_ok):
        raise RecipeError(f"train_separator: frame_gate_weight needs a supervised separator with "
                          f"model.class_frame_gate: true (ResUNet(K), ResUNeXt(K)), not "
                          f"{model.kind} (training_mode {cfg['training_mode']})")
    try:
        if mixit and step != "label_queried":
            raise RecipeError(f"train_separator: training_mode mixit is for label-queried "
                              f"separators; {model.kind} trains by {step!r}")
        if mixit and cfg["train"]["best_metric"] == "valid_sdri":
            logger.warning("training_mode mixit with best_metric valid_sdri: the checkpoint is "
                           "chosen with the validation references (valid_mixit_loss would not "
                           "read them)")
        if mixit:
            refine = getattr(getattr(model, "guidance", None), "refine_iterations", 1)
            loss_step = SeparatorMixITStep(model.kind, cfg["loss"], cfg["loss_kwargs"],
                                           cfg["segment_seconds"], refine_iterations=refine,
                                           seed=cfg["train"].get("seed", 0))
            valid_step = SeparatorMixITStep(model.kind, cfg["loss"], cfg["loss_kwargs"], None)
            valid_fn = make_mixit_valid_fn(valid_set, cfg["valid_batch_size"],
                                           cfg["valid_max_mixtures"], valid_step)
        elif step == "joint_pit":
            loss_step = JointPITStep(cfg["loss"], cfg["loss_kwargs"], cfg["segment_seconds"])
            valid_fn = make_joint_valid_fn(valid_set, cfg["valid_batch_size"],
                                           cfg["valid_max_mixtures"], cfg["loss_kwargs"], year)
        else:
            loss_step = make_loss_step(
                model.kind, cfg["loss"], cfg["loss_kwargs"], cfg["segment_seconds"],
                refine_iterations=getattr(getattr(model, "guidance", None), "refine_iterations", 1),
                seed=cfg["train"].get("seed", 0), frame_gate_weight=gate_weight,
                frame_gate_floor_db=cfg["frame_gate_floor_db"])
            valid_fn = make_valid_fn(valid_set, cfg["valid_batch_size"], cfg["valid_max_mixtures"])
    except ValueError as err:
        raise RecipeError(f"train_separator: {err}") from None
    trainer = Trainer(model, train_set, valid_fn, loss_step,
                      cfg["train"], cfg["exp_dir"], dist_info=dist, collate_fn=collate_fn,
                      batch_transform=batch_transform, run_config=cfg)
    record_training_config(cfg, dist)
    summary = trainer.train()
    if dist.is_main:
        logger.info("finished: %s", summary)


if __name__ == "__main__":
    run_cli(main)
