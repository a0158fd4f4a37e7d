"""KUBIG's end-to-end spatial semantic separator (DCASE 2026; SPEC §7.4): ``SpatialSeparatorModel``.

One model, no label query: for each of K = 3 output slots a waveform (a mask on the mixture), a
19-way class (18 + silence) and a direction of arrival (x, y, z). Factory type ``kubig``.

::

  mixture (B, 4, N) 32 kHz
    ├─ W channel -> 16 kHz -> BEATs (frozen) -> tokens (B, T', 8, D) -> each patch D -> n_compressed,
    │     the 8 patches of a time step concatenated -> Linear -> hidden; linear interpolation
    │     from the 160 ms patches to the 10 ms STFT frames                       "semantic"
    ├─ STFT of the 4 channels (n_fft 1024, hop 320):
    │     log power of W per bin, standardised per mixture -> Linear -> hidden    "spectral"
    │     active intensity Re(W* [X, Y, Z]) / energy and its norm, pooled into
    │     n_compressed bands -> Linear -> hidden                                  "spatial"
    └─ sum -> LayerNorm -> BiGRU (temporal_layers) -> x (B, T, hidden)
  per slot k: GELU(Linear_k(x)) -> h_k (B, T, hidden) (one projection per slot)
    mask      sigmoid(Linear(h_k)) (B, T, F) x complex STFT of W -> iSTFT -> waveform_k
    class     attention pooling of h_k over time -> MLP -> 19 logits
    doa       [pooled h_k, the mask-weighted mean intensity vector] -> MLP -> (x, y, z)

What the report fixes: the frozen BEATs on the down-mix, K_max = 3 masks applied to the
mixture, 19-way classes per separated slot, DoA regression per slot (silent target [0, 0, 0]),
hidden 256, n_compressed 32, ~1.5 M trainable parameters. What it leaves open and this toolkit
chose (README of egs/kubig): the down-mix is the W channel (the omnidirectional FOA channel;
a sum of the four would mix in the dipoles' direction-dependent signs); the spatial features are
active intensity vectors, the first-order reading of "spatial modeling" (the DoA of a plane wave
is the direction of its intensity); n_compressed is the width each BEATs patch is compressed to
(8 patches x 32 = 256 = hidden) and the number of frequency bands of the spatial features; masks
are real, on the STFT of W, so an estimate is a filtered W channel like the reference (channel 0).
At hidden 256, n_compressed 32, 3 GRU layers there are 1,578,680 trainable parameters out of
91,890,472 with the full BEATs (the report: ~1.5 M of 91.8 M).
"""
import dataclasses
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from s5lib import constants
from s5lib.models.beats import BEATs, beats_config, resample_to_beats

N_SLOT_CLASSES = constants.N_CLASSES + 1  # 18 + silence
W, Y, Z, X = 0, 1, 2, 3  # FOA channel order of the data (ACN: W, Y, Z, X)


@dataclasses.dataclass
class KubigConfig:
    beats: dict = dataclasses.field(default_factory=dict)  # BEATsConfig overrides of the preset
    beats_preset: str = "full"  # full (BEATs_iter3_plus_AS2M) | small (CPU runs)
    freeze_encoder: bool = True
    hidden_dim: int = 256
    n_compressed: int = 32
    num_slots: int = constants.MAX_TARGETS
    temporal_layers: int = 3
    n_fft: int = 1024
    hop_length: int = 320
    spatial_features: bool = True  # intensity-vector branch and the DoA head's intensity input
    mask_floor: float = 0.0  # masks are floor + (1 - floor) * sigmoid

    def check(self):
        for name in ("hidden_dim", "n_compressed", "num_slots", "temporal_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model.{name} must be a positive integer")
        if self.hidden_dim % 2:
            raise ValueError("model.hidden_dim must be even (a bidirectional GRU)")
        if not 0.0 <= self.mask_floor < 1.0:
            raise ValueError("model.mask_floor must be in [0, 1)")

    def beats_config(self):
        return beats_config(self.beats_preset, self.beats)


def band_matrix(n_bins, n_bands):
    """(n_bands, n_bins) averaging matrix: band b is the mean of a contiguous group of STFT bins
    (bin 0, DC, left out); the groups are as even as possible."""
    if n_bands > n_bins - 1:
        raise ValueError(f"model.n_compressed {n_bands}: more bands than the {n_bins - 1} STFT bins")
    edges = torch.linspace(1, n_bins, n_bands + 1).round().long()
    matrix = torch.zeros(n_bands, n_bins)
    for b in range(n_bands):
        matrix[b, edges[b]:edges[b + 1]] = 1.0 / float(edges[b + 1] - edges[b])
    return matrix


