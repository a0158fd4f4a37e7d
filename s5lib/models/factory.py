"""Build taggers and separators from the ``model:`` section of a recipe YAML.

Separator::

    model:
      type: resunetk          # resunet (one label query per pass) | resunetk (3 slots, 54-d query)
      channels: [32, 64, 128, 256, 384, 384]   # any ResUNetConfig field
      n_fft: 1024
      hop_length: 160
      init_checkpoint: ""     # a DCASE resunet(k).ckpt to start from (strict)

Tagger::

    model:
      type: m2d_2025          # m2d_2025 (18-way multi-label) | m2d_2026 (3 x 19 slots, channel 0)
                              # | m2d_2026_4c (3 x 19 slots, the 4 channels)
      m2d: {embed_dim: 768, depth: 12, ...}   # any M2DConfig field
      pretrained_m2d: ""      # an M2D release .pth (encoder weights, strict)
      init_checkpoint: ""     # a DCASE m2dat*.ckpt (strict)
      trainable: all          # head | backbone_out | N_blocks | all
"""
import copy

from s5lib import constants
from s5lib.models.m2d import M2DConfig, load_m2d_pth
from s5lib.models.resunet import ResUNet30, ResUNetConfig, load_resunet_checkpoint
from s5lib.models.tagger import (M2DTagger2025, M2DTagger2026, M2DTagger2026Spatial,
                                 load_tagger_checkpoint, set_trainable)

SEPARATOR_TYPES = ("resunet", "resunetk")
TAGGER_TYPES = ("m2d_2025", "m2d_2026", "m2d_2026_4c")


def build_separator(model_cfg):
    """ResUNet30 from a config dict; returns the module (``.kind`` says resunet/resunetk)."""
    cfg = copy.deepcopy(dict(model_cfg))
    kind = cfg.pop("type", "resunetk")
    init = cfg.pop("init_checkpoint", "") or ""
    if kind not in SEPARATOR_TYPES:
        raise ValueError(f"model.type must be one of {SEPARATOR_TYPES}, got {kind!r}")
    if "channels" in cfg:
        cfg["channels"] = tuple(cfg["channels"])
    if kind == "resunet":
        config = ResUNetConfig.dcase2025_resunet(**cfg)
    else:
        config = ResUNetConfig.dcase2025_resunetk(**cfg)
    model = ResUNet30(config)
    if init:
        load_resunet_checkpoint(model, init)
    model.kind = kind
    return model


def build_tagger(model_cfg):
    """M2D tagger from a config dict; returns the module (``.kind`` is the type name)."""
    cfg = copy.deepcopy(dict(model_cfg))
    kind = cfg.pop("type", "m2d_2025")
    m2d = M2DConfig.from_dict(cfg.pop("m2d", {}) or {})
    pretrained = cfg.pop("pretrained_m2d", "") or ""
    init = cfg.pop("init_checkpoint", "") or ""
    trainable = cfg.pop("trainable", "all")
    if kind == "m2d_2025":
        model = M2DTagger2025(m2d, n_classes=constants.N_CLASSES, **cfg)
    elif kind == "m2d_2026":
        model = M2DTagger2026(m2d, **cfg)
    elif kind == "m2d_2026_4c":
        model = M2DTagger2026Spatial(m2d, n_channels=constants.N_FOA_CHANNELS, **cfg)
    else:
        raise ValueError(f"model.type must be one of {TAGGER_TYPES}, got {kind!r}")
    if pretrained:
        load_m2d_pth(model.encoder, pretrained)
    if init:
        load_tagger_checkpoint(model, init)
    set_trainable(model, trainable)
    model.kind = kind
    return model
