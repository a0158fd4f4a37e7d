"""BEATs (Chen et al., ICML 2023): the audio encoder KUBIG keeps frozen, checkpoint-compatible.

``BEATs_iter3_plus_AS2M.pt`` is a dict ``{"cfg": {...}, "model": state_dict}``; :func:`load_beats`
builds :class:`BEATs` from its ``cfg`` and loads ``model`` strictly (weights-only), so every name
of ``shared/reference/beats_iter3_plus_as2m.tsv`` (250 entries, 90,311,792 parameters) is ours:

* front end: Kaldi fbank of the 16 kHz waveform scaled to 16-bit range (128 bins, 25 ms / 10 ms,
  torchaudio's ``compliance.kaldi.fbank``), normalised with BEATs' AudioSet mean 15.41663 and
  twice its std 6.55582; 16 x 16 patches (``patch_embedding``, no bias) flattened time-major
  (token ``t * 8 + f`` for the 8 frequency patches of time patch ``t``), ``layer_norm`` (512),
  ``post_extract_proj`` to the encoder width;
* ``encoder.pos_conv.0``: a grouped convolution (kernel 128, 16 groups) under weight
  normalisation over dim 2, stored the old way as ``weight_g`` [1, 1, 128] and ``weight_v``; its
  output drops the last frame (even kernel) and passes a GELU before it is added to the input;
  ``encoder.layer_norm`` follows (post-LN model);
* each layer: multi-head self-attention with a bucketed relative-position bias (320 buckets,
  max distance 800, bidirectional) scaled per query by a learned gate (``grep_linear``,
  ``grep_a``), then a GELU feed-forward; DeepNorm residuals (x * (2 L)^(1/4) + f(x)) with
  post-layer norms. The bias table (``relative_attention_bias``) is one module shared by all
  layers, so ``state_dict()`` lists it once per layer (12 names, one tensor), as the file does.

Training-only pieces of the reference configuration are kept: LayerDrop (``encoder_layerdrop``)
and the layer-wise gradient decay (gradients scaled by ``layer_wise_gradient_decay_ratio`` at
each layer input). Both do nothing for a frozen encoder in eval mode.

:class:`BEATsTagger` (factory tagger type ``beats``) puts an 18-way multi-label head on the
mean of the encoder's tokens: KUBIG's stage 2 on the mini bank, where no pretrained BEATs
exists, trains a small BEATs-shaped encoder this way before stage 3 freezes it.
"""
import dataclasses
import math
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s5lib import constants
from s5lib.models.checkpoints import (CheckpointError, extract_state_dict, load_checkpoint_file,
                                     load_strict)

SAMPLE_RATE = 16000
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
N_MEL = 128


@dataclasses.dataclass
class BEATsConfig:
    """Constructor settings; the defaults are those of ``BEATs_iter3_plus_AS2M.pt``."""
    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 0.6
    layer_norm_first: bool = False
    deep_norm: bool = True
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.05
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, values, source="config"):
        """From a checkpoint's ``cfg`` dict or a YAML section; unknown names are an error."""
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{source}: unknown BEATs setting(s) {unknown}")
        cfg = cls(**values)
        cfg.check(source)
        return cfg

    def check(self, source="config"):
        if self.activation_fn != "gelu":
            raise ValueError(f"{source}: activation_fn {self.activation_fn!r}: only gelu (every "
                             "released BEATs) is implemented")
        if self.deep_norm and self.layer_norm_first:
            raise ValueError(f"{source}: deep_norm needs layer_norm_first: false (post-LN)")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(f"{source}: encoder_embed_dim {self.encoder_embed_dim} is not a "
                             f"multiple of encoder_attention_heads {self.encoder_attention_heads}")
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError(f"{source}: encoder_embed_dim is not a multiple of conv_pos_groups")
        if N_MEL % self.input_patch_size:
            raise ValueError(f"{source}: input_patch_size must divide the {N_MEL} fbank bins")

    @classmethod
    def small(cls, **overrides):
        """A BEATs-shaped encoder for CPU runs (mini bank): same blocks, fewer and narrower."""
        values = dict(embed_dim=64, encoder_layers=2, encoder_embed_dim=96,
                      encoder_ffn_embed_dim=192, encoder_attention_heads=4, conv_pos=16,
                      conv_pos_groups=4, num_buckets=64, max_distance=200, encoder_layerdrop=0.0)
        values.update(overrides)
        return cls.from_dict(values)


