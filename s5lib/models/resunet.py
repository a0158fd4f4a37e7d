"""ResUNet30 separator (DCASE 2025/2026 baseline ResUNet / ResUNetK, AudioSep's ResUNet30).

Structure (SPEC 7.1): per-channel STFT -> input features (T, F) -> BatchNorm over frequency ->
pad time to a multiple of 32, drop the Nyquist bin -> 1x1 ``pre_conv`` -> 6 residual encoder blocks
(channels 32, 64, 128, 256, 384, 384; average pooling (2,2) x5 then (1,2)) -> bottleneck block (384)
-> 6 mirrored decoder blocks (transposed conv, concatenated skip, residual block) -> 1x1
``after_conv`` to the mask maps -> masks applied to the mixture STFT per (slot, input channel) ->
learned 1x1 ``out_conv`` mix of the input channels -> iSTFT.

Conditioning is FiLM with an additive bias only: the condition vector (a label one-hot through
``label_embedding``, or a 512-d query embedding for AudioSep) goes through one ``Linear`` per
BatchNorm, and the result is added after that BatchNorm. The ``Linear`` layers are registered under
the baseline's flat ``'->'``-joined names (``film.decoder_block3->conv_block2->beta1.weight``).

Checkpoint compatibility: the module names, shapes and dtypes equal the reference ``state_dict()``
of the upstream code, so the released checkpoints load strictly (see ``s5lib.models.checkpoints``):

* ``ResUNetConfig.dcase2025_resunet()``  -> 29,869,523 parameters (``resunet.ckpt``),
* ``ResUNetConfig.dcase2025_resunetk()`` -> 29,888,747 parameters (``resunetk.ckpt``; 2026 too),
* ``ResUNetConfig.audiosep()``           -> 39,034,949 parameters (``audiosep_base_4M_steps.ckpt``
  after ``audiosep_key_map``: keep ``ss_model.base.*``/``ss_model.film.*``, strip ``ss_model.``).

These counts include the frozen DFT kernels of the STFT/iSTFT (``requires_grad=False``), as the
reference counts do. Quirks kept for compatibility: decoder blocks own a ``bn2`` that forward never
uses (and a FiLM ``beta2`` Linear for it); ``out_conv``'s bias is added to both the real and the
imaginary part of the mixed spectrum.

Mask variants (``mask_type``, SPEC 7.5):

* ``'mag_phase'`` (baseline): 3 maps per (slot, channel): ``sigmoid`` magnitude mask and two
  ``tanh`` maps normalised to a unit phasor that rotates the mixture phase; input feature |Y|.
* ``'real_imag'`` (SRPOL): 2 maps: ``X = M_re * Re(Y) + i * M_im * Im(Y)``; input features Re/Im.
* ``'complex'``: 2 maps forming a complex ratio mask, ``X = (M_re + i M_im) * Y``; input Re/Im.

Switches for short trainings (both off by default; off, the ``state_dict`` is upstream's):

* ``mask_init=g``: ``after_conv`` starts with zero weights and biases chosen so that every mask
  is the real gain ``g`` with the mixture phase (mag_phase: ``sigmoid^-1(g)`` and a phasor of
  angle 0; complex: ``g + 0i``; real_imag: ``M_re = M_im = g``). The first estimate is then
  ``g`` x channel 0 of the mixture (an SDRi near the silence anchor) instead of a randomly
  rotated half-mixture, and the gradient reaches the U-Net as soon as ``after_conv`` moves.
* ``class_freq_bias``: ``mask_prior``, a ``Linear`` from each slot's label part to one bias per
  (channel, mask map, frequency bin) added to that slot's mask maps (zero at start). A
  convolutional U-Net is (nearly) shift-equivariant along frequency, so a class's spectral
  envelope is slow for it to learn; this term learns it in a few updates.
* ``class_frame_gate``: ``frame_gate``, a small 1-D convolutional detector on channel 0's log
  power spectrum (BatchNorm over bins, ``frame_gate_layers`` time convolutions of kernel 5 and
  ``frame_gate_channels`` with ReLU, dilated 1, 2, 4, ... so that L layers see 1 + 4 (2^L - 1)
  frames, then a 1x1 convolution to one logit per class and frame). Each slot's label part
  selects its classes' logits, and the result is added to that slot's magnitude-mask maps at
  every bin of the frame: a per-frame gain that can close the mask where the queried class is
  silent. Its last layer starts at zero, so a fresh model is unchanged. Only for ``mag_phase``
  masks. With ``frame_gate_bands`` B > 1 the last layer gives B logits per class and frame
  instead, one per band of B mel-spaced centre bins, linearly interpolated over the bins in
  between (:func:`band_interpolation`): a per-class gain that varies in time *and* frequency
  (the layout of ``frame_gate.out`` grows to 18 B rows; B = 1 is the gate above).

As upstream, the U-Net never sees the Nyquist bin: its mask maps are zero-padded, so that bin is
always zero in the output (mag_phase: a zero phasor; ratio masks: a zero mask).

Speed (one H100, ResUNetK, batch 16 x 4 ch x 10 s at 32 kHz, train step with AdamW): bf16 autocast
27 mixtures/s; + channels_last 43/s; + ``torch.compile`` 97/s (peak 37 GiB). The forward has no
data-dependent Python control flow (``torch.compile(fullgraph=True)`` traces it whole).
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s5lib import constants

from .blocks import LEAKY_SLOPE, ConditionMLP, sub_biases as _sub, xavier_init as _xavier
from .checkpoints import (CheckpointError, audiosep_key_map, detect_prefix, extract_state_dict,
                          load_checkpoint_file, load_strict, strip_prefix)
from .stft import ISTFT, STFT

MASK_MAPS_PER_TYPE = {"mag_phase": 3, "real_imag": 2, "complex": 2}
PHASOR_FLOOR = 1e-10      # floor of |phasor| before normalising the phase maps (as torchlibrosa)
MAGNITUDE_FLOOR = 1e-10   # floor of |Y|^2 before the square root (mixture phase at silent bins)
TIME_DOWNSAMPLE = 32      # 2 ** (number of time-pooling encoder blocks)
FREQ_DOWNSAMPLE = 64      # 2 ** (number of frequency-pooling encoder blocks)


@dataclass
class ResUNetConfig:
    """Every size and choice of a ResUNet30 separator. The defaults are the DCASE 2025 ResUNet."""

    input_channels: int = 4            # microphone channels of the mixture
    output_channels: int = 1           # channels per separated source (1: the channel-0 reference)
    num_slots: int = 1                 # sources estimated per pass (upstream: target_sources_num)
    label_len: int = 18                # length of the condition vector (all slots together)
    condition_size: int = 512          # width of the FiLM input (the label embedding's width)
    use_label_embedding: bool = True   # False: the condition goes straight into FiLM (AudioSep)
    channel_mix: bool = True           # learned 1x1 mix of the input channels (``out_conv``)
    zero_silent_slots: bool = True     # zero the output of slots whose label part is all zero
    n_fft: int = 1024
    hop_length: int = 160
    win_length: Optional[int] = None   # None: n_fft
    window: str = "hann"
    center: bool = True
    pad_mode: str = "reflect"
    channels: Tuple[int, ...] = (32, 64, 128, 256, 384, 384)   # encoder block widths
    bottleneck_channels: int = 384
    width: float = 1.0                 # multiplier applied to ``channels`` and the bottleneck
    momentum: float = 0.01             # BatchNorm momentum
    mask_type: str = "mag_phase"       # 'mag_phase' | 'real_imag' | 'complex'
    input_features: Optional[str] = None   # 'magnitude' | 'real_imag'; None: follows mask_type
    ratio_mask_bound: Optional[float] = None   # real_imag/complex masks: b*tanh(x/b); None: linear
    channels_last: bool = False        # U-Net weights and activations in channels_last format
    # Switches for short (CPU) trainings; the defaults are upstream's (same state_dict layout).
    mask_init: Optional[float] = None  # g in (0, 1): start as "g x mixture, mixture phase"
    class_freq_bias: bool = False      # label-conditioned per-(map, bin) bias of the mask maps
    class_frame_gate: bool = False     # label-conditioned per-frame gain of the magnitude masks
    frame_gate_channels: int = 64      # width of the frame-gate detector
    frame_gate_layers: int = 2         # its dilated time convolutions (2: 13 frames of context)
    frame_gate_bands: int = 1          # >1: a logit per class, mel band and frame (time-frequency)
    # U-Net input channels given besides the mixture features (CP-JKU's refinement feedback);
    # their pre_conv kernel starts at zero, so a fresh model ignores them
    extra_input_channels: int = 0

    # U-Net geometry (a subclass with other levels overrides these)
    ENCODER_LEVELS = 6
    TIME_DOWNSAMPLE = TIME_DOWNSAMPLE
    FREQ_DOWNSAMPLE = FREQ_DOWNSAMPLE

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) != self.ENCODER_LEVELS:
            raise ValueError(f"{type(self).__name__} needs {self.ENCODER_LEVELS} encoder widths, "
                             f"got {self.channels}")
        if self.mask_type not in MASK_MAPS_PER_TYPE:
            raise ValueError(f"mask_type must be one of {sorted(MASK_MAPS_PER_TYPE)}, "
                             f"not {self.mask_type!r}")
        if self.input_features is None:
            self.input_features = "magnitude" if self.mask_type == "mag_phase" else "real_imag"
        if self.input_features not in ("magnitude", "real_imag"):
            raise ValueError(f"input_features must be 'magnitude' or 'real_imag', "
                             f"not {self.input_features!r}")
        if (self.n_fft // 2) % self.FREQ_DOWNSAMPLE != 0:
            raise ValueError(f"n_fft // 2 must be a multiple of {self.FREQ_DOWNSAMPLE} "
                             f"(got n_fft={self.n_fft})")
        if self.label_len % self.num_slots != 0:
            raise ValueError(f"label_len {self.label_len} is not a multiple of num_slots "
                             f"{self.num_slots}")
        if not self.channel_mix and self.input_channels != self.output_channels:
            raise ValueError("without channel_mix, input_channels must equal output_channels")
        if self.mask_init is not None:
            self.mask_init = float(self.mask_init)
            if not 0.0 < self.mask_init < 1.0:
                raise ValueError(f"mask_init must be in (0, 1) or None, got {self.mask_init}")
            if self.ratio_mask_bound is not None and self.mask_init >= self.ratio_mask_bound:
                raise ValueError(f"mask_init {self.mask_init} must be below ratio_mask_bound "
                                 f"{self.ratio_mask_bound}")
        if self.class_frame_gate and self.mask_type != "mag_phase":
            raise ValueError(f"class_frame_gate needs mag_phase masks, not {self.mask_type!r}")
        if int(self.frame_gate_channels) < 1:
            raise ValueError(f"frame_gate_channels must be >= 1, got {self.frame_gate_channels}")
        if int(self.frame_gate_layers) < 1:
            raise ValueError(f"frame_gate_layers must be >= 1, got {self.frame_gate_layers}")
        if not 1 <= int(self.frame_gate_bands) <= self.n_fft // 2:
            raise ValueError(f"frame_gate_bands must be in [1, n_fft // 2 = {self.n_fft // 2}], "
                             f"got {self.frame_gate_bands}")

    @property
    def encoder_widths(self):
        """The encoder block widths after the ``width`` multiplier."""
        return tuple(max(1, int(round(c * self.width))) for c in self.channels)

    @property
    def bottleneck_width(self):
        return max(1, int(round(self.bottleneck_channels * self.width)))

    @property
    def mask_maps(self):
        """Mask maps per (slot, channel): 3 for mag_phase, 2 for real_imag/complex."""
        return MASK_MAPS_PER_TYPE[self.mask_type]

    @property
    def slot_label_len(self):
        return self.label_len // self.num_slots

    @classmethod
    def dcase2025_resunet(cls, **overrides):
        """DCASE 2025 baseline ResUNet: one label query, 4 channels in, channel-0 reference out."""
        return cls(**{**dict(num_slots=1, label_len=18), **overrides})

    @classmethod
    def dcase2025_resunetk(cls, **overrides):
        """DCASE 2025/2026 baseline ResUNetK: 3 slots from a 54-d query (3 concatenated one-hots)."""
        return cls(**{**dict(num_slots=3, label_len=54), **overrides})

    @classmethod
    def audiosep(cls, **overrides):
        """AudioSep ResUNet30(1, 1, condition_size=512): 512-d query straight into FiLM, STFT 2048/320."""
        settings = dict(input_channels=1, output_channels=1, num_slots=1, label_len=512,
                        condition_size=512, use_label_embedding=False, channel_mix=False,
                        zero_silent_slots=False, n_fft=2048, hop_length=320)
        return cls(**{**settings, **overrides})


# ----------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------
def _add_time_bias(x, bias):
    """Add a FiLM bias of shape (B, C, 1, 1) or (B, C, T', 1); T' is resampled to x's time axis."""
    if bias is None:
        return x
    if bias.dim() == 3:
        bias = bias[..., None]
    if bias.shape[2] != 1 and bias.shape[2] != x.shape[2]:
        bias = F.interpolate(bias, size=(x.shape[2], 1), mode="bilinear", align_corners=False)
    return x + bias


class ConvBlockRes(nn.Module):
    """Pre-activation residual block: (BN + bias -> LeakyReLU -> 3x3 conv) x2, 1x1 conv shortcut."""

    def __init__(self, in_channels, out_channels, momentum):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, momentum=momentum)
        self.bn2 = nn.BatchNorm2d(out_channels, momentum=momentum)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        for layer in (self.conv1, self.conv2) + ((self.shortcut,) if self.shortcut is not None else ()):
            _xavier(layer)

    def film_sizes(self):
        """(name, width) of each FiLM bias this block takes, in reference order."""
        return [("beta1", self.bn1.num_features), ("beta2", self.bn2.num_features)]

    def forward(self, x, beta1, beta2, extra1=None, extra2=None):
        h = _add_time_bias(self.bn1(x) + beta1, extra1)
        h = self.conv1(F.leaky_relu(h, LEAKY_SLOPE))
        h = _add_time_bias(self.bn2(h) + beta2, extra2)
        h = self.conv2(F.leaky_relu(h, LEAKY_SLOPE))
        residual = x if self.shortcut is None else self.shortcut(x)
        return residual + h


