"""Stage 3 of egs/srpol: train a text-queried (LASS) separator.

The separator (:mod:`s5lib.models.lass`, a 16 kHz ResUNet30 whose FiLM reads a text embedding)
learns to extract what a caption describes from a two-source mixture made on the fly by the
DCASE 2024 LASS baseline's rule (:class:`s5lib.data.lass.LASSMixtures`). The text encoder is
frozen and outside the checkpoint (``text_encoder:``; :mod:`s5lib.models.text_encoder`); its
settings are part of the run's config, so a resume with another encoder is refused.

``training_mode: mixit`` trains from mixtures only (:class:`LASSMixITStep`): the sum of two
training mixtures, queried with both captions, the two estimates matched to the two mixtures.

Training clips: the mini bank's ``train`` clips, captioned from templates (default), or the LASS
sets' caption files (``lass_sources``: a list of ``{type: fsd50k | clotho | audiocaps, captions:
FILE, audio_dir: DIR}``). Validation: the challenge's measures (:mod:`s5lib.metrics.lass`) on a
set in its format (``valid: {csv, audio_dir}``; default: stage 1's ``lass_valid``);
``checkpoint_best.pt`` keeps the best ``valid_sdri``.

    python -m s5lib.bin.train_lass --config conf/separator.yaml --data data --exp_dir exp/separator
"""
import logging
import time

import torch

from s5lib.bin.common import (RecipeError, read_dataset_info, record_training_config, run_cli,
                              setup_logging)
from s5lib.config import parse_config
from s5lib.data.captions import CAPTION_SETS
from s5lib.data.lass import (LASSDataError, LASSMixtures, MixITPairs, bank_clips, load_pair,
                             read_caption_files, read_lass_set)
from s5lib.losses import SINGLE_SOURCE_LOSSES, get_loss
from s5lib.metrics.lass import score_pair, summarise
from s5lib.models.checkpoints import trust_checkpoints
from s5lib.models.lass import build_lass_separator, separate_signal
from s5lib.models.text_encoder import TextEncoderError, build_text_encoder, text_encoder_dim
from s5lib.train.distributed import init_distributed
from s5lib.train.trainer import Trainer, seed_everything

logger = logging.getLogger("train_lass")

DEFAULTS = {
    "data": "data",              # stage-1 output dir (dataset.json)
    "year": None,                # passed by the shared stage scripts; LASS has no S5 rule set
    "exp_dir": "exp/separator",
    "text_encoder": {"type": "minilm"},
    "model": {"type": "lass"},
    "loss": "l1_wave",           # any single-source loss of s5lib.losses (l1_wave: the baseline's)
    "loss_kwargs": {},
    # supervised: (mixture, caption) -> the captioned source; mixit: the sum of two mixtures,
    # queried with both captions, the two estimates assigned to the two mixtures by the best of
    # the 2^2 assignments (an empty group allowed) under ``loss``: no isolated source is used
    "training_mode": "supervised",
    "lass_sources": [],          # real LASS data (caption files); empty: the bank's train clips
    "caption_set": "train",      # captions of bank clips while training (s5lib.data.captions)
    "valid": {},                 # {csv, audio_dir}; empty: dataset.json's lass_valid
    "valid_max_pairs": 100,
    "segment_seconds": 5.0,
    "lower_db": -10,             # noise level against the target, whole dB in [lower, higher]
    "higher_db": 10,
    "epoch_size": 10000,         # on-the-fly pairs per epoch
    "cache_audio": True,         # keep decoded clips in memory (the mini bank; off for big sets)
    "trust_checkpoint": False,
    "train": {"optimizer": "adam", "amsgrad": True, "lr": 1e-3, "weight_decay": 0.0,
              "scheduler": "warmup_constant", "warmup_steps": 10000, "batch_size": 16,
              "epochs": 1, "grad_clip": None, "best_metric": "valid_sdri", "best_mode": "max"},
}


class LASSLossStep:
    """One batch's loss: the captions embedded by the frozen encoder, the separator's estimate of
    the target against the target under a single-source loss."""

    def __init__(self, encoder, loss_name, loss_kwargs):
        if loss_name not in SINGLE_SOURCE_LOSSES:
            raise RecipeError(f"train_lass: loss must be one of {sorted(SINGLE_SOURCE_LOSSES)}, "
                              f"got {loss_name!r}")
        self.encoder = encoder
        self.loss_fn = get_loss(loss_name, **(loss_kwargs or {}))

    def __call__(self, model, batch):
        condition = self.encoder.embed(batch["caption"]).to(batch["mixture"].device)
        estimate = model(batch["mixture"], condition)
        return self.loss_fn(estimate, batch["target"]).mean(), {}


class LASSMixITStep:
    """MixIT on LASS data: the separator, queried with each of the two mixtures' captions, gives
    two estimates from their sum; :func:`s5lib.losses.mixit` picks the best assignment of the
    estimates to the two mixtures (each to either, an empty group allowed) and the loss is that
    of the re-mixed estimates against the two mixtures."""

    def __init__(self, encoder, loss_name, loss_kwargs):
        if loss_name not in SINGLE_SOURCE_LOSSES:
            raise RecipeError(f"train_lass: MixIT takes a single-source loss for each mixture "
                              f"({sorted(SINGLE_SOURCE_LOSSES)}), got {loss_name!r}")
        self.encoder = encoder
        self.loss_fn = get_loss("mixit", loss=loss_name, loss_kwargs=loss_kwargs or {})

    def __call__(self, model, batch):
        device = batch["mixture"].device
        captions = list(batch["caption"]) + list(batch["caption2"])
        condition = self.encoder.embed(captions).to(device)
        mixture = torch.cat([batch["mixture"], batch["mixture"]])
        estimates = model(mixture, condition)                       # (2B, T)
        batch_size = batch["mixture"].shape[0]
        est = torch.stack([estimates[:batch_size], estimates[batch_size:]], dim=1)   # (B, 2, T)
        loss, assignment = self.loss_fn(est, batch["mixture1"], batch["mixture2"])
        # share of examples whose estimates went one to each mixture, as their captions say
        as_captioned = ((assignment[:, 0] == 0) & (assignment[:, 1] == 1)).float().mean()
        return loss.mean(), {"mixit_as_captioned": as_captioned.detach()}


