"""Stage 2: train an audio tagger (M2D-AT 2025 multi-label, the 2026 3-slot taggers, CP-JKU's
SED tagger, or KUBIG's BEATs tagger, ``model.type: beats``, whose encoder stage 3 freezes).

    python -m s5lib.bin.train_tagger --config conf/tagger.yaml --data data --exp_dir exp/tagger_x

Training items are on-the-fly FOA mixtures (seeded per mixture), rendered where ``synthesis``
says (``cpu``, ``device`` or ``auto``; :mod:`s5lib.data.training_data`) and only as far as the
tagger reads them (no references; channel 0 for the 1-channel taggers); the 2025 tagger is trained
with BCE on the multi-hot labels, the 2026 taggers with permutation-invariant slot
cross-entropy, the SED tagger (``model.type: sed``) with ``strong_weight`` x BCE of its frame
probabilities against the synthesizer's onsets/offsets (rasterised to its ``seq_len`` frames) plus
the rest x BCE of its clip scores. Validation decodes the fixed validation mixtures and reports the label
accuracy (``valid_accuracy``: set match for 2025, multiset match for 2026; the default
``train.best_metric``, which selects ``checkpoint_best.pt``), the source accuracy
(``valid_source_accuracy``) and the training loss on them (``valid_loss``, the official
recipes' selection; ``best_metric: valid_loss, best_mode: min``; not for the SED tagger,
whose validation items hold no frame activity). Start from a real M2D release with
``--model.pretrained_m2d PATH`` (and ``--model.trainable head`` for the baseline's first phase).
With ``model.type: null`` the data's year picks the type (``m2d_2025`` / ``m2d_2026``);
``model_by_type`` holds model keys for one type only (``{m2d_2026: {track_input_dim: 256}}``), merged once the type is known, so one
config file serves both years.

The quick start's extras (all off by default, the official recipes use none): ``pool.features:
true`` keeps an M2D tagger's log mel in the training pool instead of the waveform (the same
values; the front end runs once per pooled mixture); ``augment`` changes that log mel at random
in training (a shift by a few mel bands, SpecAugment's band and frame masks;
:func:`~s5lib.models.tagger.augment_log_mel`); ``presence_weight`` adds to a slot tagger's PIT
cross-entropy the BCE of the class presence its slots imply
(:func:`~s5lib.models.tagger.slot_presence_bce`, no weights added).

Phases: a ``phases:`` list in the config runs the official multi-phase schedule in one stage —
each entry is a set of config overrides (plus a ``name``) applied on top of the rest of the
config; phase ``i`` trains in ``<exp_dir>/phase<i>_<name>/`` and starts from phase ``i-1``'s
``checkpoint_best.pt`` (``model.init_checkpoint``). The last phase's best checkpoint and
config are then published as ``<exp_dir>/checkpoint_best.pt`` and ``<exp_dir>/config.yaml``
(what stage 4 reads). A re-run resumes the unfinished phase and skips finished ones.
"""
import logging
import os
import shutil

import numpy as np
import torch

from s5lib import constants
from s5lib.bin.common import (RecipeError, read_dataset_info, resolve_year, run_cli,
                              record_training_config, start_training,
                              target_labels)
from s5lib.config import merge, parse_config
from s5lib.data.training_data import TrainingDataError, build_training_data
from s5lib.infer.tag import DECODE_DEFAULTS, check_decode, decode_outputs
from s5lib.metrics import labels_match_multiset, labels_match_set, source_label_counts
from s5lib.models.checkpoints import trust_checkpoints
from s5lib.models.factory import TAGGER_TYPES, build_tagger
from s5lib.models.tagger import (augment_log_mel, check_augment, multilabel_bce, pit_slot_ce,
                                 sed_loss, slot_presence_bce)
from s5lib.train.trainer import Trainer

logger = logging.getLogger("train_tagger")