class EncoderBlock(nn.Module):
    """A residual block followed by average pooling; returns (pooled, before pooling)."""

    def __init__(self, in_channels, out_channels, pool, momentum):
        super().__init__()
        self.conv_block1 = ConvBlockRes(in_channels, out_channels, momentum)
        self.pool = tuple(pool)

    def film_sizes(self):
        return [("conv_block1->" + name, size) for name, size in self.conv_block1.film_sizes()]

    def forward(self, x, biases, extra):
        features = self.conv_block1(x, biases["conv_block1->beta1"], biases["conv_block1->beta2"],
                                    extra.get("conv_block1->beta1"), extra.get("conv_block1->beta2"))
        if self.pool == (1, 1):
            return features, features
        return F.avg_pool2d(features, kernel_size=self.pool), features


class DecoderBlock(nn.Module):
    """BN + bias -> LeakyReLU -> transposed conv (up-sampling), concat the skip, residual block.

    ``bn2`` is never used in forward; it exists because the upstream checkpoints contain it.
    """

    def __init__(self, in_channels, out_channels, upsample, momentum):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=upsample,
                                        stride=upsample, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels, momentum=momentum)
        self.conv_block2 = ConvBlockRes(2 * out_channels, out_channels, momentum)
        self.bn2 = nn.BatchNorm2d(in_channels, momentum=momentum)
        _xavier(self.conv1)

    def film_sizes(self):
        own = [("beta1", self.bn1.num_features), ("beta2", self.bn2.num_features)]
        return own + [("conv_block2->" + name, size) for name, size in self.conv_block2.film_sizes()]

    def forward(self, x, skip, biases, extra):
        h = _add_time_bias(self.bn1(x) + biases["beta1"], extra.get("beta1"))
        h = self.conv1(F.leaky_relu(h, LEAKY_SLOPE))
        h = torch.cat((h, skip), dim=1)
        return self.conv_block2(h, biases["conv_block2->beta1"], biases["conv_block2->beta2"],
                                extra.get("conv_block2->beta1"), extra.get("conv_block2->beta2"))


