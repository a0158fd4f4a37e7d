"""REDUX's attentive ResUNeXt separator (SPEC §7.3; no public code exists, built from the report).

The ResUNet30 front and back end of :mod:`s5lib.models.resunet` (per-channel STFT, ``bn0`` over
frequency, 1x1 ``pre_conv``, mask maps per (slot, channel), learned channel mix, iSTFT) and its
label conditioning (label MLP -> one additive FiLM bias per BatchNorm), with another U-Net between:

* **ResNeXt blocks** (:class:`~s5lib.models.blocks.ResNeXtBlock`): three convolutions, each preceded by BatchNorm (+ the
  FiLM bias) and LeakyReLU: 1x1 to ``G_C`` channels, grouped 3x3 (cardinality ``C``) to ``G_C``,
  1x1 to the output width, with ``G_C = floor(4 * O / 32) * C`` (report eq. 1; ``O`` the block's
  output width; at least ``C``). The shortcut is the identity, or a 1x1 convolution when the
  widths differ.
* **Encoder**: 5 levels (Table 1: 32->32, 32->64, 64->128, 128->256, 256->384), each
  ``blocks_per_level`` ResNeXt blocks (the report: eight) then 2x2 average pooling; the features
  before pooling are the level's skip.
* **Intermediate**: ``intermediate_blocks`` (three) ResNeXt blocks 384->384 at the most compressed
  resolution.
* **Decoder**: 5 levels (384->384, 384->256, 256->128, 128->64, 64->32): BatchNorm (+ FiLM) and
  LeakyReLU, a 2x2 transposed convolution, the attentive residual path gating the level's skip,
  the concatenation [up-sampled, gated skip], then ``blocks_per_level`` ResNeXt blocks.
* **Attentive residual path** (:class:`~s5lib.models.blocks.AttentionGate`, after Attention U-Net with the extra
  convolutions of Sgouros et al.): the skip and the up-sampled decoder features each through a
  ``attention_kernel`` x ``attention_kernel`` convolution + BatchNorm, summed, LeakyReLU (the
  report's final activation), a 1x1 convolution to one map, sigmoid: the skip is multiplied by
  that map. All weights zero: the map is 0.5 everywhere.
* **SpecAugment** (``spec_augment``): during training only, ``n_freq_masks`` bands of up to
  ``freq_mask`` bins and ``n_time_masks`` spans of up to ``time_mask`` frames (widths uniform in
  [0, F], start uniform; each sample its own) are set to zero in the normalised U-Net input (zero
  = the per-bin mean after ``bn0``). The masks still multiply the clean mixture STFT, so the
  targets stay reachable. The report trains without it first and then continues with it (the
  recipe's stage 3 then 4).

Choices where the report is silent (the recipe README lists them): the ResNeXt blocks use
pre-activation (BN + LeakyReLU before every convolution, as the baseline's residual blocks);
FiLM biases follow the baseline's rule "one bias after every BatchNorm" in every block
(``film_scope: all``) or only in the encoder and intermediate blocks (``film_scope: encoder``,
the report's literal text); the gate has no BatchNorm after its last convolution; the gate's
inner width is half the level's width.

Sizes: :func:`resunext_full_config` is the full-size model (n_fft 1024 / hop 160 as the DCASE
baseline, 3 slots); its parameter count is in the recipe README and checked by the tests.
"""
from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import (LEAKY_SLOPE, AttentionGate, ResNeXtStack, random_grid_keep,
                     sub_biases as _sub, xavier_init as _xavier)
from .resunet import MaskingUNetBase, ResUNet30, ResUNetConfig

FILM_SCOPES = ("all", "encoder")
LEVELS = 5
ENCODER_NAMES = tuple(f"encoder{i}" for i in range(1, LEVELS + 1))
DECODER_NAMES = tuple(f"decoder{i}" for i in range(1, LEVELS + 1))
INTERMEDIATE_NAME = "intermediate"


