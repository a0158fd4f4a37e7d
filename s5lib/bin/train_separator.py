"""Stage 3: train a label-queried separator (ResUNet / ResUNetK) on on-the-fly FOA mixtures.

    python -m s5lib.bin.train_separator --config conf/separator.yaml --data data \
        --exp_dir exp/separator_x [--train.max_steps 100 ...]

Training items come from :class:`~s5lib.data.datasets.OnTheFlyMixtures` (seeded per mixture),
validation replays the fixed validation metadata and reports the mean SDRi with oracle labels
(``valid_sdri``, the checkpoint selection metric). Queries are the reference labels:

* ``resunetk``: the 3 slots at once (54-d query); loss ``masked_multislot_neg_snr`` (2025
  baseline) or ``class_aware_pit_neg_snr`` (2026 baseline), or any single-source loss of
  :mod:`s5lib.losses` applied to active slots;
* ``resunet``: one random target per mixture (the 2025 ResUNet), a single-source loss.

Mixtures without targets (2026) are skipped by the single-query model and give silent slots
otherwise.

``synthesis`` says where training mixtures are rendered (``cpu``, ``device`` or ``auto``): the
data path every trainer shares, :mod:`s5lib.data.training_data`. Validation always replays the
validation metadata with the CPU synthesizer (cached in memory, ``valid_cache_mb``). The speed
switches of the ``train:`` section (``compile``, ``channels_last``, ``fused_optimizer``,
``persistent_workers``, ...) are described in :mod:`s5lib.train.trainer`.
"""
import logging
import time

import numpy as np
import torch

from s5lib import constants
from s5lib.bin.common import (RecipeError, crop_batch, read_dataset_info, resolve_year, run_cli,
                              record_training_config, start_training,
                              target_labels)
from s5lib.config import parse_config
from s5lib.data.training_data import TrainingDataError, build_training_data
from s5lib.infer.separate import separate_batch
from s5lib.losses import SINGLE_SOURCE_LOSSES, get_loss
from s5lib.metrics import sdri
from s5lib.models.checkpoints import trust_checkpoints
from s5lib.models.factory import build_separator
from s5lib.train.trainer import Trainer

logger = logging.getLogger("train_separator")