ENCODER_NAMES = tuple(f"encoder_block{i}" for i in range(1, 7))
DECODER_NAMES = tuple(f"decoder_block{i}" for i in range(1, 7))
BOTTLENECK_NAME = "conv_block7a"
ENCODER_POOLS = ((2, 2), (2, 2), (2, 2), (2, 2), (2, 2), (1, 2))
DECODER_UPSAMPLES = ((1, 2), (2, 2), (2, 2), (2, 2), (2, 2), (2, 2))


class MaskingUNetBase(nn.Module):
    """What every spectrogram-masking U-Net of the toolkit shares: the STFT front end (``stft``,
    ``istft``, ``bn0``, ``pre_conv``), the mask head (``after_conv``, masks, ``out_conv``, iSTFT)
    and the padding rules. A subclass builds its blocks between :meth:`build_front_end` and
    :meth:`build_back_end` (the registration order is the state_dict order) and implements
    ``unet(features, film, extra_film, extra_channels, bottleneck_fn)`` between
    :meth:`unet_input` and :meth:`unet_output`."""

    def build_front_end(self, config, width):
        cfg = self.config = config
        stft_args = dict(n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                         window=cfg.window, center=cfg.center, pad_mode=cfg.pad_mode)
        self.stft = STFT(**stft_args)
        self.istft = ISTFT(**stft_args)
        self.bn0 = nn.BatchNorm2d(cfg.n_fft // 2 + 1, momentum=cfg.momentum)
        self.feature_channels = cfg.input_channels * (1 if cfg.input_features == "magnitude" else 2)
        self.pre_conv = nn.Conv2d(self.feature_channels + cfg.extra_input_channels, width, 1)

    def build_back_end(self, width):
        cfg = self.config
        mask_channels = cfg.input_channels if cfg.channel_mix else cfg.output_channels
        self.mask_channels = mask_channels
        self.after_conv = nn.Conv2d(width, cfg.num_slots * mask_channels * cfg.mask_maps, 1)
        self.out_conv = nn.Conv2d(cfg.input_channels, cfg.output_channels, 1) if cfg.channel_mix else None
        for layer in (self.pre_conv, self.after_conv):
            _xavier(layer)
        if cfg.extra_input_channels:
            with torch.no_grad():
                self.pre_conv.weight[:, self.feature_channels:] = 0.0
        if cfg.mask_init is not None:
            self.init_identity_masks(cfg.mask_init)
        if self.out_conv is not None:
            # Start the channel mix as "take channel 0" (the reference channel) with no bias:
            # PyTorch's default bias (up to +-1/sqrt(C)) added to every STFT bin would swamp
            # mixtures at the DCASE levels (-50 dB) and cost thousands of updates to unlearn.
            with torch.no_grad():
                self.out_conv.weight.zero_()
                self.out_conv.weight[:, 0] = 1.0
                self.out_conv.bias.zero_()

    def init_identity_masks(self, gain):
        """Zero ``after_conv``'s weights and set its biases so every mask is ``gain`` x mixture."""
        cfg = self.config
        bias = torch.zeros(cfg.num_slots, self.mask_channels, cfg.mask_maps)
        if cfg.mask_type == "mag_phase":
            bias[..., 0] = torch.logit(torch.tensor(gain))
            bias[..., 1] = 5.0                     # phasor (tanh 5, tanh 0) -> angle 0
        else:
            # complex: M = g + 0i; real_imag scales Re and Im separately, so both maps are g
            scaled = slice(None) if cfg.mask_type == "real_imag" else 0
            value = gain
            if cfg.ratio_mask_bound is not None:
                bound = cfg.ratio_mask_bound
                value = bound * torch.atanh(torch.tensor(gain / bound))
            bias[..., scaled] = value
        with torch.no_grad():
            self.after_conv.weight.zero_()
            self.after_conv.bias.copy_(bias.flatten())

    # -- front end ---------------------------------------------------------------------------
    def analyse(self, mixture):
        """mixture (B, C, L) -> complex STFT (B, C, T, F) and U-Net input features (B, C', T, F)."""
        spec = self.stft.complex_spectrogram(mixture)
        if self.config.input_features == "magnitude":
            power = spec.real.square() + spec.imag.square()
            features = power.clamp(min=MAGNITUDE_FLOOR).sqrt()
        else:
            features = torch.cat((spec.real, spec.imag), dim=1)
        return spec, features

    def unet_input(self, features, extra_channels=None):
        """Input features (B, C', T, F) -> ``pre_conv`` output: ``bn0`` over frequency, the extra
        channels (already normalised) appended, time padded to a multiple of the U-Net's time
        down-sampling, the Nyquist bin dropped."""
        x = self.bn0(features.transpose(1, 3)).transpose(1, 3)
        if extra_channels is not None:
            x = torch.cat((x, extra_channels.to(x.dtype)), dim=1)
        x = self.augment(x)
        pad_frames = (-features.shape[2]) % self.config.TIME_DOWNSAMPLE
        x = F.pad(x, (0, 0, 0, pad_frames))[..., :-1]   # pad time, drop the Nyquist bin
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.pre_conv(x)

    def augment(self, x):
        """Training-time augmentation of the normalised input (none here; ResUNeXt's SpecAugment)."""
        return x

    def unet_output(self, x, num_frames):
        """Last decoder features -> mask maps with the Nyquist bin restored and the padding cut."""
        x = self.after_conv(x)
        return F.pad(x, (0, 1))[:, :, :num_frames, :]

    # -- back end ----------------------------------------------------------------------------
    def apply_masks(self, maps, spec):
        """Mask maps (B, S*M*K, T, F) and mixture STFT (B, C, T, F) -> masked real, imag (B, S, M, T, F)."""
        cfg = self.config
        batch, _, frames, bins = maps.shape
        maps = maps.float().reshape(batch, cfg.num_slots, self.mask_channels, cfg.mask_maps, frames, bins)
        spec = spec[:, None]
        if cfg.mask_type == "mag_phase":
            magnitude = (spec.real.square() + spec.imag.square()).clamp(min=MAGNITUDE_FLOOR).sqrt()
            mix_cos, mix_sin = spec.real / magnitude, spec.imag / magnitude
            mask_mag = torch.sigmoid(maps[:, :, :, 0])
            phasor_real, phasor_imag = torch.tanh(maps[:, :, :, 1]), torch.tanh(maps[:, :, :, 2])
            phasor_size = (phasor_real.square() + phasor_imag.square()).clamp(
                min=PHASOR_FLOOR ** 2).sqrt()
            mask_cos, mask_sin = phasor_real / phasor_size, phasor_imag / phasor_size
            out_magnitude = F.relu(magnitude * mask_mag)
            real = out_magnitude * (mix_cos * mask_cos - mix_sin * mask_sin)
            imag = out_magnitude * (mix_sin * mask_cos + mix_cos * mask_sin)
            return real, imag
        mask_real, mask_imag = maps[:, :, :, 0], maps[:, :, :, 1]
        if cfg.ratio_mask_bound is not None:
            bound = cfg.ratio_mask_bound
            mask_real, mask_imag = bound * torch.tanh(mask_real / bound), bound * torch.tanh(mask_imag / bound)
        if cfg.mask_type == "real_imag":
            return mask_real * spec.real, mask_imag * spec.imag
        return (mask_real * spec.real - mask_imag * spec.imag,
                mask_real * spec.imag + mask_imag * spec.real)

    def synthesise(self, real, imag, length):
        """Masked spectra (B, S, M, T, F) -> waveforms (B, S, O, length) after the channel mix."""
        batch, slots, channels, frames, bins = real.shape
        if self.out_conv is not None:
            flat = (batch * slots, channels, frames, bins)
            real = self.out_conv(real.reshape(flat))
            imag = self.out_conv(imag.reshape(flat))
            real = real.reshape(batch, slots, -1, frames, bins)
            imag = imag.reshape(batch, slots, -1, frames, bins)
        return self.istft(real, imag, length)

    def separate(self, spec, features, film, length, extra_film=None, map_bias=None,
                 extra_channels=None, bottleneck_fn=None):
        """One U-Net pass from an analysed mixture (:meth:`analyse`) to waveforms (B, S, O, length);
        ``map_bias``: an optional (B, S*M*K, 1 or T, F-1) bias added to the mask maps below the Nyquist
        bin; ``extra_channels``, ``bottleneck_fn``: see :meth:`unet`."""
        maps = self.unet(features, film, extra_film, extra_channels, bottleneck_fn)
        if map_bias is not None:
            maps = maps + F.pad(map_bias, (0, 1)).to(maps.dtype)
        real, imag = self.apply_masks(maps, spec)
        return self.synthesise(real, imag, length)


class ResUNet30Base(MaskingUNetBase):
    """The U-Net with its STFT front end and mask back end (upstream ``ResUNet30_Base``)."""

    def __init__(self, config: ResUNetConfig):
        super().__init__()
        widths, bottleneck = config.encoder_widths, config.bottleneck_width
        self.build_front_end(config, widths[0])
        momentum = config.momentum
        encoder_inputs = (widths[0],) + widths[:-1]
        for name, cin, cout, pool in zip(ENCODER_NAMES, encoder_inputs, widths, ENCODER_POOLS):
            self.add_module(name, EncoderBlock(cin, cout, pool, momentum))
        self.add_module(BOTTLENECK_NAME, EncoderBlock(widths[-1], bottleneck, (1, 1), momentum))
        decoder_inputs = (bottleneck,) + tuple(reversed(widths[1:]))
        decoder_outputs = tuple(reversed(widths))
        for name, cin, cout, up in zip(DECODER_NAMES, decoder_inputs, decoder_outputs, DECODER_UPSAMPLES):
            self.add_module(name, DecoderBlock(cin, cout, up, momentum))
        self.build_back_end(widths[0])

    def film_sizes(self):
        """Flat FiLM names ('encoder_block1->conv_block1->beta1', ...) and widths, in reference order."""
        sizes = []
        for name in ENCODER_NAMES + (BOTTLENECK_NAME,) + DECODER_NAMES:
            sizes += [(f"{name}->{inner}", size) for inner, size in getattr(self, name).film_sizes()]
        return sizes

    def unet(self, features, film, extra_film=None, extra_channels=None, bottleneck_fn=None):
        """U-Net from input features (B, C', T, F) to mask maps (B, S*C*K, T, F).

        ``extra_channels``: (B, extra_input_channels, T, F), already normalised, concatenated
        after ``bn0``; ``bottleneck_fn``: a function (B, C, T', F') -> (B, C, T', F') applied to
        the bottleneck block's output before the decoder (CP-JKU's injection and DPRNN).
        """
        extra_film = extra_film or {}
        x = self.unet_input(features, extra_channels)
        skips = []
        for name in ENCODER_NAMES:
            x, before_pool = getattr(self, name)(x, _sub(film, name), _sub(extra_film, name))
            skips.append(before_pool)
        x, _ = getattr(self, BOTTLENECK_NAME)(x, _sub(film, BOTTLENECK_NAME),
                                              _sub(extra_film, BOTTLENECK_NAME))
        if bottleneck_fn is not None:
            x = bottleneck_fn(x)
        for name, skip in zip(DECODER_NAMES, reversed(skips)):
            x = getattr(self, name)(x, skip, _sub(film, name), _sub(extra_film, name))
        return self.unet_output(x, features.shape[2])


def band_interpolation(bands, bins, sample_rate=constants.SAMPLE_RATE):
    """(bands, bins) float32 weights that spread one value per band over ``bins`` STFT bins (of
    ``sample_rate`` / 2 / bins Hz each): band centres equally spaced on the mel scale from bin 0 to
    bin ``bins - 1``, linear interpolation between neighbouring centres, so every column sums to
    1 (the frame gate's ``frame_gate_bands``; also the band energies of its training targets)."""
    bands, bins = int(bands), int(bins)
    if bands == 1:
        return torch.ones(1, bins)
    hz_per_bin = sample_rate / 2 / bins
    top = 2595.0 * np.log10(1.0 + (bins - 1) * hz_per_bin / 700.0)
    centres = 700.0 * (10.0 ** (np.linspace(0.0, top, bands) / 2595.0) - 1.0) / hz_per_bin
    eye = np.eye(bands)
    weights = np.stack([np.interp(np.arange(bins), centres, row) for row in eye])
    return torch.from_numpy(weights.astype(np.float32))


class FrameGate(nn.Module):
    """Per-class frame logits from channel 0's spectrum (``class_frame_gate``, see the module doc):
    ``forward(spec0) -> (B, n_classes, T)`` for a complex STFT ``spec0`` (B, T, F), or
    ``(B, n_classes, bands, T)`` with ``bands`` > 1."""

    def __init__(self, bins, n_classes, channels, momentum, layers=2, bands=1):
        super().__init__()
        self.bn = nn.BatchNorm1d(bins, momentum=momentum)
        self.layers = int(layers)
        self.n_classes, self.bands = int(n_classes), int(bands)
        for index in range(self.layers):   # conv1, conv2, ...: dilation 1, 2, 4, ...
            dilation = 2 ** index
            self.add_module(f"conv{index + 1}", nn.Conv1d(bins if index == 0 else channels,
                                                          channels, 5, padding=2 * dilation,
                                                          dilation=dilation))
        self.out = nn.Conv1d(channels, self.n_classes * self.bands, 1)   # rows: class-major
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, spec0):
        power = spec0.real.float().square() + spec0.imag.float().square()
        x = self.bn(torch.log(power + MAGNITUDE_FLOOR).transpose(1, 2))    # (B, F, T)
        for index in range(self.layers):
            x = F.relu(getattr(self, f"conv{index + 1}")(x))
        x = self.out(x)
        if self.bands == 1:
            return x
        return x.reshape(x.shape[0], self.n_classes, self.bands, x.shape[-1])