DEFAULTS = {
    "data": "data",
    "exp_dir": "exp/tagger",
    "year": None,  # default: the data's year
    "model": {"type": None},  # default: m2d_2025 (2025) / m2d_2026 (2026)
    # model keys for one tagger type only, merged into model once the type is known: lets one
    # file serve both years, e.g. {m2d_2026: {track_input_dim: 256}} sizes the slot head alone
    "model_by_type": {},
    "synth": {},
    "trust_checkpoint": False,  # allow a full unpickle of init/pretrained files weights-only refuses
    "epoch_size": 1000,
    # data reuse: render a pool of mixtures once (s5lib.data.pool), e.g. {mixtures: 2000};
    # features: true keeps the tagger's log mel instead of the waveform (the M2D taggers)
    "pool": {},
    "synthesis": "cpu",  # cpu | device | auto: where training mixtures are rendered
    "valid_max_mixtures": 100,
    "valid_cache_mb": 2048,  # validation mixtures kept in memory after their first render
    "valid_batch_size": 8,
    "decode": dict(DECODE_DEFAULTS),  # see s5lib.infer.tag (multi-label or slot decoding)
    "phases": [],  # optional multi-phase schedule: a list of config overrides, each with a name
    # start the 2025 head's biases at the class prior (about 2 of 18 classes active), so a model
    # trained from scratch does not spend its first thousand updates learning that prior
    "prior_bias_init": True,
    "strong_weight": 0.5,  # sed: lambda of lambda * BCE(strong) + (1 - lambda) * BCE(weak)
    # the 2026 slot taggers: PIT CE + this weight x BCE of the class presence the slots imply
    # (s5lib.models.tagger.slot_presence_bce; no weights added); 0: the official loss
    "presence_weight": 0.0,
    # training-time changes of the M2D taggers' log mel (s5lib.models.tagger.augment_log_mel):
    # freq_shift (mel bands), n_freq_masks / freq_mask (bands), n_time_masks / time_mask (frames)
    "augment": {},
    "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "grad_clip": 0.5,
              "best_metric": "valid_accuracy", "best_mode": "max"},
}


def tagger_channels(model):
    """The mixture channels a tagger reads, so only they are rendered: ``[0]`` for the
    1-channel taggers, None (all four) otherwise. A tagger reads no references either."""
    return [0] if getattr(model, "ref_channel", None) == 0 else None


MULTILABEL_KINDS = ("m2d_2025", "beats")  # trained with BCE on label_vector; the rest: slots


def tagger_loss(kind, logits, batch, strong_weight=0.5, presence_weight=0.0):
    """The (B,) training loss of a tagger of ``kind`` on its outputs ``logits`` for ``batch``;
    ``presence_weight`` > 0 adds that weight times :func:`slot_presence_bce` to a slot tagger's
    PIT cross-entropy."""
    if kind == "sed":  # strong (frame) + weak (clip) BCE; activity is (B, 18, frames)
        strong = batch["activity"].transpose(1, 2)
        return sed_loss(logits, strong, batch["label_vector"], strong_weight)
    if kind in MULTILABEL_KINDS:
        return multilabel_bce(logits, batch["label_vector"])
    loss = pit_slot_ce(logits, batch["label_index"])
    if presence_weight:
        loss = loss + presence_weight * slot_presence_bce(logits, batch["label_vector"])
    return loss


def loss_keys(kind, presence_weight=0.0):
    """The batch keys :func:`tagger_loss` reads for a tagger of ``kind``."""
    if kind == "sed":
        return ("activity", "label_vector")
    if kind in MULTILABEL_KINDS:
        return ("label_vector",)
    return ("label_index", "label_vector") if presence_weight else ("label_index",)


def make_loss_step(kind, strong_weight=0.5, presence_weight=0.0, augment=None):
    """The training step; ``augment`` (:func:`check_augment`'s dict, any value > 0) changes the
    tagger's log mel at random before the tagger reads it (:func:`augment_log_mel`)."""
    augment = augment if augment and any(augment.values()) else None

    def loss_step(model, batch):
        # a pool with features: true serves the tagger's input features instead of the mixture
        log_mel = batch.get("features")
        if augment is not None:
            if log_mel is None:
                log_mel = getattr(model, "module", model).input_features(batch["mixture"])
            log_mel = augment_log_mel(log_mel, **augment)
        outputs = model(batch["mixture"]) if log_mel is None else model(log_mel=log_mel)
        return tagger_loss(kind, outputs, batch, strong_weight, presence_weight).mean(), {}
    return loss_step