BEATS_PRESETS = ("full", "small")


def beats_config(preset="full", overrides=None, source="model.beats"):
    """A :class:`BEATsConfig` from a preset (``full``: BEATs_iter3_plus_AS2M; ``small``: the CPU
    size) and field overrides."""
    if preset not in BEATS_PRESETS:
        raise ValueError(f"{source}: preset must be one of {BEATS_PRESETS}, got {preset!r}")
    base = BEATsConfig.small() if preset == "small" else BEATsConfig()
    values = dict(base.__dict__)
    values.update(overrides or {})
    return BEATsConfig.from_dict(values, source=source)


def kaldi_fbank(waveform):
    """BEATs' normalised log-mel input: (B, N) 16 kHz waveforms -> (B, frames, 128)."""
    import torchaudio.compliance.kaldi as kaldi
    if waveform.dim() != 2:
        raise ValueError(f"BEATs input must be (batch, samples) at 16 kHz, got {tuple(waveform.shape)}")
    feats = [kaldi.fbank(row.unsqueeze(0) * 2 ** 15, num_mel_bins=N_MEL,
                         sample_frequency=SAMPLE_RATE, frame_length=25, frame_shift=10)
             for row in waveform.float()]
    return (torch.stack(feats) - FBANK_MEAN) / (2 * FBANK_STD)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``factor``."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``weight_v * weight_g / ||weight_v||`` with the norm over every
    dim but ``dim`` (the parameter names of ``torch.nn.utils.weight_norm``)."""

    def __init__(self, channels, kernel_size, groups, dim=2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        shape = [1, 1, 1]
        shape[dim] = kernel_size
        self.weight_g = nn.Parameter(torch.ones(shape))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.dim, self.groups, self.padding = dim, groups, kernel_size // 2
        std = math.sqrt(4.0 / (kernel_size * channels))
        nn.init.normal_(self.weight_v, mean=0.0, std=std)
        with torch.no_grad():
            self.weight_g.copy_(self._norm(self.weight_v))

    def _norm(self, v):
        dims = [d for d in range(v.dim()) if d != self.dim]
        return v.pow(2).sum(dim=dims, keepdim=True).sqrt()

    def forward(self, x):
        weight = self.weight_v * (self.weight_g / self._norm(self.weight_v))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class PositionalConv(nn.Sequential):
    """``encoder.pos_conv``: the weight-normed grouped conv (entry ``0``, as the reference's
    Sequential names it), a crop back to the input length (even kernel), GELU."""

    def __init__(self, channels, kernel_size, groups):
        super().__init__(WeightNormConv1d(channels, kernel_size, groups))
        self.crop = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x):  # (B, C, T)
        y = self[0](x)
        if self.crop:
            y = y[..., :-self.crop]
        return F.gelu(y)


def relative_position_buckets(length, num_buckets, max_distance):
    """(length, length) bucket index of key position j seen from query position i (j - i):
    half the buckets for j > i, exact below ``num_buckets // 4``, log-spaced up to
    ``max_distance`` beyond."""
    rel = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).to(torch.long) * half
    dist = rel.abs()
    exact = half // 2
    far = exact + (torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                   * (half - exact)).to(torch.long)
    far = far.clamp(max=half - 1)
    return buckets + torch.where(dist < exact, dist, far)


class GatedRelativeAttention(nn.Module):
    """Self-attention with BEATs' gated relative-position bias (names of the reference)."""

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.heads, self.head_dim = heads, dim // heads
        self.gated = cfg.gru_rel_pos
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        if self.gated:
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        self.relative_attention_bias = (nn.Embedding(cfg.num_buckets, heads)
                                        if cfg.relative_position_embedding else None)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if self.gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
        self.dropout = cfg.attention_dropout

    def position_bias(self, length, device):
        """(heads, length, length) raw bias (before the per-query gate)."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets.to(device)).permute(2, 0, 1)

    def forward(self, x, bias=None):  # x (B, T, D); bias (H, T, T) or None
        B, T, D = x.shape
        split = lambda t: t.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        mask = None
        if self.relative_attention_bias is not None:
            if bias is None:
                bias = self.position_bias(T, x.device)
            mask = bias.unsqueeze(0).to(q.dtype)
            if self.gated:  # gate from the unscaled query of each head: 2 sums of 4 outputs
                gates = torch.sigmoid(self.grep_linear(q).view(B, self.heads, T, 2, 4).sum(-1))
                gate_a, gate_b = gates[..., :1], gates[..., 1:]
                mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D)), bias


class EncoderLayer(nn.Module):
    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.self_attn = GatedRelativeAttention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.pre_norm = cfg.layer_norm_first
        self.alpha = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0
        self.dropout, self.activation_dropout = cfg.dropout, cfg.activation_dropout

    def _ffn(self, x):
        x = F.dropout(F.gelu(self.fc1(x)), self.activation_dropout, self.training)
        return F.dropout(self.fc2(x), self.dropout, self.training)

    def forward(self, x, bias=None):
        if self.pre_norm:
            y, bias = self.self_attn(self.self_attn_layer_norm(x), bias)
            x = x + F.dropout(y, self.dropout, self.training)
            return x + self._ffn(self.final_layer_norm(x)), bias
        y, bias = self.self_attn(x, bias)
        x = self.self_attn_layer_norm(x * self.alpha + F.dropout(y, self.dropout, self.training))
        x = self.final_layer_norm(x * self.alpha + self._ffn(x))
        return x, bias


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = PositionalConv(dim, cfg.conv_pos, cfg.conv_pos_groups)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        shared = self.layers[0].self_attn.relative_attention_bias
        for layer in self.layers[1:]:  # one bias table; every layer names it (last, as the
            del layer.self_attn.relative_attention_bias  # reference's state_dict order has it)
            layer.self_attn.relative_attention_bias = shared
        self.layer_norm = nn.LayerNorm(dim)
        self.pre_norm = cfg.layer_norm_first
        self.dropout, self.layerdrop = cfg.dropout, cfg.encoder_layerdrop
        self.gradient_decay = cfg.layer_wise_gradient_decay_ratio
        self._init(cfg)

    def _init(self, cfg):
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if cfg.deep_norm:
            beta = math.pow(8 * cfg.encoder_layers, -0.25)
            for layer in self.layers:
                attn = layer.self_attn
                for lin, gain in ((attn.k_proj, 1.0), (attn.v_proj, beta), (attn.q_proj, 1.0),
                                  (attn.out_proj, beta), (layer.fc1, beta), (layer.fc2, beta)):
                    nn.init.xavier_normal_(lin.weight, gain=gain)

    def forward(self, x):  # (B, T, D)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.pre_norm:
            x = self.layer_norm(x)
        x = F.dropout(x, self.dropout, self.training)
        bias = None
        for layer in self.layers:
            if self.gradient_decay != 1.0 and torch.is_grad_enabled() and x.requires_grad:
                x = _ScaleGradient.apply(x, self.gradient_decay)
            if self.training and self.layerdrop > 0 and float(np.random.random()) < self.layerdrop:
                continue
            x, bias = layer(x, bias)
        if self.pre_norm:
            x = self.layer_norm(x)
        return x


class BEATs(nn.Module):
    """The BEATs encoder: (B, N) 16 kHz waveform -> (B, T' * F', D) tokens (F' = 8 for 16 x 16
    patches of 128 bins); :meth:`token_grid` reshapes them to (B, T', F', D)."""

    def __init__(self, cfg: BEATsConfig = BEATsConfig()):
        super().__init__()
        cfg.check()
        self.config = cfg
        self.post_extract_proj = (nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
                                  if cfg.embed_dim != cfg.encoder_embed_dim else None)
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, cfg.input_patch_size,
                                         stride=cfg.input_patch_size, bias=cfg.conv_bias)
        self.encoder = TransformerEncoder(cfg)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        if cfg.finetuned_model:
            self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class)
        else:
            self.predictor = None

    @property
    def freq_patches(self):
        return N_MEL // self.config.input_patch_size

    @property
    def frame_hop_seconds(self):
        """Seconds between time patches (10 ms fbank frames x patch size)."""
        return 0.01 * self.config.input_patch_size

    def tokens(self, fbank):
        """(B, frames, 128) normalised fbank -> (B, T' * F', D) encoder output."""
        x = self.patch_embedding(fbank.unsqueeze(1))
        x = self.layer_norm(x.flatten(2).transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        x = F.dropout(x, self.config.dropout_input, self.training)
        return self.encoder(x)

    def forward(self, waveform):
        need = 400 + 160 * (self.config.input_patch_size - 1)  # one patch of 25/10 ms frames
        if waveform.shape[-1] < need:
            raise ValueError(f"BEATs needs at least {need} samples of 16 kHz audio (one "
                             f"{self.config.input_patch_size}-frame patch), got {waveform.shape[-1]}")
        return self.tokens(kaldi_fbank(waveform))

    def token_grid(self, tokens):
        B, L, D = tokens.shape
        return tokens.view(B, L // self.freq_patches, self.freq_patches, D)

    def predict(self, waveform):
        """AudioSet class probabilities of a fine-tuned model (``finetuned_model: true``)."""
        if self.predictor is None:
            raise ValueError("this BEATs has no predictor (finetuned_model: false)")
        return torch.sigmoid(self.predictor(self(waveform)).mean(dim=1))


def _is_release(checkpoint):
    """Whether a loaded file is a BEATs release: ``{"cfg": {...}, "model": state_dict}``."""
    return (isinstance(checkpoint, dict) and isinstance(checkpoint.get("cfg"), dict)
            and isinstance(checkpoint.get("model"), dict))


def load_beats(path, overrides=None):
    """A :class:`BEATs` from a released ``.pt`` (``{"cfg": ..., "model": ...}``), strict and
    weights-only; ``overrides`` change training-only settings (e.g. ``encoder_layerdrop``)."""
    checkpoint = load_checkpoint_file(path)
    if not _is_release(checkpoint):
        raise CheckpointError(path, "not a BEATs release file: expected a dict with 'cfg' (its "
                                    "settings) and 'model' (its state_dict), as BEATs_iter3_plus_"
                                    "AS2M.pt has")
    values = {k: v for k, v in checkpoint["cfg"].items()
              if k in {f.name for f in dataclasses.fields(BEATsConfig)}}
    values.update(overrides or {})
    try:
        cfg = BEATsConfig.from_dict(values, source=str(path))
    except (TypeError, ValueError) as err:
        raise CheckpointError(path, f"its cfg cannot build a BEATs: {err}") from None
    model = BEATs(cfg)
    weights = extract_state_dict(checkpoint["model"], prefixes=(), source=path)
    load_strict(model, weights, source=path)
    return model


def load_beats_weights(encoder, path):
    """Load a :class:`BEATs` ``encoder`` strictly from a BEATs release file (``{"cfg", "model"}``)
    or from a checkpoint of a model that holds one as ``encoder`` (our stage-2 ``beats`` tagger,
    a ``kubig`` separator): its ``encoder.*`` weights."""
    from s5lib.models.checkpoints import strip_prefix
    checkpoint = load_checkpoint_file(path)
    if _is_release(checkpoint):
        weights = extract_state_dict(checkpoint["model"], prefixes=(), source=path)
    else:
        weights = extract_state_dict(checkpoint, prefixes=(), source=path)
        if not any(key.startswith("encoder.") for key in weights):
            raise CheckpointError(path, "neither a BEATs release ({'cfg', 'model'}) nor the "
                                        "checkpoint of a model with a BEATs encoder (no "
                                        "'encoder.*' keys)")
        weights = strip_prefix(weights, "encoder.")
    load_strict(encoder, weights, source=path)
    return encoder


def resample_to_beats(waveform, sample_rate=constants.SAMPLE_RATE):
    """(B, N) audio at ``sample_rate`` -> 16 kHz for BEATs."""
    if sample_rate == SAMPLE_RATE:
        return waveform
    import torchaudio.functional as AF
    return AF.resample(waveform, sample_rate, SAMPLE_RATE)


class BEATsTagger(nn.Module):
    """18-way multi-label tagger on a BEATs encoder (mean of the tokens, linear head), run on
    the W channel of the FOA mixture resampled to 16 kHz. ``kind`` is ``beats``."""

    def __init__(self, beats: Optional[BEATsConfig] = None, n_classes=constants.N_CLASSES):
        super().__init__()
        self.encoder = BEATs(beats or BEATsConfig.small())
        self.head = nn.Linear(self.encoder.config.encoder_embed_dim, n_classes)
        self.ref_channel = 0  # reads channel 0 (W) only

    def forward(self, mixture):  # (B, 4, N) or (B, 1, N) at 32 kHz
        tokens = self.encoder(resample_to_beats(mixture[:, 0]))
        return self.head(tokens.mean(dim=1))
