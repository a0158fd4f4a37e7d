"""M2D-style ViT audio encoder with its log-mel front end, and loaders for released M2D weights.

What this module reproduces (facts from the M2D portable runtime and the DCASE baselines, see
``shared/SPEC.md`` §7.1/§7.2 and ``shared/reference/m2d_vit_base_encoder.tsv``):

* **Front end** (``to_spec``): power mel spectrogram of a mono waveform, centred frames with
  reflect padding, periodic Hann window, Slaney mel scale with Slaney (area) normalisation —
  the values nnAudio's ``MelSpectrogram`` produces. The encoder then takes
  ``log(mel + eps_float32)`` and normalises it with ``(x - mean) / std``, where ``(mean, std)`` is
  the non-trainable parameter ``backbone.norm_stats`` (default ``(-7.1, 4.2)``).
  32 kHz: n_fft = win = 800, hop 320, 80 mels, 50 Hz–16 kHz. 16 kHz: 400, 160, 80 mels, 50 Hz–8 kHz.
* **State-dict entries of the front end**: released checkpoints carry nnAudio's buffers
  ``to_spec.mel_basis`` (n_mels, n_fft/2+1), ``to_spec.stft.wsin`` / ``wcos`` (n_fft/2+1, 1, n_fft)
  and ``to_spec.stft.window_mask`` (1, n_fft, 1), so strict loading needs them. We fill them with the
  same values nnAudio computes. In ``forward`` the stored ``mel_basis`` and ``window_mask`` ARE used
  (the STFT itself runs through ``torch.stft`` with that window); ``wsin``/``wcos`` (the windowed
  Fourier kernels) are only CARRIED so checkpoints round-trip — they are fixed in nnAudio
  (not trainable), so an FFT gives the same spectrum.
* **Encoder** (``backbone``): a ViT with timm's key names (``patch_embed.proj``,
  ``blocks.N.norm1``, ``blocks.N.attn.qkv``, ``blocks.N.attn.proj``, ``blocks.N.norm2``,
  ``blocks.N.mlp.fc1/fc2``, ``norm``), a class token and a learned position embedding over the
  (mel/patch) x (input_frames/patch) grid plus the class token: [1, 1 + 5*62, 768] for 80x1001 with
  16x16 patches. Pre-norm blocks, LayerNorm eps 1e-6, exact GELU, qkv bias.
* **Features**: the class token is dropped; the patch tokens of one time step (5 frequency
  patches) are stacked -> frame features (B, T', 5*768 = 3840), T' = 62 per 1001 frames.
* **Long inputs** (what M2D does): the log-mel is cut into chunks of ``input_frames`` (1001)
  frames, each chunk is encoded on its own with the same position embeddings, and the chunk
  outputs are concatenated in time. The spectrogram is first right-padded with zeros to a multiple of
  the patch width; a chunk shorter than ``input_frames`` uses the first columns of the position
  embedding (no interpolation). Frames of a chunk that do not fill a whole patch are ignored (the
  conv stride drops them). A trailing chunk shorter than one patch is skipped (M2D would fail).
* **Hidden states** (for CP-JKU's embedding injection): the patch-embedding output (before the
  position embedding) and the output of every block (before the final norm): depth + 1 tensors,
  each (B, T', F', D) with F' frequency patches — the same layout as the frame features before
  stacking.

Loaders: :func:`load_m2d_pth` (released M2D ``.pth``; ``module.ar.runtime.backbone.`` prefix) and
:func:`load_pretrained_sed` (CP-JKU PretrainedSED file) are here; Lightning tagger checkpoints are
loaded by :func:`s5lib.models.tagger.load_tagger_checkpoint`.
"""
import math
import os
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from s5lib.config import dataclass_from_dict
from s5lib.models.checkpoints import CheckpointError, extract_state_dict, load_checkpoint_file, load_strict