class FiLM(nn.Module):
    """One ``Linear(condition_size, width)`` per conditioned BatchNorm, under '->'-joined names."""

    def __init__(self, film_sizes, condition_size):
        super().__init__()
        self.names = [name for name, _ in film_sizes]
        for name, size in film_sizes:
            layer = nn.Linear(condition_size, size)
            _xavier(layer)
            self.add_module(name, layer)

    def forward(self, condition):
        """condition (B, condition_size) -> {name: bias (B, width, 1, 1)}."""
        return {name: getattr(self, name)(condition)[:, :, None, None] for name in self.names}


class ResUNet30(nn.Module):
    """Label-queried ResUNet30 separator: ``forward(mixture, condition) -> (B, num_slots, L)``.

    Full-size parameter counts (unique parameters, frozen DFT kernels included):
    ResUNet (``ResUNetConfig.dcase2025_resunet()``) 29,869,523; ResUNetK
    (``ResUNetConfig.dcase2025_resunetk()``) 29,888,747; AudioSep (``ResUNetConfig.audiosep()``)
    39,034,949.
    """

    base_class = ResUNet30Base
    config_class = ResUNetConfig

    def __init__(self, config: Optional[ResUNetConfig] = None):
        super().__init__()
        self.config = config = config or self.config_class()
        self.base = self.base_class(config)
        if config.use_label_embedding:
            size = config.condition_size
            self.label_embedding = ConditionMLP(config.label_len, size)
        else:
            self.label_embedding = None
        self.film = FiLM(self.base.film_sizes(), config.condition_size)
        if config.class_freq_bias:
            maps = self.base.mask_channels * config.mask_maps
            self.mask_prior = nn.Linear(config.slot_label_len, maps * (config.n_fft // 2))
            nn.init.zeros_(self.mask_prior.weight)
            nn.init.zeros_(self.mask_prior.bias)
        else:
            self.mask_prior = None
        if config.class_frame_gate:
            self.frame_gate = FrameGate(config.n_fft // 2 + 1, config.slot_label_len,
                                        int(config.frame_gate_channels), config.momentum,
                                        int(config.frame_gate_layers),
                                        int(config.frame_gate_bands))
            # not in the state_dict: a function of the config
            self.register_buffer("gate_bands", band_interpolation(config.frame_gate_bands,
                                                                  config.n_fft // 2),
                                 persistent=False)
        else:
            self.frame_gate = None
        if config.channels_last:
            self.base.to(memory_format=torch.channels_last)   # 4-d conv weights only

    def init_class_gains(self, gains):
        """Start the ``class_freq_bias`` term so that a freshly initialised model (``mask_init``,
        ``mag_phase`` masks) is the class-EQ filter: slot query ``c`` gives the magnitude mask
        ``gains[c]`` on channel 0, with the mixture's phase.

        ``gains``: (18, n_fft // 2 + 1) per-class real gains (:mod:`s5lib.infer.class_eq`, fitted
        at this model's STFT size); clipped to [0.01, 0.99], the range of the sigmoid mask. Only
        the channel-0 magnitude rows of ``mask_prior`` change; training goes on from there.
        """
        cfg = self.config
        if self.mask_prior is None:
            raise ValueError("init_class_gains needs model.class_freq_bias: true")
        if cfg.mask_type != "mag_phase" or cfg.mask_init is None:
            raise ValueError("init_class_gains needs mag_phase masks started at mask_init "
                             f"(mask_type {cfg.mask_type!r}, mask_init {cfg.mask_init})")
        bins = cfg.n_fft // 2
        gains = torch.as_tensor(np.asarray(gains), dtype=torch.float32)
        if gains.shape != (cfg.slot_label_len, bins + 1):
            raise ValueError(f"class gains must be ({cfg.slot_label_len}, {bins + 1}) for n_fft "
                             f"{cfg.n_fft}, got {tuple(gains.shape)}")
        target = torch.logit(gains[:, :bins].clamp(0.01, 0.99))
        offset = torch.logit(torch.tensor(float(cfg.mask_init)))
        with torch.no_grad():
            # rows: (mask channel, mask map, bin), channel 0 and the magnitude map first
            self.mask_prior.weight[:bins, :] = (target - offset).t()

    def film_names(self):
        """Flat names of every FiLM bias; the keys ``extra_film`` may use."""
        return list(self.film.names)

    def condition_embedding(self, condition):
        """condition (B, label_len) -> FiLM input (B, condition_size)."""
        if self.label_embedding is None:
            return condition
        return self.label_embedding(condition)

    def frame_logits(self, spec):
        """The frame gate's per-class logits (B, classes, T) of a mixture STFT (B, C, T, F)
        ((B, classes, bands, T) with ``frame_gate_bands`` > 1), or None without
        ``class_frame_gate``."""
        return None if self.frame_gate is None else self.frame_gate(spec[:, 0])

    def mask_bias(self, condition, frame_logits=None):
        """The bias of the mask maps below the Nyquist bin from each slot's label part, or None:
        the ``class_freq_bias`` term (B, S*K*M, 1, n_fft//2) plus, with ``class_frame_gate``, each
        slot's classes' ``frame_logits`` (B, classes, T), or (B, classes, bands, T) spread over
        the bins by ``gate_bands``, on its magnitude maps (B, S*K*M, T, n_fft//2)."""
        cfg = self.config
        batch, bins = condition.shape[0], cfg.n_fft // 2
        parts = condition.reshape(batch, cfg.num_slots, -1)
        bias = None
        if self.mask_prior is not None:
            bias = self.mask_prior(parts).reshape(batch, -1, 1, bins)    # (B, S*K*M, 1, F')
        if self.frame_gate is None:
            return bias
        if frame_logits is None:
            raise ValueError("class_frame_gate: mask_bias needs the frame gate's logits")
        # gate (B, S, T, F' or 1): each slot's gain per frame and bin, or per frame
        parts = parts.to(frame_logits.dtype)
        if frame_logits.dim() == 4:   # (B, classes, bands, T): a gain per band and frame
            gate = torch.einsum("bsc,bcnt->bsnt", parts, frame_logits)
            gate = torch.einsum("bsnt,nf->bstf", gate, self.gate_bands.to(gate.dtype))
        else:                         # (B, classes, T): one gain per frame
            gate = torch.einsum("bsc,bct->bst", parts, frame_logits)[..., None]
        frames, width = gate.shape[2:]
        maps = gate.new_zeros(batch, cfg.num_slots, self.base.mask_channels, cfg.mask_maps, frames,
                              width)
        maps[:, :, :, 0] = gate[:, :, None]                                # magnitude maps only
        maps = maps.reshape(batch, -1, frames, width)
        return maps.expand(-1, -1, -1, bins) if bias is None else maps + bias

    def slot_activity(self, condition):
        """(B, num_slots) 1.0 where that slot's part of the condition is non-zero, else 0.0."""
        parts = condition.detach().reshape(condition.shape[0], self.config.num_slots, -1)
        return (parts.abs().sum(dim=2) != 0).to(torch.float32)

    def check_inputs(self, mixture, condition):
        """A clear error for a mixture that is not (B, input_channels, L) or a condition that is
        not (B, label_len)."""
        cfg = self.config
        if mixture.dim() != 3 or mixture.shape[1] != cfg.input_channels:
            raise ValueError(f"mixture must be (batch, {cfg.input_channels}, samples), "
                             f"got {tuple(mixture.shape)}")
        if condition.dim() != 2 or condition.shape[1] != cfg.label_len:
            raise ValueError(f"condition must be (batch, {cfg.label_len}), got {tuple(condition.shape)}")

    def forward(self, mixture, condition, extra_film: Optional[Dict[str, torch.Tensor]] = None,
                return_frame_logits: bool = False):
        """Separate the queried sources.

        Args:
            mixture: (B, input_channels, samples) waveforms.
            condition: (B, label_len): concatenated one-hot (or multi-hot) labels, one part per
                slot; for the AudioSep configuration the 512-d query embedding.
            extra_film: optional extra additive biases, keyed by FiLM name (see
                :meth:`film_names`), each (B, width, 1, 1), (B, width, T', 1) or (B, width, T');
                a time axis T' is resampled to the block's number of frames (Time-FiLM).
            return_frame_logits: also return the frame gate's per-class logits (B, classes,
                STFT frames) (``class_frame_gate``; a training loss may supervise them).
        Returns:
            (B, num_slots, samples) when output_channels == 1, else (B, num_slots, output_channels,
            samples); slots with an all-zero label give zeros (``zero_silent_slots``).
        """
        cfg = self.config
        self.check_inputs(mixture, condition)
        film = self.film(self.condition_embedding(condition))
        spec, features = self.base.analyse(mixture)
        logits = self.frame_logits(spec)
        waveforms = self.base.separate(spec, features, film, mixture.shape[-1], extra_film,
                                       self.mask_bias(condition, logits))
        if cfg.zero_silent_slots and cfg.use_label_embedding:
            waveforms = waveforms * self.slot_activity(condition)[:, :, None, None]
        if cfg.output_channels == 1:
            waveforms = waveforms[:, :, 0]
        if return_frame_logits:
            if logits is None:
                raise ValueError("return_frame_logits needs model.class_frame_gate: true")
            return waveforms, logits
        return waveforms


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def separator_state_dict(path):
    """The prefix-free weights of a ResUNet30-based separator file (Lightning, our trainer's or a
    plain state_dict): the prefix in front of the module keys is found by locating
    ``base.stft.conv_real.weight`` (the baseline's own rule; normally ``model.``)."""
    checkpoint = load_checkpoint_file(path)
    state_dict = extract_state_dict(checkpoint, prefixes=(), source=path)
    prefix = detect_prefix(state_dict, "base.stft.conv_real.weight")
    if prefix is None:
        raise CheckpointError(path, "no key ends with 'base.stft.conv_real.weight'; "
                                    "this is not a ResUNet30 checkpoint")
    if prefix:
        state_dict = strip_prefix(state_dict, prefix, drop_others=False)
    return state_dict


def load_resunet_checkpoint(model, path):
    """Load a DCASE baseline Lightning checkpoint (``resunet.ckpt``/``resunetk.ckpt``) strictly:
    :func:`separator_state_dict`, then every key must match the model."""
    return load_strict(model, separator_state_dict(path), source=path)


def init_from_audiosep(model, path):
    """Initialise a ResUNet30 from AudioSep's ``audiosep_base_4M_steps.ckpt`` (CP-JKU's recipe).

    Keeps ``ss_model.base.*`` and ``ss_model.film.*`` (prefix ``ss_model.`` stripped) and copies
    every tensor whose shape matches. Two tensors are adapted when the model has other channel
    counts: ``base.pre_conv.weight`` [W, 1, 1, 1] is tiled over the model's input feature channels
    and divided by their number (``extra_input_channels``, e.g. the refinement feedback, get a zero
    kernel); ``base.after_conv.weight``/``bias`` (3 mask maps) are repeated for
    every (slot, channel). Any other shape mismatch, or a checkpoint key the model lacks, raises
    :class:`CheckpointError`. Keys the checkpoint does not have (``label_embedding``, ``out_conv``,
    later additions) keep their initial values.

    Returns:
        dict with lists 'copied', 'adapted' and 'not_in_checkpoint' (model keys left as they were).
    """
    checkpoint = load_checkpoint_file(path)
    weights = extract_state_dict(checkpoint, prefixes=(), source=path)
    source = {}
    for key, value in weights.items():
        new_key = audiosep_key_map(key)
        if new_key is not None:
            source[new_key] = value
    if not source:
        raise CheckpointError(path, "no 'ss_model.base.*' or 'ss_model.film.*' keys; "
                                    "this is not an AudioSep checkpoint")
    target = model.state_dict()
    unknown = sorted(set(source) - set(target))
    if unknown:
        raise CheckpointError(path, f"{len(unknown)} AudioSep keys have no place in "
                                    f"{type(model).__name__}: {', '.join(unknown[:20])}")
    adapted_values, bad = {}, []
    for key, value in source.items():
        wanted = tuple(target[key].shape)
        if tuple(value.shape) == wanted:
            adapted_values[key] = value
        elif key == "base.pre_conv.weight" and value.shape[1] == 1 and value.shape[0] == wanted[0]:
            # the mixture features share the kernel; extra (feedback) channels start at zero
            extra = int(getattr(model.config, "extra_input_channels", 0) or 0)
            shared = wanted[1] - extra
            adapted_values[key] = torch.cat(
                (value.repeat(1, shared, 1, 1) / shared,
                 value.new_zeros(wanted[0], extra, *value.shape[2:])), dim=1)
        elif (key in ("base.after_conv.weight", "base.after_conv.bias")
              and wanted[0] % value.shape[0] == 0 and tuple(value.shape[1:]) == wanted[1:]):
            repeats = (wanted[0] // value.shape[0],) + (1,) * (value.dim() - 1)
            adapted_values[key] = value.repeat(*repeats)
        else:
            bad.append(f"{key} (file {list(value.shape)}, model {list(wanted)})")
    if bad:
        raise CheckpointError(path, f"{len(bad)} shape mismatches: {', '.join(bad[:20])}")
    with torch.no_grad():
        for key, value in adapted_values.items():
            target[key].copy_(value.to(target[key].dtype))
    copied = sorted(k for k in adapted_values if tuple(source[k].shape) == tuple(target[k].shape))
    return {"copied": copied,
            "adapted": sorted(set(adapted_values) - set(copied)),
            "not_in_checkpoint": sorted(set(target) - set(source))}