class SpatialSeparatorModel(nn.Module):
    training_step = "joint_pit"  # the trainer's loss step for this model (train_separator)

    def __init__(self, cfg: KubigConfig = KubigConfig()):
        super().__init__()
        cfg.check()
        self.config = cfg
        self.encoder = BEATs(cfg.beats_config())
        if cfg.freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
        dim, hidden, nc = self.encoder.config.encoder_embed_dim, cfg.hidden_dim, cfg.n_compressed
        n_bins = cfg.n_fft // 2 + 1
        self.compress = nn.Linear(dim, nc)
        self.semantic = nn.Linear(nc * self.encoder.freq_patches, hidden)
        self.spectral = nn.Linear(n_bins, hidden)
        if cfg.spatial_features:
            self.register_buffer("bands", band_matrix(n_bins, nc), persistent=False)
            self.spatial = nn.Linear(4 * nc, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.temporal = nn.GRU(hidden, hidden // 2, num_layers=cfg.temporal_layers,
                               batch_first=True, bidirectional=True)
        # one projection per slot (the slots' only asymmetry: what lets PIT give each one a
        # different source; the heads after it are shared)
        self.slot_proj = nn.Linear(hidden, cfg.num_slots * hidden)
        self.mask_head = nn.Linear(hidden, n_bins)
        self.attention = nn.Linear(hidden, 1)
        self.classifier = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(),
                                        nn.Linear(hidden, N_SLOT_CLASSES))
        doa_in = hidden + (3 if cfg.spatial_features else 0)
        self.doa_head = nn.Sequential(nn.Linear(doa_in, hidden // 2), nn.GELU(),
                                      nn.Linear(hidden // 2, 3))
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    # the frozen encoder stays in eval mode (no LayerDrop, no dropout) while the rest trains
    def train(self, mode=True):
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()
        return self

    def trainable_parameters(self):
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _stft(self, x):  # (B, C, N) -> complex (B, C, F, T)
        B, C, N = x.shape
        spec = torch.stft(x.reshape(B * C, N).float(), self.config.n_fft, self.config.hop_length,
                          window=self.window, center=True, return_complex=True)
        return spec.view(B, C, spec.shape[-2], spec.shape[-1])

    def _semantic(self, w, frames):
        wave16 = resample_to_beats(w)
        if self.config.freeze_encoder:
            with torch.no_grad():
                tokens = self.encoder(wave16)
        else:
            tokens = self.encoder(wave16)
        grid = self.encoder.token_grid(tokens.float())  # (B, T', F', D)
        z = self.semantic(self.compress(grid).flatten(2))  # (B, T', hidden)
        return F.interpolate(z.transpose(1, 2), size=frames, mode="linear",
                             align_corners=False).transpose(1, 2)

    def _intensity(self, spec):
        """Active intensity (B, 3, F, T) and energy (B, F, T) per STFT bin."""
        w = spec[:, W]
        vec = torch.stack([spec[:, X], spec[:, Y], spec[:, Z]], dim=1)
        intensity = (w.conj()[:, None] * vec).real
        energy = 0.5 * (w.abs().pow(2) + vec.abs().pow(2).sum(1)) + 1e-8
        return intensity, energy

    def _band_pool(self, x):  # (..., F, T) -> (..., bands, T): mean of each band's bins
        return torch.einsum("nf,...ft->...nt", self.bands, x)

    def forward(self, mixture):
        """(B, 4, N) FOA mixture -> dict: ``waveforms`` (B, K, N), ``logits`` (B, K, 19),
        ``doa`` (B, K, 3), ``masks`` (B, K, F, T)."""
        if mixture.dim() != 3 or mixture.shape[1] != constants.N_FOA_CHANNELS:
            raise ValueError(f"kubig: the mixture must be (batch, 4 FOA channels, samples), got "
                             f"{tuple(mixture.shape)}")
        cfg = self.config
        B, _, N = mixture.shape
        spec = self._stft(mixture)  # (B, 4, F, T)
        frames = spec.shape[-1]
        log_power = torch.log(spec[:, W].abs().pow(2) + 1e-10)
        # standardised per mixture (over bins and frames): raw log powers sit around -15 with a
        # spread of a few units, and a linear map of them is dominated by that offset (after
        # the LayerNorm every mixture then looked alike and the GRU saturated)
        mean = log_power.mean(dim=(1, 2), keepdim=True)
        std = log_power.std(dim=(1, 2), keepdim=True)
        x = self.spectral(((log_power - mean) / (std + 1e-5)).transpose(1, 2))  # (B, T, hidden)
        x = x + self._semantic(mixture[:, W], frames)
        intensity = energy = None
        if cfg.spatial_features:
            intensity, energy = self._intensity(spec)
            band_i = self._band_pool(intensity)  # (B, 3, bands, T)
            band_e = self._band_pool(energy)  # (B, bands, T)
            direction = band_i / band_e[:, None]
            feats = torch.cat([direction, direction.norm(dim=1, keepdim=True)], dim=1)
            x = x + self.spatial(feats.flatten(1, 2).transpose(1, 2))
        x, _ = self.temporal(self.norm(x))  # (B, T, hidden)
        T = x.shape[1]
        h = F.gelu(self.slot_proj(x)).view(B, T, cfg.num_slots, -1).transpose(1, 2)  # (B, K, T, hidden)
        masks = torch.sigmoid(self.mask_head(h)).transpose(2, 3)  # (B, K, F, T)
        if cfg.mask_floor:
            masks = cfg.mask_floor + (1 - cfg.mask_floor) * masks
        est_spec = masks * spec[:, W:W + 1]  # (B, K, F, T)
        waves = torch.istft(est_spec.reshape(B * cfg.num_slots, *est_spec.shape[2:]), cfg.n_fft,
                            cfg.hop_length, window=self.window, center=True, length=N)
        waves = waves.view(B, cfg.num_slots, N)
        weights = torch.softmax(self.attention(h), dim=2)  # (B, K, T, 1)
        pooled = (weights * h).sum(2)  # (B, K, hidden)
        logits = self.classifier(pooled)
        doa_in = pooled
        if cfg.spatial_features:  # the direction the slot's mask selects
            num = torch.einsum("bkft,bcft->bkc", masks, intensity)
            den = torch.einsum("bkft,bft->bk", masks, energy)[..., None]
            doa_in = torch.cat([pooled, num / den], dim=-1)
        doa = self.doa_head(doa_in)
        return {"waveforms": waves, "logits": logits, "doa": doa, "masks": masks}