def tagger_feature_fn(model):
    """What a pool with ``features: true`` keeps for ``model``: its ``input_features`` (the
    parameter-free front end, run where the model's buffers are), or None when the tagger reads
    the waveform itself."""
    if not hasattr(model, "input_features"):
        return None

    def feature_fn(mixture):
        device = next(model.buffers()).device
        return model.input_features(mixture.to(device))
    return feature_fn


def make_valid_fn(dataset, batch_size, max_mixtures, year, decode, strong_weight=0.5,
                  presence_weight=0.0):
    """Validation: ``valid_accuracy`` (label set / multiset match per mixture),
    ``valid_source_accuracy`` (100 TP / (TP + FP + FN) over the labels) and, where the
    validation items carry what the loss reads, ``valid_loss`` (the training loss; the
    official recipes keep the checkpoint with the lowest): a smoother selection criterion than
    the share of exactly right mixtures on a few dozen of them."""
    subset = torch.utils.data.Subset(dataset, list(range(min(len(dataset), max_mixtures))))
    match = labels_match_set if year == 2025 else labels_match_multiset

    def valid_fn(model):
        device = next(model.parameters()).device
        keys = loss_keys(model.kind, presence_weight)
        hits, counts, loss_sum, n_loss = [], np.zeros(3), 0.0, 0
        for batch in torch.utils.data.DataLoader(subset, batch_size=batch_size):
            logits = model(batch["mixture"].to(device))
            predicted = decode_outputs(model, logits, **decode)
            for pred, ref in zip(predicted, target_labels(batch)):
                labels = [lbl for lbl, _ in pred]
                hits.append(match(labels, ref))
                counts += source_label_counts(labels, ref)
            if all(key in batch for key in keys):
                loss = tagger_loss(model.kind, logits, {k: batch[k].to(device) for k in keys},
                                   strong_weight, presence_weight)
                loss_sum += float(loss.float().sum())
                n_loss += loss.numel()
        tp, fp, fn = counts
        metrics = {"valid_accuracy": 100.0 * float(np.mean(hits)) if hits else 0.0,
                   "valid_source_accuracy": 100.0 * tp / (tp + fp + fn) if tp + fp + fn else 100.0}
        if n_loss:
            metrics["valid_loss"] = loss_sum / n_loss
        return metrics

    return valid_fn


def train_one(cfg, info):
    """Train one tagger with the resolved config ``cfg`` (one phase); returns the summary."""
    year = cfg["year"]
    try:
        decode = check_decode(cfg["model"]["type"], cfg["decode"])
    except ValueError as err:
        raise RecipeError(f"train_tagger: {err}") from None
    cfg["decode"] = decode
    dist, synth, valid_set = start_training(cfg, info)
    model = build_tagger(cfg["model"])
    channels = tagger_channels(model)
    try:
        data = build_training_data(info["bank_root"], info.get("train_split", "train"), synth,
                                   cfg["epoch_size"], cfg["train"].get("seed", 0),
                                   cfg["synthesis"], dist.device, pool=cfg["pool"],
                                   with_references=False, channels=channels,
                                   n_activity_frames=model.seq_len if model.kind == "sed" else 0,
                                   feature_fn=tagger_feature_fn(model))
    except TrainingDataError as err:
        raise RecipeError(f"train_tagger: {err}") from None
    starts_fresh = not (cfg["model"].get("init_checkpoint") or cfg["model"].get("pretrained_sed"))
    if cfg["prior_bias_init"] and model.kind in ("m2d_2025", "sed", "beats") and starts_fresh:
        prior = float(np.mean(synth.resolved().n_targets)) / constants.N_CLASSES
        head = model.strong_head if model.kind == "sed" else model.head
        with torch.no_grad():
            head.bias.fill_(float(np.log(prior / (1 - prior))))
    presence_weight = float(cfg["presence_weight"])
    if presence_weight < 0 or (presence_weight and (model.kind in MULTILABEL_KINDS
                                                     or model.kind == "sed")):
        raise RecipeError(f"train_tagger: presence_weight {presence_weight} is for the 2026 slot "
                          f"taggers (>= 0); this tagger is {model.kind}")
    try:
        augment = check_augment(cfg["augment"])
    except ValueError as err:
        raise RecipeError(f"train_tagger: {err}") from None
    if any(augment.values()) and not hasattr(model, "input_features"):
        raise RecipeError(f"train_tagger: augment changes the log mel of the M2D taggers; "
                          f"{model.kind} reads the waveform itself")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("tagger %s: %s trainable parameters; year %d", model.kind, f"{n_train:,}", year)
    trainer = Trainer(model, data.dataset,
                      make_valid_fn(valid_set, cfg["valid_batch_size"], cfg["valid_max_mixtures"],
                                    year, decode, cfg["strong_weight"], presence_weight),
                      make_loss_step(model.kind, cfg["strong_weight"], presence_weight, augment),
                      cfg["train"],
                      cfg["exp_dir"], dist_info=dist,
                      collate_fn=data.collate_fn, batch_transform=data.batch_transform,
                      run_config=cfg)
    record_training_config(cfg, dist)
    summary = trainer.train()
    if dist.is_main:
        logger.info("finished: %s", summary)
    return summary, dist


