"""Build taggers and separators from the ``model:`` section of a recipe YAML.

Separator::

    model:
      type: resunetk          # resunet (one label query per pass) | resunetk (3 slots, 54-d query)
      channels: [32, 64, 128, 256, 384, 384]   # any ResUNetConfig field
      n_fft: 1024
      hop_length: 160
      init_checkpoint: ""     # a DCASE resunet(k).ckpt to start from (strict)

REDUX separator (``type: resunextk``, 3 slots / ``resunext``, one label per pass;
:mod:`s5lib.models.resunext`): any ``ResUNeXtConfig`` field (``blocks_per_level``, ``cardinality``,
``film_scope``, ``attention``, ``spec_augment``, ``freq_mask``, ``time_mask``, ...).

KUBIG separator (``type: kubig``, :mod:`s5lib.models.kubig`; end to end: no label query, it
gives waveform, class and DoA per slot): any ``KubigConfig`` field (``beats_preset`` full | small,
``beats`` BEATsConfig overrides, ``hidden_dim``, ``n_compressed``, ``temporal_layers``, ...),
``encoder_checkpoint`` (BEATs_iter3_plus_AS2M.pt, or a stage-2 ``beats`` tagger checkpoint).

CP-JKU separator (``type: audiosep_sed``, :mod:`s5lib.models.audiosep_sed`): any ResUNetConfig field
(defaults n_fft 2048, hop 160, one 18-d query), the guidance switches of ``GuidanceConfig``
(``time_film``, ``embedding_injection``, ``sed_trainable``, ``dprnn``, ``refine_iterations``, ...),
``sed:`` the SED tagger's section (as a tagger's ``model:``, type ``sed``), ``sed_checkpoint`` (a
stage-2 SED checkpoint the separator's SED starts from, strict) and ``audiosep_checkpoint``
(``audiosep_base_4M_steps.ckpt``: the U-Net and FiLM start from AudioSep).

Tagger::

    model:
      type: m2d_2025          # m2d_2025 (18-way multi-label) | m2d_2026 (3 x 19 slots, channel 0)
                              # | m2d_2026_4c (3 x 19 slots, the 4 channels)
                              # | sed (CP-JKU SED tagger: strong + attention heads, 16 kHz)
                              # | beats (BEATs encoder + 18-way head: beats_preset, beats,
                              #   pretrained_beats = a BEATs release file)
      pretrained_sed: ""      # sed: a PretrainedSED M2D file (M2D_strong_1.pt; heads stay new)
      m2d: {embed_dim: 768, depth: 12, ...}   # any M2DConfig field
      pretrained_m2d: ""      # an M2D release .pth (encoder weights, strict)
      init_checkpoint: ""     # a DCASE m2dat*.ckpt (strict)
      trainable: all          # head | backbone_out | N_blocks | all
"""
import copy
import os
import re

import yaml

from s5lib import constants
from s5lib.models.checkpoints import (CheckpointError, detect_prefix, extract_state_dict,
                                     load_checkpoint_file, load_strict, strip_prefix)
from s5lib.models.beats import BEATsTagger, beats_config, load_beats_weights
from s5lib.models.kubig import KubigConfig, SpatialSeparatorModel
from s5lib.models.audiosep_sed import AudioSepSED, GuidanceConfig, audiosep_sed_resunet_config
from s5lib.models.m2d import M2DConfig, load_m2d_pth, load_pretrained_sed
from s5lib.models.resunet import (ResUNet30, ResUNetConfig, init_from_audiosep,
                                  load_resunet_checkpoint)
from s5lib.models.resunext import AttResUNeXt, ResUNeXtConfig
from s5lib.models.tagger import (M2DTagger2025, M2DTagger2026, M2DTagger2026Spatial, SEDTagger,
                                 load_tagger_checkpoint, set_trainable)