@dataclass
class ResUNeXtConfig(ResUNetConfig):
    """Every size and switch of the attentive ResUNeXt; the defaults are the report's model with
    the DCASE baseline's STFT (1024 / 160) and its 3-slot (ResUNetK) query."""

    ENCODER_LEVELS = LEVELS
    TIME_DOWNSAMPLE = 2 ** LEVELS
    FREQ_DOWNSAMPLE = 2 ** LEVELS

    num_slots: int = 3
    label_len: int = 54
    channels: Tuple[int, ...] = (32, 64, 128, 256, 384)   # encoder level outputs (Table 1)
    pre_channels: int = 32              # pre_conv output = encoder level 1 input
    bottleneck_channels: int = 384      # the intermediate blocks' width
    blocks_per_level: int = 8           # ResNeXt blocks per encoder / decoder level
    intermediate_blocks: int = 3
    cardinality: int = 8
    film_scope: str = "all"             # all: every BatchNorm | encoder: encoder + intermediate only
    attention: bool = True              # False: the plain skip concatenation of the ResUNet
    attention_kernel: int = 3
    spec_augment: bool = False
    freq_mask: int = 80                 # F: largest band width, in bins
    time_mask: int = 80                 # T: largest span, in frames
    n_freq_masks: int = 1
    n_time_masks: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.film_scope not in FILM_SCOPES:
            raise ValueError(f"film_scope must be one of {FILM_SCOPES}, not {self.film_scope!r}")
        for name in ("blocks_per_level", "cardinality", "pre_channels", "attention_kernel"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.attention_kernel % 2 == 0:
            raise ValueError(f"attention_kernel must be odd, got {self.attention_kernel}")
        for name in ("intermediate_blocks", "freq_mask", "time_mask", "n_freq_masks", "n_time_masks"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if int(self.intermediate_blocks) == 0 and self.encoder_widths[-1] != self.bottleneck_width:
            raise ValueError("intermediate_blocks: 0 needs bottleneck_channels equal to the last "
                             "encoder width")

    @property
    def pre_width(self):
        return max(1, int(round(self.pre_channels * self.width)))


def resunext_full_config(**overrides):
    """The full-size attentive ResUNeXt (report Table 1, 8 blocks per level, C = 8)."""
    return ResUNeXtConfig(**overrides)


class EncoderLevel(nn.Module):
    def __init__(self, n, in_channels, out_channels, cardinality, momentum):
        super().__init__()
        self.blocks = ResNeXtStack(n, in_channels, out_channels, cardinality, momentum, True)

    def film_sizes(self):
        return [("blocks->" + name, size) for name, size in self.blocks.film_sizes()]

    def forward(self, x, biases):
        features = self.blocks.run(x, _sub(biases, "blocks"))
        return F.avg_pool2d(features, kernel_size=2), features


class DecoderLevel(nn.Module):
    """BN (+ FiLM) -> LeakyReLU -> 2x2 transposed conv; gate the skip; concat; ResNeXt blocks."""

    def __init__(self, n, in_channels, out_channels, cfg, conditioned):
        super().__init__()
        self.conditioned = conditioned
        self.bn = nn.BatchNorm2d(in_channels, momentum=cfg.momentum)
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, bias=False)
        _xavier(self.up)
        self.gate = AttentionGate(out_channels, cfg.attention_kernel, cfg.momentum) if cfg.attention else None
        self.blocks = ResNeXtStack(n, 2 * out_channels, out_channels, cfg.cardinality, cfg.momentum,
                                   conditioned)

    def film_sizes(self):
        if not self.conditioned:
            return []
        own = [("beta", self.bn.num_features)]
        return own + [("blocks->" + name, size) for name, size in self.blocks.film_sizes()]

    def forward(self, x, skip, biases):
        h = self.bn(x)
        if self.conditioned:
            h = h + biases["beta"]
        up = self.up(F.leaky_relu(h, LEAKY_SLOPE))
        if self.gate is not None:
            skip = self.gate(skip, up)
        return self.blocks.run(torch.cat((up, skip), dim=1), _sub(biases, "blocks"))


class ResUNeXtBase(MaskingUNetBase):
    """The attentive ResUNeXt U-Net with the shared STFT front end and mask back end."""

    def __init__(self, config: ResUNeXtConfig):
        super().__init__()
        cfg = config
        widths, pre, middle = cfg.encoder_widths, cfg.pre_width, cfg.bottleneck_width
        self.build_front_end(cfg, pre)
        n = int(cfg.blocks_per_level)
        for name, cin, cout in zip(ENCODER_NAMES, (pre,) + widths[:-1], widths):
            self.add_module(name, EncoderLevel(n, cin, cout, cfg.cardinality, cfg.momentum))
        self.add_module(INTERMEDIATE_NAME, ResNeXtStack(int(cfg.intermediate_blocks), widths[-1], middle,
                                                        cfg.cardinality, cfg.momentum, True))
        decoder_in = (middle,) + tuple(reversed(widths[1:]))
        decoder_out = tuple(reversed(widths))
        conditioned = cfg.film_scope == "all"
        for name, cin, cout in zip(DECODER_NAMES, decoder_in, decoder_out):
            self.add_module(name, DecoderLevel(n, cin, cout, cfg, conditioned))
        self.build_back_end(widths[0])

    def film_sizes(self):
        sizes = []
        for name in ENCODER_NAMES + (INTERMEDIATE_NAME,) + DECODER_NAMES:
            sizes += [(f"{name}->{inner}", size) for inner, size in getattr(self, name).film_sizes()]
        return sizes

    def augment(self, x):
        """SpecAugment on the normalised input (B, C, T, F), training mode only."""
        cfg = self.config
        if not (cfg.spec_augment and self.training):
            return x
        batch, _, frames, bins = x.shape
        return x * random_grid_keep(batch, (frames, cfg.time_mask, cfg.n_time_masks),
                                    (bins, cfg.freq_mask, cfg.n_freq_masks), x.device, x.dtype)

    def unet(self, features, film, extra_film=None, extra_channels=None, bottleneck_fn=None):
        """Input features (B, C', T, F) -> mask maps (B, S*C*K, T, F); ``extra_film`` (time-varying
        biases) is not supported by this U-Net."""
        if extra_film:
            raise ValueError("the ResUNeXt takes no extra FiLM terms")
        x = self.unet_input(features, extra_channels)
        skips = []
        for name in ENCODER_NAMES:
            x, skip = getattr(self, name)(x, _sub(film, name))
            skips.append(skip)
        x = getattr(self, INTERMEDIATE_NAME).run(x, _sub(film, INTERMEDIATE_NAME))
        if bottleneck_fn is not None:
            x = bottleneck_fn(x)
        for name, skip in zip(DECODER_NAMES, reversed(skips)):
            x = getattr(self, name)(x, skip, _sub(film, name))
        return self.unet_output(x, features.shape[2])


class AttResUNeXt(ResUNet30):
    """Label-queried attentive ResUNeXt: ``forward(mixture, condition) -> (B, num_slots, L)``, the
    interface (and the switches ``mask_init``, ``class_freq_bias``, ``zero_silent_slots``) of
    :class:`~s5lib.models.resunet.ResUNet30`."""

    base_class = ResUNeXtBase
    config_class = ResUNeXtConfig