def make_lass_valid_fn(pairs, audio_dir, encoder, max_pairs):
    """Validation: the challenge's SDR / SDRi / SI-SDR over the first ``max_pairs`` pairs (their
    audio read once)."""
    pairs = pairs[:int(max_pairs)]
    signals = [load_pair(pair, audio_dir) for pair in pairs]
    conditions = encoder.embed([pair.caption for pair in pairs])

    def valid_fn(model):
        rows = [score_pair(source, mixture, separate_signal(model, mixture, condition))
                for (source, mixture), condition in zip(signals, conditions)]
        means = summarise(rows)
        return {"valid_sdri": means["sdri"], "valid_sdr": means["sdr"], "valid_sisdr": means["sisdr"]}

    return valid_fn


def resolve_valid_set(cfg, info):
    valid = dict(cfg["valid"] or {})
    if not valid:
        if "lass_valid" not in info:
            raise RecipeError("train_lass: no validation set: give valid.csv and valid.audio_dir, "
                              "or write the mini bank's LASS sets in stage 1 (prep_data's lass: "
                              "section, as egs/srpol/conf/prep_data.yaml does)")
        valid = {"csv": info["lass_valid"]["csv"], "audio_dir": info["lass_valid"]["audio_dir"]}
    for key in ("csv", "audio_dir"):
        if not valid.get(key):
            raise RecipeError(f"train_lass: valid.{key} is missing")
    cfg["valid"] = {"csv": valid["csv"], "audio_dir": valid["audio_dir"]}
    return read_lass_set(valid["csv"], valid["audio_dir"])


def training_clips(cfg, info):
    if cfg["lass_sources"]:
        clips, report = read_caption_files(cfg["lass_sources"])
        for key, entry in report.items():
            logger.info("LASS source %s: %d clips (%d listed files missing)", key, entry["clips"],
                        entry["missing"])
        return clips
    return bank_clips(info["bank_root"], info.get("train_split", "train"))


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    trust_checkpoints(cfg["trust_checkpoint"])
    if cfg["caption_set"] not in CAPTION_SETS:
        raise RecipeError(f"train_lass: caption_set must be one of {CAPTION_SETS}")
    info = read_dataset_info(cfg["data"])
    dist = init_distributed(cfg["train"].get("device", "auto"))
    seed_everything(int(cfg["train"].get("seed", 0)))
    setup_logging(cfg["exp_dir"] if dist.is_main else None, "train")
    try:
        encoder = build_text_encoder(cfg["text_encoder"], trust=bool(cfg["trust_checkpoint"]))
        pairs = resolve_valid_set(cfg, info)
        clips = training_clips(cfg, info)
        train_set = LASSMixtures(clips, cfg["segment_seconds"], cfg["epoch_size"],
                                 seed=cfg["train"].get("seed", 0), lower_db=cfg["lower_db"],
                                 higher_db=cfg["higher_db"], caption_set=cfg["caption_set"],
                                 cache_audio=bool(cfg["cache_audio"]))
        model = build_lass_separator(cfg["model"], text_encoder_dim(cfg["text_encoder"]))
        if cfg["training_mode"] not in ("supervised", "mixit"):
            raise ValueError(f"training_mode must be supervised or mixit, got {cfg['training_mode']!r}")
        if cfg["training_mode"] == "mixit":
            train_set = MixITPairs(train_set)
    except (TextEncoderError, LASSDataError, ValueError) as err:
        raise RecipeError(f"train_lass: {err}") from None
    if encoder.dim != text_encoder_dim(cfg["text_encoder"]):
        raise RecipeError(f"train_lass: the text encoder gives {encoder.dim}-d embeddings, "
                          f"expected {text_encoder_dim(cfg['text_encoder'])}")
    logger.info("LASS separator: %s trainable parameters; text encoder %s (%d-d); %d training "
                "clips; loss %s (%s); %d validation pairs",
                f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,}",
                cfg["text_encoder"].get("type", "minilm"), encoder.dim, len(clips), cfg["loss"],
                cfg["training_mode"],
                min(len(pairs), int(cfg["valid_max_pairs"])))
    start = time.time()
    valid_fn = make_lass_valid_fn(pairs, cfg["valid"]["audio_dir"], encoder, cfg["valid_max_pairs"])
    logger.info("validation pairs read and captions embedded in %.1f s", time.time() - start)
    step_class = LASSMixITStep if cfg["training_mode"] == "mixit" else LASSLossStep
    loss_step = step_class(encoder, cfg["loss"], cfg["loss_kwargs"])
    trainer = Trainer(model, train_set, valid_fn, loss_step, cfg["train"], cfg["exp_dir"],
                      dist_info=dist, run_config=cfg)
    record_training_config(cfg, dist)
    summary = trainer.train()
    if dist.is_main:
        logger.info("finished: %s", summary)
    return summary


if __name__ == "__main__":
    run_cli(main)