DEFAULT_NORM_STATS = (-7.1, 4.2)
M2D_PTH_BACKBONE_PREFIX = "module.ar.runtime.backbone."
M2D_PTH_HEAD_NORM_KEYS = ("module.head.norm.running_mean", "module.head.norm.running_var")


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass
class M2DConfig:
    """Sizes of the M2D front end and ViT encoder. Defaults: the 32 kHz ViT-Base of the DCASE baseline."""

    sample_rate: int = 32000
    n_fft: int = 800
    win_length: int = 800
    hop_length: int = 320
    n_mels: int = 80
    f_min: float = 50.0
    f_max: float = 16000.0
    norm_stats: tuple = DEFAULT_NORM_STATS  # (mean, std) of the log-mel input
    input_frames: int = 1001  # frames of one encoder chunk (10 s)
    patch_size: tuple = (16, 16)  # (mel bins, frames)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6

    def __post_init__(self):
        self.patch_size = tuple(int(p) for p in (
            self.patch_size if isinstance(self.patch_size, (list, tuple)) else (self.patch_size,) * 2))
        self.norm_stats = tuple(float(v) for v in self.norm_stats)
        problems = []
        if len(self.patch_size) != 2 or min(self.patch_size) < 1:
            problems.append(f"patch_size must be two positive ints, got {self.patch_size}")
        elif self.n_mels % self.patch_size[0]:
            problems.append(f"n_mels ({self.n_mels}) must be a multiple of the patch height "
                            f"({self.patch_size[0]})")
        elif self.input_frames < self.patch_size[1]:
            problems.append(f"input_frames ({self.input_frames}) is shorter than one patch")
        if len(self.norm_stats) != 2 or self.norm_stats[1] <= 0:
            problems.append(f"norm_stats must be (mean, std > 0), got {self.norm_stats}")
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim ({self.embed_dim}) must be a multiple of num_heads "
                            f"({self.num_heads})")
        if self.win_length > self.n_fft:
            problems.append(f"win_length ({self.win_length}) > n_fft ({self.n_fft})")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            problems.append(f"need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}")
        if problems:
            raise ValueError("M2DConfig: " + "; ".join(problems))

    @property
    def grid_size(self):
        """(frequency patches, time patches) of one ``input_frames`` chunk, e.g. (5, 62)."""
        return self.n_mels // self.patch_size[0], self.input_frames // self.patch_size[1]

    @property
    def n_freq_patches(self):
        return self.grid_size[0]

    @property
    def frame_feature_dim(self):
        """Size of a stacked frame feature: embed_dim x frequency patches (3840 for ViT-Base)."""
        return self.embed_dim * self.n_freq_patches

    @classmethod
    def from_dict(cls, values):
        """Build from a (YAML) dict; unknown keys are an error that names them."""
        return dataclass_from_dict(cls, values)

    @classmethod
    def m2d_32k(cls, **overrides):
        """ViT-Base, 32 kHz front end (DCASE baseline M2D-AT)."""
        return cls(**overrides)

    @classmethod
    def m2d_16k(cls, **overrides):
        """ViT-Base, 16 kHz front end (n_fft 400, hop 160, 50 Hz–8 kHz; CP-JKU PretrainedSED)."""
        values = dict(sample_rate=16000, n_fft=400, win_length=400, hop_length=160, f_max=8000.0)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_weight_name(cls, name, **overrides):
        """Geometry from an M2D release folder name, as M2D does.

        ``m2d_as_vit_base-80x1001p16x16p32k-240413_AS-FT_enconly`` -> 80 mels x 1001 frames,
        16x16 patches, 32 kHz front end (``16k`` when the name gives no rate). ``name`` may be a
        weight-file path: its parent folder name is then used.
        """
        base = os.path.basename(os.path.dirname(name)) if name.endswith((".pth", ".pt")) else name
        match = re.match(r"^[^-]+-(\d+)x(\d+)p(\d+)x(\d+)(?:p(\d+)k)?", os.path.basename(base))
        if not match:
            raise ValueError(f"{name}: cannot read the M2D geometry from the name "
                             "(expected e.g. 'm2d_vit_base-80x1001p16x16p32k-...')")
        n_mels, frames, patch_f, patch_t, khz = match.groups()
        khz = int(khz) if khz else 16
        if khz not in (16, 32):
            raise ValueError(f"{name}: unsupported M2D sample rate {khz} kHz (16 or 32)")
        factory = cls.m2d_32k if khz == 32 else cls.m2d_16k
        values = dict(n_mels=int(n_mels), input_frames=int(frames),
                      patch_size=(int(patch_f), int(patch_t)))
        values.update(overrides)
        return factory(**values)