def phase_configs(cfg):
    """The resolved config of every phase (a single one without ``phases``)."""
    phases = cfg.pop("phases", None) or []
    if not phases:
        return [cfg]
    if not isinstance(phases, list) or not all(isinstance(p, dict) for p in phases):
        raise RecipeError("train_tagger: phases must be a list of mappings (config overrides)")
    out, previous = [], None
    for number, phase in enumerate(phases, start=1):
        phase = dict(phase)
        name = str(phase.pop("name", f"phase{number}"))
        if not name.replace("_", "").replace("-", "").isalnum():
            raise RecipeError(f"train_tagger: phase name {name!r} must be letters, digits, _ or -")
        unknown = sorted(set(phase) - set(cfg))
        if unknown:
            raise RecipeError(f"train_tagger: phase {name!r} overrides unknown key(s) {unknown}")
        resolved = merge(cfg, phase)
        resolved["exp_dir"] = os.path.join(cfg["exp_dir"], f"phase{number}_{name}")
        if previous is not None:
            resolved["model"]["init_checkpoint"] = os.path.join(previous, "checkpoint_best.pt")
        out.append(resolved)
        previous = resolved["exp_dir"]
    return out


def publish_last_phase(phase_dir, exp_dir):
    """Make the last phase's best checkpoint and config the experiment's (hard link, else copy)."""
    for name in ("checkpoint_best.pt", "config.yaml"):
        source, target = os.path.join(phase_dir, name), os.path.join(exp_dir, name)
        tmp = target + ".tmp"
        if os.path.exists(tmp):
            os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)


def apply_model_by_type(cfg):
    """Merge ``model_by_type[<model.type>]`` into ``model`` (in place); other types' entries are
    checked to be type names and left unused."""
    by_type = cfg.get("model_by_type") or {}
    if not isinstance(by_type, dict):
        raise RecipeError(f"model_by_type must map a tagger type to model keys, got {by_type!r}")
    unknown = sorted(set(by_type) - set(TAGGER_TYPES))
    if unknown:
        raise RecipeError(f"model_by_type: unknown tagger type(s) {unknown} "
                          f"(known: {', '.join(TAGGER_TYPES)})")
    values = by_type.get(cfg["model"]["type"]) or {}
    if not isinstance(values, dict):
        raise RecipeError(f"model_by_type.{cfg['model']['type']} must be a mapping of model keys, "
                          f"got {values!r}")
    cfg["model"] = merge(cfg["model"], values)


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    trust_checkpoints(cfg["trust_checkpoint"])
    info = read_dataset_info(cfg["data"])
    year = resolve_year(cfg, info)
    if not cfg["model"].get("type"):
        cfg["model"]["type"] = "m2d_2025" if year == 2025 else "m2d_2026"
    apply_model_by_type(cfg)
    phases = phase_configs(cfg)
    for number, phase_cfg in enumerate(phases, start=1):
        if len(phases) > 1:
            logger.info("phase %d of %d: %s", number, len(phases), phase_cfg["exp_dir"])
        _, dist = train_one(phase_cfg, info)
    if len(phases) > 1 and dist.is_main:
        publish_last_phase(phases[-1]["exp_dir"], cfg["exp_dir"])
        logger.info("published %s as the experiment's checkpoint_best.pt", phases[-1]["exp_dir"])


if __name__ == "__main__":
    run_cli(main)