DEFAULTS = {
    "data": "data",  # stage-1 output dir (dataset.json)
    "exp_dir": "exp/separator",
    "year": None,  # default: the data's year
    "model": {"type": "resunetk"},
    "loss": None,  # default: masked_multislot_neg_snr (2025) / class_aware_pit_neg_snr (2026)
    "loss_kwargs": {},
    "synth": {},  # SynthConfig overrides for training mixtures (e.g. n_interferers)
    "trust_checkpoint": False,  # allow a full unpickle of init/pretrained files weights-only refuses
    "epoch_size": 1000,  # on-the-fly mixtures per epoch
    "pool": {},  # data reuse: render a pool of mixtures once (s5lib.data.pool), e.g. {mixtures: 800}
    "synthesis": "cpu",  # cpu | device | auto: where training mixtures are rendered
    "segment_seconds": None,  # train on random segments of this length (None: 10 s)
    # start the per-class frequency bias at the class-EQ gains fitted on this many training
    # items (0: off; needs model.class_freq_bias and mag_phase masks): the model starts as the
    # class-EQ anchor instead of "mask_init x channel 0"; a resumed run keeps its checkpoint
    "class_eq_init": 0,
    "valid_max_mixtures": 50,
    "valid_cache_mb": 2048,  # validation mixtures kept in memory after their first render
    "valid_batch_size": 4,
    "train": {"epochs": 1, "batch_size": 4, "lr": 1e-4, "amsgrad": True, "grad_clip": 0.5,
              "best_metric": "valid_sdri", "best_mode": "max"},
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


def make_loss_step(kind, loss_name, loss_kwargs, segment_seconds):
    if kind == "resunet" and loss_name not in SINGLE_SOURCE_LOSSES:
        raise ValueError(f"the single-query resunet needs a single-source loss "
                         f"({sorted(SINGLE_SOURCE_LOSSES)}), got {loss_name!r}")
    loss_fn = get_loss(loss_name, **loss_kwargs)

    def loss_step(model, batch):
        batch = crop_batch(batch, segment_seconds, constants.SAMPLE_RATE)
        mixture, refs, active = batch["mixture"], batch["references"], batch["active"]
        if kind == "resunet":
            keep = active.any(dim=1)
            if not keep.any():
                return (model(mixture[:1], batch["slot_onehot"][:1, 0]).sum() * 0.0,
                        {"skipped": 1.0})
            rows = torch.arange(mixture.shape[0], device=mixture.device)[keep]
            slot = pick_query_slot(active, batch["index"])[keep]
            est = model(mixture[rows], batch["slot_onehot"][rows, slot])[:, 0]
            loss = loss_fn(est, refs[rows, slot])
            return loss.mean(), {}
        query = batch["slot_onehot"].flatten(1)
        est = model(mixture, query)
        if loss_name == "masked_multislot_neg_snr":
            loss = loss_fn(est, refs, active)
        elif loss_name == "class_aware_pit_neg_snr":
            loss, _ = loss_fn(est, refs, ref_labels=batch["label_index"])
        elif loss_name in SINGLE_SOURCE_LOSSES:
            per_slot = loss_fn(est, refs)
            loss = (per_slot * active).sum(1) / active.sum(1).clamp(min=1)
        else:
            raise ValueError(f"loss {loss_name!r} does not fit label-queried training")
        return loss.mean(), {}

    return loss_step


def make_train_data(synthesis, device, bank_root, split, synth, epoch_size, seed, pool=None):
    """(dataset, collate_fn, batch_transform) of the training mixtures for ``synthesis``
    (``pool``: a ``pool:`` config section, CPU synthesis only); see
    :mod:`s5lib.data.training_data`."""
    try:
        data = build_training_data(bank_root, split, synth, epoch_size, seed, synthesis, device,
                                   pool=pool)
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


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    trust_checkpoints(cfg["trust_checkpoint"])
    info = read_dataset_info(cfg["data"])
    year = resolve_year(cfg, info)
    if cfg["loss"] is None:
        cfg["loss"] = "masked_multislot_neg_snr" if year == 2025 else "class_aware_pit_neg_snr"
        if cfg["model"].get("type", "resunetk") == "resunet":
            cfg["loss"] = "neg_snr"
    dist, synth, valid_set = start_training(cfg, info)
    train_set, collate_fn, batch_transform = make_train_data(
        cfg["synthesis"], dist.device, info["bank_root"], info.get("train_split", "train"), synth,
        epoch_size=cfg["epoch_size"], seed=cfg["train"].get("seed", 0), pool=cfg["pool"])
    model = build_separator(cfg["model"])
    if int(cfg["class_eq_init"] or 0) > 0:
        init_from_class_eq(model, train_set, collate_fn, batch_transform, int(cfg["class_eq_init"]))
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("separator %s: %s parameters; loss %s; year %d", model.kind, f"{n_params:,}",
                cfg["loss"], year)
    trainer = Trainer(model, train_set, make_valid_fn(valid_set, cfg["valid_batch_size"],
                                                      cfg["valid_max_mixtures"]),
                      make_loss_step(model.kind, cfg["loss"], cfg["loss_kwargs"], cfg["segment_seconds"]),
                      cfg["train"], cfg["exp_dir"], dist_info=dist, collate_fn=collate_fn,
                      batch_transform=batch_transform, run_config=cfg)
    record_training_config(cfg, dist)
    summary = trainer.train()
    if dist.is_main:
        logger.info("finished: %s", summary)


if __name__ == "__main__":
    run_cli(main)