# ----------------------------------------------------------------------------------------------
# Front end
# ----------------------------------------------------------------------------------------------
def _hz_to_mel_slaney(hz):
    """Slaney mel scale (linear below 1 kHz, logarithmic above); works on float64 tensors."""
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = hz / f_sp
    log_part = min_log_mel + torch.log(torch.clamp(hz, min=min_log_hz) / min_log_hz) / logstep
    return torch.where(hz >= min_log_hz, log_part, linear)


def _mel_to_hz_slaney(mel):
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = mel * f_sp
    log_part = min_log_hz * torch.exp(logstep * (mel - min_log_mel))
    return torch.where(mel >= min_log_mel, log_part, linear)


def mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max):
    """Triangular mel filters (n_mels, n_fft // 2 + 1), Slaney scale and area normalisation.

    This is the matrix librosa/nnAudio build by default (``htk=False``, ``norm=1``): filter i rises
    from mel point i to i+1 and falls to i+2, points equally spaced in mel between f_min and
    f_max, each filter scaled by 2 / (its width in Hz).
    """
    fft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(float(_hz_to_mel_slaney(torch.tensor(float(f_min), dtype=torch.float64))),
                               float(_hz_to_mel_slaney(torch.tensor(float(f_max), dtype=torch.float64))),
                               n_mels + 2, dtype=torch.float64)
    hz_edges = _mel_to_hz_slaney(mel_edges)
    widths = hz_edges[1:] - hz_edges[:-1]  # (n_mels + 1,)
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freq)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights = weights * (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    return weights.to(torch.float32)


def periodic_hann(win_length, n_fft):
    """Periodic Hann window of ``win_length`` samples, zero-padded on both sides to ``n_fft``."""
    window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
    left = (n_fft - win_length) // 2
    return F.pad(window, (left, n_fft - win_length - left)).to(torch.float32)


class FourierKernels(nn.Module):
    """Holder of nnAudio's fixed STFT buffers (state-dict names ``wsin``, ``wcos``, ``window_mask``).

    ``window_mask`` (1, n_fft, 1) is the analysis window used by :class:`MelSpectrogram`;
    ``wsin``/``wcos`` (n_fft/2+1, 1, n_fft) are the windowed sine/cosine kernels, carried only so
    that checkpoints which list them load strictly (the spectrum is computed with an FFT).
    """

    def __init__(self, n_fft, win_length):
        super().__init__()
        window = periodic_hann(win_length, n_fft)
        n_freq = n_fft // 2 + 1
        phase = 2.0 * math.pi * torch.outer(torch.arange(n_freq, dtype=torch.float64),
                                            torch.arange(n_fft, dtype=torch.float64)) / n_fft
        self.register_buffer("wsin", (torch.sin(phase).float() * window).unsqueeze(1))
        self.register_buffer("wcos", (torch.cos(phase).float() * window).unsqueeze(1))
        self.register_buffer("window_mask", window.view(1, n_fft, 1))


class MelSpectrogram(nn.Module):
    """Power mel spectrogram (B, L) -> (B, n_mels, L // hop + 1), centred frames, reflect padding.

    State-dict entries (nnAudio names): ``mel_basis`` and ``stft.{wsin,wcos,window_mask}``.
    """

    def __init__(self, sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max):
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.stft = FourierKernels(n_fft, win_length)
        self.register_buffer("mel_basis", mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max))

    def forward(self, waveform):
        if waveform.dim() != 2:
            raise ValueError(f"MelSpectrogram: expected a (batch, samples) waveform, got shape "
                             f"{tuple(waveform.shape)}")
        if waveform.shape[-1] <= self.n_fft // 2:
            raise ValueError(f"MelSpectrogram: input of {waveform.shape[-1]} samples is too short for "
                             f"reflect padding of {self.n_fft // 2} samples (n_fft {self.n_fft})")
        window = self.stft.window_mask.reshape(-1).to(waveform.dtype)
        spectrum = torch.stft(waveform, self.n_fft, hop_length=self.hop_length, win_length=self.n_fft,
                              window=window, center=True, pad_mode="reflect", return_complex=True)
        power = spectrum.real.square() + spectrum.imag.square()  # (B, n_freq, frames)
        return torch.matmul(self.mel_basis.to(power.dtype), power)