SEPARATOR_TYPES = ("resunet", "resunetk", "audiosep_sed", "resunext", "resunextk", "kubig")
# separators that take one 18-d label per pass (one batch row per (mixture, label)); the others
# take the 3 slots of a mixture at once as a 54-d query (caption_queried: a LASS separator queried
# with each label's caption, s5lib.infer.caption_query)
SINGLE_QUERY_KINDS = ("resunet", "audiosep_sed", "resunext", "caption_queried")
TAGGER_TYPES = ("m2d_2025", "m2d_2026", "m2d_2026_4c", "sed", "beats")
# model.init_checkpoint value of a second training phase: "the best checkpoint of the base: config"
PHASE1_CHECKPOINT = "phase1"
# model-file keys that name weights to start from: the weights of the file being loaded replace them
START_WEIGHT_KEYS = ("init_checkpoint", "pretrained_m2d", "pretrained_sed", "sed_checkpoint",
                     "audiosep_checkpoint", "encoder_checkpoint", "pretrained_beats")


def build_separator(model_cfg):
    """A separator from a config dict; returns the module (``.kind`` is the type name)."""
    cfg = copy.deepcopy(dict(model_cfg))
    kind = cfg.pop("type", "resunetk")
    init = cfg.pop("init_checkpoint", "") or ""
    if kind not in SEPARATOR_TYPES:
        raise ValueError(f"model.type must be one of {SEPARATOR_TYPES}, got {kind!r}")
    if init == PHASE1_CHECKPOINT:
        raise ValueError("model.init_checkpoint: phase1 names the best checkpoint of the config's "
                         "base: run (a two-phase recipe stage 3, e.g. egs/redux/local/stage3.sh, "
                         "resolves it); outside a recipe give the checkpoint file")
    if "channels" in cfg:
        cfg["channels"] = tuple(cfg["channels"])
    if kind == "audiosep_sed":
        return _build_audiosep_sed(cfg, init)
    if kind == "kubig":
        return _build_kubig(cfg, init)
    single = dict(num_slots=1, label_len=constants.N_CLASSES)
    if kind == "resunext":
        model = AttResUNeXt(ResUNeXtConfig(**{**single, **cfg}))
    elif kind == "resunextk":
        model = AttResUNeXt(ResUNeXtConfig(**cfg))
    elif kind == "resunet":
        model = ResUNet30(ResUNetConfig.dcase2025_resunet(**cfg))
    else:
        model = ResUNet30(ResUNetConfig.dcase2025_resunetk(**cfg))
    if init:
        load_resunet_checkpoint(model, init)
    model.kind = kind
    return model


