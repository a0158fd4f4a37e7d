"""The text-queried separator of the LASS recipe (egs/srpol): the DCASE 2024 Task 9 baseline's
AudioSep-style ResUNet30 at 16 kHz (STFT 1024 / hop 160, one mono input and output), whose FiLM
layers read a text embedding straight (no label embedding): 512-d for CLAP, 384-d for MiniLM.

``model:`` section::

    model:
      type: lass
      mask_type: mag_phase    # mag_phase (the baseline) | real_imag (SRPOL system 1) | complex
      channels: [32, 64, 128, 256, 384, 384]   # any ResUNetConfig field
      init_checkpoint: ""     # a LASS baseline / AudioSep Lightning file (ss_model.base/film keys,
                              # strict) or a checkpoint of this trainer

``condition_size`` and ``label_len`` are the text encoder's width (set by the entry points).
"""
import os

import numpy as np
import torch
import yaml

from s5lib.models.checkpoints import (CheckpointError, audiosep_key_map, extract_state_dict,
                                      load_checkpoint_file, load_strict)
from s5lib.models.resunet import ResUNet30, ResUNetConfig

LASS_UNET_DEFAULTS = dict(input_channels=1, output_channels=1, num_slots=1,
                          use_label_embedding=False, channel_mix=False, zero_silent_slots=False,
                          n_fft=1024, hop_length=160)


def lass_unet_config(condition_dim, **overrides):
    """ResUNetConfig of a LASS separator whose query is a ``condition_dim``-d text embedding."""
    fixed = ("input_channels", "output_channels", "num_slots", "use_label_embedding",
             "label_len", "condition_size")
    clash = sorted(k for k in overrides if k in fixed)
    if clash:
        raise ValueError(f"model.{clash[0]} is fixed for a LASS separator (mono in and out, "
                         f"one text query of the encoder's width)")
    return ResUNetConfig(**{**LASS_UNET_DEFAULTS, **overrides, "label_len": int(condition_dim),
                            "condition_size": int(condition_dim)})


class LASSSeparator(ResUNet30):
    """``forward(mixture (B, 1, T) or (B, T), condition (B, D)) -> (B, T)``."""

    def forward(self, mixture, condition, extra_film=None):
        if mixture.dim() == 2:
            mixture = mixture[:, None]
        return super().forward(mixture, condition, extra_film)[:, 0]


def build_lass_separator(model_cfg, condition_dim):
    cfg = dict(model_cfg or {})
    kind = cfg.pop("type", "lass")
    if kind != "lass":
        raise ValueError(f"a LASS separator has model.type lass, got {kind!r}")
    init = cfg.pop("init_checkpoint", "") or ""
    try:
        model = LASSSeparator(lass_unet_config(condition_dim, **cfg))
    except TypeError as err:
        raise ValueError(f"model: {err}") from None
    model.kind = "lass"
    if init:
        load_lass_weights(model, init)
    return model


def load_lass_weights(model, path):
    """Load a separator file strictly: a trainer checkpoint of this recipe (``model`` entry) or a
    LASS baseline / AudioSep Lightning file (``ss_model.base.*`` and ``ss_model.film.*``; the CLAP
    ``query_encoder.*`` it also holds is left out)."""
    if not os.path.isfile(path):
        raise CheckpointError(path, "checkpoint file does not exist")
    checkpoint = load_checkpoint_file(path)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict) and \
            "base.stft.conv_real.weight" in checkpoint["model"]:
        return load_strict(model, checkpoint["model"], source=path)
    weights = extract_state_dict(checkpoint, prefixes=(), source=path)
    mapped = {audiosep_key_map(k): v for k, v in weights.items() if audiosep_key_map(k)}
    if not mapped:
        raise CheckpointError(path, "neither a LASS trainer checkpoint nor a LASS baseline / "
                                    "AudioSep file (no ss_model.base.* / ss_model.film.* keys)")
    return load_strict(model, mapped, source=path)


def read_lass_experiment(exp_dir):
    """What a train_lass experiment dir holds for inference: (``model:`` section without its
    start weights, ``text_encoder:`` section, the checkpoint to load: ``checkpoint_best.pt``, else
    ``checkpoint_last.pt``)."""
    path = os.path.join(exp_dir, "config.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; train the LASS separator first (stage 3)")
    with open(path) as f:
        saved = yaml.safe_load(f) or {}
    model_cfg = dict(saved.get("model") or {"type": "lass"})
    model_cfg.pop("init_checkpoint", None)
    encoder_cfg = dict(saved.get("text_encoder") or {"type": "minilm"})
    checkpoint = os.path.join(exp_dir, "checkpoint_best.pt")
    if not os.path.isfile(checkpoint):
        checkpoint = os.path.join(exp_dir, "checkpoint_last.pt")
    return model_cfg, encoder_cfg, checkpoint


def separate_signal(model, mixture, condition):
    """One mono mixture (T,) float32 array queried with one (D,) condition -> the (T,) estimate."""
    device = next(model.parameters()).device
    estimate = model(torch.from_numpy(np.ascontiguousarray(mixture))[None, None].to(device),
                     condition[None].to(device))
    return estimate[0].float().cpu().numpy()