# ----------------------------------------------------------------------------------------------
# ViT blocks (timm key names)
# ----------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Non-overlapping patches of a (B, 1, F, T) spectrogram -> (B, D, F', T') via one strided conv."""

    def __init__(self, patch_size, embed_dim, in_chans=1):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x):
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm layout)."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """Two-layer feed-forward block with exact GELU."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, eps=1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class M2DViT(nn.Module):
    """The M2D ViT (``backbone.*`` keys): patch embedding, class token, position embedding,
    blocks, final norm, and the non-trainable ``norm_stats`` parameter (log-mel mean and std)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        freq_patches, time_patches = cfg.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + freq_patches * time_patches, cfg.embed_dim))
        self.norm_stats = nn.Parameter(torch.tensor(cfg.norm_stats, dtype=torch.float32),
                                       requires_grad=False)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.layer_norm_eps)
            for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.reset_parameters()

    def reset_parameters(self):
        """Initialisation for training from scratch (timm's ViT defaults)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, lms, return_hidden=False):
        """Encode one chunk of normalised log-mel.

        Args:
            lms: (B, 1, n_mels, frames) with frames <= cfg.input_frames.
            return_hidden: also return the depth + 1 hidden states.
        Returns:
            (grid, hidden): grid (B, T', F', D) of final-norm patch tokens (class token dropped);
            hidden is a list of (B, T', F', D) tensors (patch embedding, then each block before
            the final norm), or None.
        """
        freq_grid, time_grid = self.cfg.grid_size
        x = self.patch_embed(lms)  # (B, D, F', T')
        batch, dim, freq_patches, time_patches = x.shape
        if freq_patches != freq_grid or not 0 < time_patches <= time_grid:
            raise ValueError(f"M2DViT: input {tuple(lms.shape)} gives a {freq_patches}x{time_patches} "
                             f"patch grid; the position embedding covers {freq_grid}x{time_grid}")
        x = x.flatten(2).transpose(1, 2)  # (B, F'*T', D), frequency-major like the conv output
        hidden = []

        def to_grid(tokens):  # (B, F'*T', D) -> (B, T', F', D)
            return tokens.reshape(batch, freq_patches, time_patches, dim).transpose(1, 2)

        if return_hidden:
            hidden.append(to_grid(x))
        pos_embed = self.pos_embed[:, 1:, :]
        if time_patches < time_grid:  # shorter chunk: the first columns of every frequency row
            pos_embed = pos_embed.reshape(1, freq_grid, time_grid, dim)[:, :, :time_patches, :]
            pos_embed = pos_embed.reshape(1, freq_grid * time_patches, dim)
        x = x + pos_embed
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(batch, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
            if return_hidden:
                hidden.append(to_grid(x[:, 1:, :]))
        x = self.norm(x)
        return to_grid(x[:, 1:, :]), (hidden if return_hidden else None)


# ----------------------------------------------------------------------------------------------
# Encoder = front end + ViT
# ----------------------------------------------------------------------------------------------
class M2DEncoder(nn.Module):
    """Waveform -> M2D frame features. Children ``backbone`` (:class:`M2DViT`) and ``to_spec``
    (:class:`MelSpectrogram`), the names the released checkpoints use.

    ``forward(waveform (B, L))`` returns frame features (B, T', F'*D) — (B, 62, 3840) for 10 s at
    32 kHz — and, with ``return_hidden=True``, also the list of depth + 1 hidden states
    (B, T', F', D). Subclasses (the taggers) add heads next to these two children, so their keys
    stay ``backbone.*``/``to_spec.*`` as in the DCASE checkpoints.
    """

    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = cfg if cfg is not None else M2DConfig()
        self.backbone = M2DViT(self.cfg)
        self.to_spec = MelSpectrogram(self.cfg.sample_rate, self.cfg.n_fft, self.cfg.win_length,
                                      self.cfg.hop_length, self.cfg.n_mels, self.cfg.f_min,
                                      self.cfg.f_max)

    # -- front end ------------------------------------------------------------------------------
    def log_mel(self, waveform):
        """(B, L) waveform -> (B, 1, n_mels, frames) log mel, ``log(mel + float32 eps)``."""
        mel = self.to_spec(waveform)
        return torch.log(mel + torch.finfo(torch.float32).eps).unsqueeze(1)

    def normalize(self, log_mel):
        """(x - mean) / std with ``backbone.norm_stats``."""
        mean, std = self.backbone.norm_stats[0], self.backbone.norm_stats[1]
        return (log_mel - mean) / std

    def normalized_log_mel(self, waveform):
        return self.normalize(self.log_mel(waveform))

    # -- encoder --------------------------------------------------------------------------------
    def encode_grid(self, lms, return_hidden=False):
        """Normalised log-mel (B, 1, n_mels, frames) of any length -> patch-token grid (B, T', F', D).

        Chunks of ``cfg.input_frames`` frames are encoded separately and joined in time (see the
        module docstring). Returns ``(grid, hidden)`` like :meth:`M2DViT.forward`.
        """
        if lms.dim() != 4 or lms.shape[1] != 1 or lms.shape[2] != self.cfg.n_mels:
            raise ValueError(f"M2DEncoder: expected log-mel (B, 1, {self.cfg.n_mels}, frames), got "
                             f"{tuple(lms.shape)}")
        unit = self.cfg.input_frames
        patch_frames = self.cfg.patch_size[1]
        frames = lms.shape[-1]
        n_chunks = (frames + unit - 1) // unit
        pad = (patch_frames - frames % patch_frames) % patch_frames
        if pad:
            lms = F.pad(lms, (0, pad))
        grids, hiddens = [], []
        for index in range(n_chunks):
            chunk = lms[..., index * unit:(index + 1) * unit]
            if chunk.shape[-1] < patch_frames:
                continue
            grid, hidden = self.backbone(chunk, return_hidden=return_hidden)
            grids.append(grid)
            hiddens.append(hidden)
        if not grids:
            raise ValueError(f"M2DEncoder: {frames} frames are shorter than one patch "
                             f"({patch_frames} frames)")
        grid = torch.cat(grids, dim=1)
        if not return_hidden:
            return grid, None
        hidden = [torch.cat([h[layer] for h in hiddens], dim=1) for layer in range(len(hiddens[0]))]
        return grid, hidden

    def encode_waveform_grid(self, waveform, return_hidden=False):
        """(B, L) waveform -> ``(grid (B, T', F', D), hidden or None)``."""
        return self.encode_grid(self.normalized_log_mel(waveform), return_hidden=return_hidden)

    def forward(self, waveform, return_hidden=False):
        """(B, L) waveform -> frame features (B, T', F'*D) [, hidden states]."""
        grid, hidden = self.encode_waveform_grid(waveform, return_hidden=return_hidden)
        frames = grid.flatten(2)
        return (frames, hidden) if return_hidden else frames


# ----------------------------------------------------------------------------------------------
# Checkpoint loaders
# ----------------------------------------------------------------------------------------------
def _backbone_of(module):
    if isinstance(module, M2DViT):
        return module
    backbone = getattr(module, "backbone", None)
    if isinstance(backbone, M2DViT):
        return backbone
    raise TypeError(f"expected an M2DViT or a module with a 'backbone' M2DViT, got "
                    f"{type(module).__name__}")


def _as_checkpoint(path_or_checkpoint):
    """(checkpoint dict, source name) from a path or an already loaded dict."""
    if isinstance(path_or_checkpoint, (str, os.PathLike)):
        return load_checkpoint_file(path_or_checkpoint), str(path_or_checkpoint)
    if isinstance(path_or_checkpoint, dict):
        return path_or_checkpoint, "<in-memory checkpoint>"
    raise TypeError(f"expected a checkpoint path or dict, got {type(path_or_checkpoint).__name__}")


def m2d_pth_to_backbone_state(checkpoint, backbone, source="<checkpoint>"):
    """The released M2D ``.pth`` rules (see ``m2d_vit_base_raw_checkpoint_derived.tsv``).

    Uses ``checkpoint['model']`` if present; removes ``module.ar.runtime.backbone.`` from every key;
    fills ``norm_stats`` with (-7.1, 4.2) when absent; drops every key that is not a parameter
    of the ViT (nnAudio ``to_spec`` buffers, the EVAR ``module.head.*``).
    Returns ``(backbone_state, dropped_keys)``.
    """
    if isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    tensors = {key.replace(M2D_PTH_BACKBONE_PREFIX, ""): value for key, value in checkpoint.items()
               if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(source, "holds no tensors (not an M2D weight file)")
    if "norm_stats" not in tensors:
        tensors["norm_stats"] = torch.tensor(DEFAULT_NORM_STATS, dtype=torch.float32)
    parameter_names = {name for name, _ in backbone.named_parameters()}
    state = {key: value for key, value in tensors.items() if key in parameter_names}
    dropped = sorted(key for key in tensors if key not in parameter_names)
    return state, dropped


def load_m2d_pth(module, path, load_head_norm=True):
    """Load a released M2D weight file (``weights_*.pth``) into an encoder or tagger, strictly.

    Args:
        module: an :class:`M2DEncoder` (or a tagger built on it), or an :class:`M2DViT`.
        path: the ``.pth`` file (or an already loaded dict).
        load_head_norm: if ``module`` has a ``head_norm`` BatchNorm of matching width and the file
            has the EVAR head's ``module.head.norm.running_mean/var``, copy those statistics (the
            DCASE baseline taggers start from them).
    Returns:
        the list of dropped file keys (``to_spec``, ``module.head.*`` ...).
    Raises:
        CheckpointError naming the file when an encoder key is missing or has the wrong shape
        (e.g. another input geometry: compare the folder name with :meth:`M2DConfig.from_weight_name`).
    """
    checkpoint, source = _as_checkpoint(path)
    backbone = _backbone_of(module)
    state, dropped = m2d_pth_to_backbone_state(checkpoint, backbone, source)
    load_strict(backbone, state, source=source)
    raw = checkpoint["model"] if isinstance(checkpoint.get("model"), dict) else checkpoint
    head_norm = getattr(module, "head_norm", None)
    if load_head_norm and isinstance(head_norm, nn.BatchNorm1d) and all(k in raw for k in M2D_PTH_HEAD_NORM_KEYS):
        mean, var = (raw[k] for k in M2D_PTH_HEAD_NORM_KEYS)
        if tuple(mean.shape) == tuple(head_norm.running_mean.shape):
            with torch.no_grad():
                head_norm.running_mean.copy_(mean)
                head_norm.running_var.copy_(var)
    return dropped


def pretrained_sed_key_map(key):
    """CP-JKU PretrainedSED file key -> our :class:`~s5lib.models.tagger.SEDTagger` key.

    ``model.X`` not already under ``model.m2d.`` becomes ``model.m2d.X``; the file's own
    ``strong_head.*``/``weak_head.*`` (447 AudioSet-strong classes) are dropped (None).
    """
    if key.startswith(("strong_head.", "weak_head.")):
        return None
    if key.startswith("model.") and not key.startswith("model.m2d."):
        return "model.m2d." + key[len("model."):]
    return key


SED_PRETRAINED_MISSING_OK = ("strong_head.", "weak_head.", "head_norm.")


def load_pretrained_sed(module, path):
    """Load the CP-JKU PretrainedSED M2D file (e.g. ``M2D_strong_1.pt``) into a SEDTagger.

    After :func:`pretrained_sed_key_map`, every key of ``module`` must be present with the right
    shape except the new heads and ``head_norm`` (which the file does not carry: they keep their
    initial values), and the file may have no other keys. Anything else raises CheckpointError.
    Returns the list of module keys left at their initial values.
    """
    checkpoint, source = _as_checkpoint(path)
    weights = extract_state_dict(checkpoint, prefixes=(), source=source)
    renamed = {}
    for key, value in weights.items():
        new_key = pretrained_sed_key_map(key)
        if new_key is not None:
            renamed[new_key] = value
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in renamed)
    bad_missing = [k for k in missing if not k.startswith(SED_PRETRAINED_MISSING_OK)]
    unexpected = sorted(k for k in renamed if k not in expected)
    mismatched = sorted(f"{k} (file {list(renamed[k].shape)}, model {list(expected[k].shape)})"
                        for k in renamed if k in expected and renamed[k].shape != expected[k].shape)
    if bad_missing or unexpected or mismatched:
        problem = f"does not fit {type(module).__name__} as a PretrainedSED file:"
        for title, keys in (("missing keys", bad_missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched)):
            if keys:
                more = f" ... and {len(keys) - 20} more" if len(keys) > 20 else ""
                problem += f"\n  {len(keys)} {title}: {', '.join(keys[:20])}{more}"
        raise CheckpointError(source, problem)
    module.load_state_dict(renamed, strict=False)
    return missing