def _build_kubig(cfg, init):
    encoder = cfg.pop("encoder_checkpoint", "") or ""
    unknown = sorted(set(cfg) - set(KubigConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"model (type kubig): unknown key(s) {unknown}; known: "
                         f"{sorted(KubigConfig.__dataclass_fields__)} and encoder_checkpoint")
    model = SpatialSeparatorModel(KubigConfig(**cfg))
    if encoder:
        load_beats_weights(model.encoder, encoder)
    if init:  # a kubig checkpoint (ours or a plain state_dict): any container, strict
        load_tagger_checkpoint(model, init)
    model.kind = "kubig"
    return model


def _build_audiosep_sed(cfg, init):
    guidance_keys = set(GuidanceConfig.__dataclass_fields__)
    guidance = GuidanceConfig.from_dict({k: cfg.pop(k) for k in list(cfg) if k in guidance_keys})
    sed_cfg = cfg.pop("sed", None)
    sed_checkpoint = cfg.pop("sed_checkpoint", "") or ""
    audiosep = cfg.pop("audiosep_checkpoint", "") or ""
    sed = None
    if guidance.uses_sed:
        if not isinstance(sed_cfg, dict):
            raise ValueError("model.sed: the SED tagger's section (type: sed, m2d: ...) is needed by "
                             "time_film / embedding_injection")
        sed = build_tagger(dict(sed_cfg, type="sed", trainable="all"))
        if sed_checkpoint:
            load_tagger_checkpoint(sed, sed_checkpoint)
    elif sed_checkpoint:
        raise ValueError("model.sed_checkpoint is given but no guidance term uses the SED")
    model = AudioSepSED(audiosep_sed_resunet_config(guidance.refine_iterations, **cfg), guidance, sed)
    if audiosep:
        model.audiosep_report = init_from_audiosep(model, audiosep)
    if init:
        load_resunet_checkpoint(model, init)
    model.kind = "audiosep_sed"
    return model


def build_tagger(model_cfg):
    """M2D tagger from a config dict; returns the module (``.kind`` is the type name)."""
    cfg = copy.deepcopy(dict(model_cfg))
    kind = cfg.pop("type", "m2d_2025")
    m2d_values = cfg.pop("m2d", {}) or {}
    if kind == "sed":  # the SED's front end is the 16 kHz one unless the section says otherwise
        m2d = M2DConfig.from_dict(dict(M2DConfig.m2d_16k().__dict__, **m2d_values))
    else:
        m2d = M2DConfig.from_dict(m2d_values)
    pretrained = cfg.pop("pretrained_m2d", "") or ""
    init = cfg.pop("init_checkpoint", "") or ""
    pretrained_sed = cfg.pop("pretrained_sed", "") or ""
    trainable = cfg.pop("trainable", "all")
    if kind == "beats":  # KUBIG's stage 2: a BEATs encoder trained as an 18-way tagger
        pretrained_beats = cfg.pop("pretrained_beats", "") or ""
        if m2d_values or pretrained or pretrained_sed:
            raise ValueError("model (type beats): m2d / pretrained_m2d / pretrained_sed are M2D "
                             "settings; a BEATs tagger takes beats_preset, beats, pretrained_beats")
        model = BEATsTagger(beats_config(cfg.pop("beats_preset", "small"), cfg.pop("beats", {})))
        if cfg:
            raise ValueError(f"model (type beats): unknown key(s) {sorted(cfg)}")
        if pretrained_beats:
            load_beats_weights(model.encoder, pretrained_beats)
        if init:
            load_tagger_checkpoint(model, init)
        if trainable not in ("all", "head"):
            raise ValueError(f"model.trainable {trainable!r}: a BEATs tagger trains all or head")
        for param in model.encoder.parameters():
            param.requires_grad_(trainable == "all")
        model.kind = kind
        return model
    if pretrained_sed and kind != "sed":
        raise ValueError(f"model.pretrained_sed is for type sed, not {kind!r}")
    if kind == "sed":
        model = SEDTagger(m2d, n_classes=constants.N_CLASSES, **cfg)
        if pretrained_sed:
            load_pretrained_sed(model, pretrained_sed)
    elif kind == "m2d_2025":
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


# ----------------------------------------------------------------------------------------------
# Model files given by path (released checkpoints, our checkpoints, plain state_dict files)
# ----------------------------------------------------------------------------------------------
TAGGER_ANCHORS = ("m2d.backbone.cls_token", "backbone.cls_token")  # the 4-channel layout first
SEPARATOR_ANCHOR = "base.stft.conv_real.weight"
KUBIG_ANCHOR = "doa_head.0.weight"  # the end-to-end separator has no STFT kernels
BEATS_TAGGER_ANCHOR = "encoder.patch_embedding.weight"
SED_TAGGER_ANCHOR = "model.m2d.backbone.cls_token"
FULL_SIZE_EMBED_DIM = 768  # ViT-Base: the only M2D size whose head count the weights imply


def _count_blocks(weights, prefix):
    """Number of ``<prefix>N.`` indices among the keys (e.g. ViT blocks)."""
    found = set()
    for key in weights:
        if key.startswith(prefix):
            index = key[len(prefix):].split(".", 1)[0]
            if index.isdigit():
                found.add(int(index))
    return len(found)


def tagger_kind_from_weights(weights, source):
    """``m2d_2025``, ``m2d_2026``, ``m2d_2026_4c`` or ``sed`` from the key layout of (prefix-free)
    weights."""
    if "strong_head.weight" in weights:
        return "sed"
    if BEATS_TAGGER_ANCHOR in weights:
        return "beats"
    if "m2d.backbone.cls_token" in weights:
        return "m2d_2026_4c"
    if any(key.startswith("head.tracks.") for key in weights):
        return "m2d_2026"
    if "head.weight" in weights:
        return "m2d_2025"
    raise CheckpointError(source, "cannot tell which tagger this is: no 'm2d.backbone.*' "
                                  "(2026, 4 channels), 'head.tracks.*' (2026, 1 channel) or "
                                  "'head.weight' (2025) keys")


def tagger_config_from_weights(weights, source):
    """The ``model:`` section of the tagger whose (prefix-free) weights these are.

    The type comes from the key layout: ``m2d.backbone.*`` (4-channel 2026 tagger), ``head.tracks.*``
    (2026 slot head on channel 0) or ``head.weight`` (2025 18-way head). The M2D width and depth
    come from the shapes; the number of heads is implied for ViT-Base (768-d: 12) only, any other
    width needs a config file.
    """
    kind = tagger_kind_from_weights(weights, source)
    if kind == "beats":
        raise CheckpointError(source, "a BEATs tagger: its encoder size is not all in the weights; "
                                      "give its config file (infer: --tagger_config)")
    backbone = {"m2d_2026_4c": "m2d.backbone.", "sed": "model.m2d.backbone."}.get(kind, "backbone.")
    embed_dim = int(weights[backbone + "cls_token"].shape[-1])
    depth = _count_blocks(weights, backbone + "blocks.")
    if embed_dim != FULL_SIZE_EMBED_DIM:
        raise CheckpointError(source, f"an M2D encoder of width {embed_dim} (not ViT-Base): its "
                                      "number of attention heads cannot be read from the weights; "
                                      "give the tagger's config file (infer: --tagger_config; run.sh: "
                                      "--tagger_checkpoint_config)")
    m2d = {"embed_dim": embed_dim, "depth": depth, "num_heads": embed_dim // 64}
    if kind == "m2d_2025" and tuple(weights["head.weight"].shape)[0] != constants.N_CLASSES:
        raise CheckpointError(source, f"a 2025 head with {weights['head.weight'].shape[0]} classes, "
                                      f"expected {constants.N_CLASSES}")
    if kind == "sed":
        n_classes = int(weights["strong_head.weight"].shape[0])
        if n_classes != constants.N_CLASSES:
            raise CheckpointError(source, f"an SED head with {n_classes} classes, expected "
                                          f"{constants.N_CLASSES}")
        return {"type": kind, "m2d": m2d, "use_head_norm": "head_norm.running_mean" in weights}
    return {"type": kind, "m2d": m2d}


def separator_config_from_weights(weights, source):
    """The ``model:`` section of the ResUNet30 whose (prefix-free) weights these are.

    ResUNet (18-d query) or ResUNetK (54-d) from ``label_embedding.0.weight``; the STFT size from
    the fixed DFT kernels; widths from the encoder convolutions; the mask type from the number of
    mask maps per (slot, channel). The hop length is not in the weights: the DCASE baseline's 160
    is assumed (give a config file for anything else).
    """
    cpjku = sorted({key.split(".", 1)[0] for key in weights} & {"sed", "time_film", "injection",
                                                                  "dprnn", "feedback_bn"})
    if cpjku:
        raise CheckpointError(source, f"an AudioSep-SED separator (keys {', '.join(cpjku)}.*): its "
                                      "SED and switches cannot all be read from the weights; give "
                                      "its config file (infer: --separator_config; run.sh: "
                                      "--separator_checkpoint_config)")
    if KUBIG_ANCHOR in weights:
        raise CheckpointError(source, "an end-to-end (kubig) separator: its encoder and head sizes "
                                      "are not all in the weights; give its config file (infer: "
                                      "--separator_config; run.sh: --separator_checkpoint_config)")
    if "base.encoder1.blocks.0.conv1.weight" in weights:
        raise CheckpointError(source, "an attentive ResUNeXt (keys base.encoder1.blocks.*): its "
                                      "blocks per level, cardinality and switches are not all in "
                                      "the weights; give its config file (infer: "
                                      "--separator_config; run.sh: --separator_checkpoint_config)")
    if "label_embedding.0.weight" not in weights:
        raise CheckpointError(source, "no 'label_embedding.0.weight': not a label-queried ResUNet30 "
                                      "(an AudioSep file initialises a separator through its config)")
    condition_size, label_len = (int(n) for n in weights["label_embedding.0.weight"].shape)
    if label_len == constants.N_CLASSES:
        kind, slots = "resunet", 1
    elif label_len == constants.MAX_TARGETS * constants.N_CLASSES:
        kind, slots = "resunetk", constants.MAX_TARGETS
    else:
        raise CheckpointError(source, f"a label query of {label_len} values: neither ResUNet (18) "
                                      f"nor ResUNetK (54)")
    n_fft = int(weights["base.stft.conv_real.weight"].shape[-1])
    channels = [int(weights[f"base.encoder_block{i}.conv_block1.conv1.weight"].shape[0])
                for i in range(1, 7)]
    bottleneck = int(weights["base.conv_block7a.conv_block1.conv1.weight"].shape[0]) if (
        "base.conv_block7a.conv_block1.conv1.weight" in weights) else channels[-1]
    in_features = int(weights["base.pre_conv.weight"].shape[1])
    input_channels = (int(weights["base.out_conv.weight"].shape[1])
                      if "base.out_conv.weight" in weights else constants.N_FOA_CHANNELS)
    maps = int(weights["base.after_conv.weight"].shape[0]) // (slots * input_channels)
    cfg = {"type": kind, "n_fft": n_fft, "hop_length": 160, "channels": channels,
           "bottleneck_channels": bottleneck, "condition_size": condition_size}
    if "mask_prior.weight" in weights:  # the per-class frequency bias switch
        cfg["class_freq_bias"] = True
    if "frame_gate.out.weight" in weights:  # the per-class frame gate switch
        cfg["class_frame_gate"] = True
        cfg["frame_gate_channels"] = int(weights["frame_gate.conv1.weight"].shape[0])
        cfg["frame_gate_layers"] = sum(1 for key in weights
                                       if re.fullmatch(r"frame_gate\.conv\d+\.weight", key))
        rows = int(weights["frame_gate.out.weight"].shape[0])
        if rows % constants.N_CLASSES:
            raise CheckpointError(source, f"frame_gate.out has {rows} rows: not a multiple of "
                                          f"the {constants.N_CLASSES} classes")
        cfg["frame_gate_bands"] = rows // constants.N_CLASSES
    if maps == 3:
        cfg["mask_type"] = "mag_phase"
    elif in_features == 2 * input_channels:
        raise CheckpointError(source, "real/imaginary input features with 2 mask maps: a "
                                      "'real_imag' or a 'complex' mask, the weights cannot tell; "
                                      "give the separator's config file (infer: --separator_config; "
                                      "run.sh: --separator_checkpoint_config)")
    else:
        raise CheckpointError(source, f"{maps} mask maps per slot and channel: not a ResUNet30 "
                                      "layout this toolkit knows")
    return cfg


def read_model_config(value, source):
    """A ``model:`` section from a dict or from a recipe YAML file (its ``model`` entry)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return copy.deepcopy(value)
    path = str(value)
    if not os.path.isfile(path):
        raise CheckpointError(path, f"config file for {source} does not exist")
    with open(path) as handle:
        try:
            cfg = yaml.safe_load(handle) or {}
        except yaml.YAMLError as err:
            raise CheckpointError(path, f"not valid YAML ({err})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(path, "has no 'model:' section (a stage-2/3 config or an experiment's "
                                    "config.yaml is expected)")
    return copy.deepcopy(cfg["model"])


def is_trainer_checkpoint(checkpoint):
    """Whether a loaded file is one of our trainer's ``checkpoint_*.pt``."""
    return isinstance(checkpoint.get("model"), dict) and "optimizer" in checkpoint and "step" in checkpoint


def load_model_file(path, role, model_cfg=None):
    """Build a tagger or separator from a model file and load its weights strictly, for inference.

    ``path`` may be a released DCASE checkpoint (Lightning: ``m2dat.ckpt``, ``m2dat_1c.ckpt``,
    ``m2dat_4c.ckpt``, ``resunet.ckpt``, ``resunetk.ckpt``), one of our trainer's
    ``checkpoint_*.pt``, or a plain state_dict file, with or without a key prefix (found by
    suffix-matching a known module key, as the DCASE loader does). The architecture comes from, in
    this order: ``model_cfg`` (a ``model:`` dict or a YAML file with one); the ``config.yaml``
    next to one of our checkpoints; the weights themselves (:func:`tagger_config_from_weights`,
    :func:`separator_config_from_weights`). Every key and shape must match (a mismatch names the
    file and the keys). The model is returned in eval mode with every parameter frozen: nothing
    is trained or updated, BatchNorm statistics included.

    Returns ``(model, model_cfg, description)``.
    """
    if role not in ("tagger", "separator"):
        raise ValueError(f"role must be 'tagger' or 'separator', got {role!r}")
    path = str(path)
    checkpoint = load_checkpoint_file(path)
    weights = extract_state_dict(checkpoint, prefixes=(), source=path)
    anchors = TAGGER_ANCHORS if role == "tagger" else (SEPARATOR_ANCHOR, KUBIG_ANCHOR)
    if role == "tagger" and any(key.endswith("strong_head.weight") for key in weights):
        anchors = (SED_TAGGER_ANCHOR,)  # the SED tagger nests its encoder as model.m2d.
    if role == "tagger" and any(key.endswith(BEATS_TAGGER_ANCHOR) for key in weights):
        anchors = (BEATS_TAGGER_ANCHOR,)
    prefix = None
    for anchor in anchors:
        prefix = detect_prefix(weights, anchor)
        if prefix is not None:
            break
    if prefix is None:
        raise CheckpointError(path, f"no key ends with {' or '.join(map(repr, anchors))}: not a "
                                    f"{role} checkpoint (first keys: {list(weights)[:4]})")
    weights = strip_prefix(weights, prefix)
    cfg, origin = read_model_config(model_cfg, path), "the given config"
    if cfg is None and is_trainer_checkpoint(checkpoint):
        beside = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
        if os.path.isfile(beside):
            cfg, origin = read_model_config(beside, path), beside
    if cfg is None:
        detect = tagger_config_from_weights if role == "tagger" else separator_config_from_weights
        try:
            cfg, origin = detect(weights, path), "the weights"
        except KeyError as err:
            raise CheckpointError(path, f"key {err} is missing: not a {role} layout this toolkit "
                                        "knows") from None
    for key in START_WEIGHT_KEYS:  # the file's weights replace them
        cfg.pop(key, None)
    if isinstance(cfg.get("sed"), dict):
        cfg["sed"] = {k: v for k, v in cfg["sed"].items() if k not in START_WEIGHT_KEYS}
    if role == "tagger":
        cfg["type"] = cfg.get("type") or tagger_kind_from_weights(weights, path)
        model = build_tagger(cfg)
    else:
        model = build_separator(cfg)
    load_strict(model, weights, source=path)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    kind = "trainer checkpoint" if is_trainer_checkpoint(checkpoint) else (
        "Lightning checkpoint" if isinstance(checkpoint.get("state_dict"), dict) else "state_dict file")
    description = (f"{path}: {kind}, key prefix {prefix!r}, {model.kind} "
                   f"(architecture from {origin})")
    return model, cfg, description
