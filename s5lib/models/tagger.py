"""Audio taggers built on the M2D encoder, their decoding rules and their losses.

Models (state-dict layouts equal the reference files in ``shared/reference/``):

=============================  ==============================================  ==========================
class                          output                                          reference layout
=============================  ==============================================  ==========================
:class:`M2DTagger2025`         logits (B, 18), multi-label (sigmoid, BCE)      ``m2dat_2025_tagger.tsv``
:class:`M2DTagger2026`         logits (B, 3, 19), one softmax per slot         ``m2dat_2026_1c_tagger.tsv``
:class:`M2DTagger2026Spatial`  same, from 4 channels                           ``m2dat_2026_4c_tagger.tsv``
:class:`SEDTagger`             frame (strong) and clip (weak) scores           ``cpjku_m2d_sed_wrapper.tsv``
=============================  ==============================================  ==========================

Pooled features: the released DCASE taggers use **flat** features — the mean over every patch
token, 768-d for ViT-Base (their ``head_norm``/``head`` are 768 wide; SPEC §7.1 says 3840, the
checkpoints say 768, and the checkpoints win). ``flat_features=False`` gives the SPEC's stacked
variant (mean over time of the 3840-d frame features); it cannot load the released files.
The SED tagger uses the stacked 3840-d frame features per frame.

The taggers return **logits**; probabilities are ``sigmoid`` (2025, SED strong) or ``softmax`` over
the last axis (2026). Decoding: :func:`decode_multilabel` (2025: p >= 0.5, at least 1, at most 3,
by probability) and :func:`decode_slots` (2026: arg-max per slot, silence dropped).
Losses: :func:`multilabel_bce`, :func:`pit_slot_ce` (2026), :func:`sed_loss` (CP-JKU).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from s5lib.constants import CLASSES, SILENCE, SILENCE_INDEX
from s5lib.losses.pit import best_permutation, gather_pairs
from s5lib.models.blocks import random_grid_keep
from s5lib.models.checkpoints import (CheckpointError, detect_prefix, extract_state_dict,
                                     load_strict, strip_prefix)
from s5lib.models.m2d import M2DConfig, M2DEncoder, _as_checkpoint

SLOT_CLASSES = tuple(CLASSES) + (SILENCE,)  # 19-way slot output, silence last (index 18)


def _reference_channel(waveform, ref_channel, name):
    """(B, L) as is, or channel ``ref_channel`` of (B, C, L)."""
    if waveform.dim() == 2:
        return waveform
    if waveform.dim() == 3:
        if not 0 <= ref_channel < waveform.shape[1]:
            raise ValueError(f"{name}: ref_channel {ref_channel} but the input has "
                             f"{waveform.shape[1]} channels")
        return waveform[:, ref_channel, :]
    raise ValueError(f"{name}: expected a (B, L) or (B, C, L) waveform, got {tuple(waveform.shape)}")


def _features_or_waveform(tagger, waveform, log_mel):
    """The normalised log mel a tagger's encoder reads: ``log_mel`` as given, or computed from
    ``waveform`` (exactly one of the two)."""
    if (waveform is None) == (log_mel is None):
        raise ValueError(f"{type(tagger).__name__}: give either a waveform or its log_mel, not "
                         f"{'both' if log_mel is not None else 'neither'}")
    return tagger.input_features(waveform) if log_mel is None else log_mel


POOLINGS = ("mean", "max", "mean_max")


def check_pooling(pooling):
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return pooling


def _pool_frames(frames, pooling):
    """Frame features (B, T', E) -> (B, E): ``mean`` over time, ``max`` over time, or
    ``mean_max``, their sum (the PANNs clip pooling: the mean keeps long sounds, the max keeps a
    short event that a mean over the whole clip dilutes)."""
    if pooling == "mean":
        return frames.mean(1)
    if pooling == "max":
        return frames.amax(1)
    return frames.mean(1) + frames.amax(1)


def _pool_tokens(grid, flat_features, pooling="mean"):
    """Patch-token grid (B, T', F', D) -> clip feature.

    ``pooling="mean"`` (the released taggers): the mean over all tokens (B, D) if flat, else the
    mean over time of the stacked frame features (B, F'*D). ``max`` / ``mean_max`` first average
    the frequency patches of each time step when flat (stack them when not), then pool over time
    (see :func:`_pool_frames`); none of them adds weights, so the state-dict layout is unchanged.
    """
    if pooling == "mean":
        return grid.mean(dim=(1, 2)) if flat_features else grid.flatten(2).mean(1)
    frames = grid.mean(2) if flat_features else grid.flatten(2)
    return _pool_frames(frames, check_pooling(pooling))


def _feature_dim(cfg, flat_features):
    return cfg.embed_dim if flat_features else cfg.frame_feature_dim


# ----------------------------------------------------------------------------------------------
# 2025: multi-label tagger
# ----------------------------------------------------------------------------------------------
class M2DTagger2025(M2DEncoder):
    """DCASE 2025 baseline tagger (M2D-AT): channel ``ref_channel`` -> M2D -> mean over tokens ->
    ``head_norm`` BatchNorm1d(affine=False) -> ``head`` Linear -> logits (B, n_classes).

    Keys: ``backbone.*``, ``to_spec.*`` (from :class:`M2DEncoder`), ``head_norm.*``, ``head.*``.
    ``pooling`` (``mean``, the baseline; ``max``; ``mean_max``) chooses the clip pooling of the
    tokens (:func:`_pool_tokens`); every choice has the same keys.
    """

    def __init__(self, cfg=None, n_classes=len(CLASSES), ref_channel=0, flat_features=True,
                 pooling="mean"):
        super().__init__(cfg)
        self.ref_channel = ref_channel
        self.flat_features = flat_features
        self.pooling = check_pooling(pooling)
        self.feature_dim = _feature_dim(self.cfg, flat_features)
        self.head_norm = nn.BatchNorm1d(self.feature_dim, affine=False)
        self.head = nn.Linear(self.feature_dim, n_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    @property
    def encoder(self):
        """The M2D part (this module itself: the encoder keys sit at the top level)."""
        return self

    def pool_grid(self, grid):
        """Patch-token grid (B, T', F', D) -> clip features (B, feature_dim)."""
        return _pool_tokens(grid, self.flat_features, self.pooling)

    def input_features(self, waveform):
        """What the trainable part reads: the normalised log mel (B, 1, n_mels, frames) of
        channel ``ref_channel``. The front end has no parameters, so a training pool can keep
        these instead of the waveform (``pool.features``)."""
        channel = _reference_channel(waveform, self.ref_channel, type(self).__name__)
        return self.normalized_log_mel(channel)

    def clip_features(self, waveform=None, log_mel=None):
        lms = _features_or_waveform(self, waveform, log_mel)
        grid, _ = self.encode_grid(lms)
        return self.pool_grid(grid)

    def forward(self, waveform=None, log_mel=None):
        """(B, L) or (B, C, L) waveform, or its ``log_mel`` (:meth:`input_features`) -> logits
        (B, n_classes)."""
        return self.head(self.head_norm(self.clip_features(waveform, log_mel)))

    @torch.no_grad()
    def predict(self, waveform, threshold=0.5, min_labels=1, max_labels=3):
        """Probabilities (B, K) and the decoded multi-hot (B, K) (see :func:`decode_multilabel`)."""
        probs = torch.sigmoid(self(waveform))
        return probs, decode_multilabel(probs, threshold, min_labels, max_labels)


# ----------------------------------------------------------------------------------------------
# 2026: three 19-way slots
# ----------------------------------------------------------------------------------------------
class SlotHead(nn.Module):
    """Mean over tokens -> ``m2d_out_norm`` BN(affine=False) -> ``linear`` (Linear to
    n_slots x track_input_dim, LayerNorm, ReLU) -> per slot ``tracks.i`` (Linear, LayerNorm, ReLU,
    Linear to n_classes), or a single Linear per slot when ``track_hidden_dim`` is None.

    Input (B, N, in_dim) tokens or (B, in_dim) pooled features; output logits (B, n_slots, n_classes).
    """

    def __init__(self, in_dim, n_slots=3, n_classes=len(SLOT_CLASSES), track_input_dim=1024,
                 track_hidden_dim=512):
        super().__init__()
        self.n_slots = n_slots
        self.track_input_dim = track_input_dim
        self.m2d_out_norm = nn.BatchNorm1d(in_dim, affine=False)
        self.linear = nn.Sequential(nn.Linear(in_dim, track_input_dim * n_slots),
                                    nn.LayerNorm(track_input_dim * n_slots), nn.ReLU())
        if track_hidden_dim is None:
            tracks = [nn.Linear(track_input_dim, n_classes) for _ in range(n_slots)]
        else:
            tracks = [nn.Sequential(nn.Linear(track_input_dim, track_hidden_dim),
                                    nn.LayerNorm(track_hidden_dim), nn.ReLU(),
                                    nn.Linear(track_hidden_dim, n_classes))
                      for _ in range(n_slots)]
        self.tracks = nn.ModuleList(tracks)

    def forward(self, x):
        if x.dim() == 3:
            x = x.mean(1)
        x = self.linear(self.m2d_out_norm(x))
        x = x.view(x.shape[0], self.n_slots, self.track_input_dim)
        return torch.stack([track(x[:, slot]) for slot, track in enumerate(self.tracks)], dim=1)


class M2DTagger2026(M2DEncoder):
    """DCASE 2026 baseline 1-channel tagger: channel ``ref_channel`` -> M2D -> :class:`SlotHead`.

    Keys: ``backbone.*``, ``to_spec.*``, ``head_norm.*`` (kept for checkpoint compatibility, not
    used by ``forward``, as in the baseline), ``head.*``. ``pooling`` as :class:`M2DTagger2025`.
    """

    def __init__(self, cfg=None, n_slots=3, n_classes=len(SLOT_CLASSES), ref_channel=0,
                 track_input_dim=1024, track_hidden_dim=512, flat_features=True, pooling="mean"):
        super().__init__(cfg)
        self.ref_channel = ref_channel
        self.flat_features = flat_features
        self.pooling = check_pooling(pooling)
        self.feature_dim = _feature_dim(self.cfg, flat_features)
        self.head_norm = nn.BatchNorm1d(self.feature_dim, affine=False)
        self.head = SlotHead(self.feature_dim, n_slots, n_classes, track_input_dim, track_hidden_dim)

    @property
    def encoder(self):
        return self

    input_features = M2DTagger2025.input_features

    def forward(self, waveform=None, log_mel=None):
        """(B, L) or (B, C, L) waveform, or its ``log_mel`` (:meth:`input_features`) -> slot
        logits (B, n_slots, n_classes)."""
        grid, _ = self.encode_grid(_features_or_waveform(self, waveform, log_mel))
        return self.head(self.pool_grid(grid))

    def pool_grid(self, grid):
        """Patch-token grid (B, T', F', D) -> clip features (B, feature_dim)."""
        return _pool_tokens(grid, self.flat_features, self.pooling)

    @torch.no_grad()
    def predict(self, waveform, class_names=SLOT_CLASSES, silence_index=SILENCE_INDEX):
        """Decoded labels with confidences per mixture (see :func:`decode_slots`)."""
        return decode_slots(self(waveform), class_names, silence_index)


class M2DBranch(M2DEncoder):
    """The per-channel M2D branch of :class:`M2DTagger2026Spatial` (keys ``m2d.*``): the encoder
    plus the baseline's unused ``head_norm`` (its ``head`` is an identity and has no keys)."""

    def __init__(self, cfg=None, flat_features=True):
        super().__init__(cfg)
        self.head_norm = nn.BatchNorm1d(_feature_dim(self.cfg, flat_features), affine=False)


class M2DTagger2026Spatial(nn.Module):
    """DCASE 2026 baseline multi-channel tagger: the same M2D on every channel, per-token features
    of the channels concatenated (channel-major), then one :class:`SlotHead` over
    n_channels x 768 features. Keys ``m2d.*`` and ``head.*``. ``pooling`` as
    :class:`M2DTagger2025`, over the concatenated per-token features.
    """

    def __init__(self, cfg=None, n_channels=4, n_slots=3, n_classes=len(SLOT_CLASSES),
                 track_input_dim=1024, track_hidden_dim=512, flat_features=True, pooling="mean"):
        super().__init__()
        self.n_channels = n_channels
        self.flat_features = flat_features
        self.pooling = check_pooling(pooling)
        self.m2d = M2DBranch(cfg, flat_features)
        self.cfg = self.m2d.cfg
        self.feature_dim = _feature_dim(self.cfg, flat_features)
        self.head = SlotHead(n_channels * self.feature_dim, n_slots, n_classes, track_input_dim,
                             track_hidden_dim)

    @property
    def encoder(self):
        return self.m2d

    def forward(self, waveform):
        """(B, n_channels, L) waveform -> slot logits (B, n_slots, n_classes)."""
        if waveform.dim() != 3 or waveform.shape[1] != self.n_channels:
            raise ValueError(f"M2DTagger2026Spatial: expected (B, {self.n_channels}, L), got "
                             f"{tuple(waveform.shape)}")
        batch, channels, length = waveform.shape
        grid, _ = self.m2d.encode_waveform_grid(waveform.reshape(batch * channels, length))
        if self.pooling != "mean":  # per time step: the channels' features concatenated, pooled
            _, time_patches, freq_patches, dim = grid.shape
            grid = grid.reshape(batch, channels, time_patches, freq_patches, dim)
            if self.flat_features:  # (B, T', F', C*D) -> mean over F', then over time
                grid = grid.permute(0, 2, 3, 1, 4).reshape(batch, time_patches, freq_patches, -1)
                return self.head(_pool_tokens(grid, True, self.pooling))
            frames = grid.flatten(3).permute(0, 2, 1, 3).reshape(batch, time_patches, -1)
            return self.head(_pool_frames(frames, self.pooling))  # (B, T', C*F'*D) over time
        if self.flat_features:
            tokens = grid.flatten(1, 2)  # (B*C, N, D)
        else:
            tokens = grid.flatten(2)  # (B*C, T', F'*D)
        tokens = tokens.reshape(batch, channels, tokens.shape[1], tokens.shape[2])
        tokens = tokens.permute(0, 2, 1, 3).reshape(batch, tokens.shape[2], -1)  # (B, N, C*D)
        return self.head(tokens)

    @torch.no_grad()
    def predict(self, waveform, class_names=SLOT_CLASSES, silence_index=SILENCE_INDEX):
        return decode_slots(self(waveform), class_names, silence_index)


# ----------------------------------------------------------------------------------------------
# CP-JKU SED tagger
# ----------------------------------------------------------------------------------------------
class _M2DHolder(nn.Module):
    """Container giving the SED tagger's encoder the key prefix ``model.m2d.`` (CP-JKU layout)."""

    def __init__(self, cfg):
        super().__init__()
        self.m2d = M2DEncoder(cfg)


class SEDTagger(nn.Module):
    """CP-JKU Stage-1/Stage-2 SED tagger (SPEC §7.2): M2D frame features (3840-d, 16 kHz front
    end by default; 32 kHz input resampled), resized to ``seq_len`` frames (linear interpolation
    when shorter, adaptive average pooling when longer), ``head_norm`` BN per frame, then

    * strong head: p_t = sigmoid(W_s e_t + b_s), per frame and class;
    * attention head, ``attention_over="classes"`` (default: the public code, which produced the
      reported numbers): softmax of (W_w e_t + b_w) over the CLASSES per frame, clamped at 1e-7,
      then normalised over time per class; ``"time"``: softmax over TIME per class (the paper);
    * clip score = sum_t alpha_t p_t (a convex combination of the frame probabilities).

    Keys: ``model.m2d.*``, ``head_norm.*``, ``strong_head.*``, ``weak_head.*``.
    ``forward`` returns a dict: ``strong_logits`` (B, T, K), ``strong_probs`` (B, T, K),
    ``attention`` (B, T, K), ``weak_probs`` (B, K), ``frame_features`` (B, T, 3840) and, with
    ``return_hidden``, ``hidden``: the depth + 1 encoder hidden states (B, T', F', D) at the
    encoder's own frame rate (62 per 10 s).
    """

    def __init__(self, cfg=None, n_classes=len(CLASSES), ref_channel=0, input_sample_rate=32000,
                 seq_len=250, attention_over="classes", use_head_norm=True):
        super().__init__()
        if attention_over not in ("time", "classes"):
            raise ValueError(f"SEDTagger: attention_over must be 'time' or 'classes', got "
                             f"{attention_over!r}")
        self.model = _M2DHolder(cfg if cfg is not None else M2DConfig.m2d_16k())
        self.cfg = self.model.m2d.cfg
        self.ref_channel = ref_channel
        self.input_sample_rate = input_sample_rate
        self.seq_len = seq_len
        self.attention_over = attention_over
        dim = self.cfg.frame_feature_dim
        self.head_norm = nn.BatchNorm1d(dim, affine=False) if use_head_norm else None
        self.strong_head = nn.Linear(dim, n_classes)
        self.weak_head = nn.Linear(dim, n_classes)

    @property
    def encoder(self):
        return self.model.m2d

    def resample(self, waveform):
        """Input rate -> the front end's rate (torchaudio's Kaiser-windowed sinc, as CP-JKU)."""
        if self.input_sample_rate == self.cfg.sample_rate:
            return waveform
        import torchaudio
        return torchaudio.functional.resample(waveform, self.input_sample_rate, self.cfg.sample_rate,
                                              resampling_method="sinc_interp_kaiser")

    def resize_frames(self, frames):
        """(B, T', D) -> (B, seq_len, D)."""
        if self.seq_len is None or frames.shape[1] == self.seq_len:
            return frames
        x = frames.transpose(1, 2)
        if x.shape[-1] < self.seq_len:
            x = F.interpolate(x, size=self.seq_len, mode="linear")
        else:
            x = F.adaptive_avg_pool1d(x, self.seq_len)
        return x.transpose(1, 2)

    def forward(self, waveform, return_hidden=False):
        channel = _reference_channel(waveform, self.ref_channel, type(self).__name__)
        frames, hidden = self.encoder.encode_waveform_grid(self.resample(channel),
                                                           return_hidden=return_hidden)
        frames = self.resize_frames(frames.flatten(2))  # (B, T, F'*D)
        x = frames
        if self.head_norm is not None:
            x = self.head_norm(x.transpose(1, 2)).transpose(1, 2)
        strong_logits = self.strong_head(x)
        strong_probs = torch.sigmoid(strong_logits)
        attention_logits = self.weak_head(x)
        if self.attention_over == "time":
            attention = torch.softmax(attention_logits, dim=1)
        else:
            attention = torch.softmax(attention_logits, dim=-1).clamp(min=1e-7, max=1.0)
            attention = attention / attention.sum(dim=1, keepdim=True)
        weak_probs = (attention * strong_probs).sum(dim=1)
        output = {"strong_logits": strong_logits, "strong_probs": strong_probs,
                  "attention": attention, "weak_probs": weak_probs, "frame_features": frames}
        if return_hidden:
            output["hidden"] = hidden
        return output

    @torch.no_grad()
    def predict(self, waveform, threshold=0.5, min_labels=1, max_labels=3):
        """Clip probabilities (B, K) and the decoded multi-hot (B, K)."""
        probs = self(waveform)["weak_probs"]
        return probs, decode_multilabel(probs, threshold, min_labels, max_labels)


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------
def decode_multilabel(probs, threshold=0.5, min_labels=1, max_labels=3):
    """Multi-hot (B, K) float: classes with p >= threshold, at most ``max_labels`` of them (the most
    probable); if fewer than ``min_labels`` pass, the ``min_labels`` most probable classes."""
    if probs.dim() != 2:
        raise ValueError(f"decode_multilabel: expected (B, K) probabilities, got {tuple(probs.shape)}")
    order = torch.argsort(probs, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(probs.shape[1], device=probs.device).expand_as(order))
    keep = ((probs >= threshold) & (rank < max_labels)) | (rank < min_labels)
    return keep.to(probs.dtype)


def multihot_to_labels(multihot, class_names=CLASSES):
    """(B, K) multi-hot -> one list of class names per row, in class order."""
    return [[class_names[k] for k in row.nonzero().flatten().tolist()] for row in multihot]


def slot_predictions(logits):
    """Slot logits (B, S, K) -> (class index (B, S), its softmax probability (B, S))."""
    probs, indices = torch.softmax(logits, dim=-1).max(dim=-1)
    return indices, probs


def decode_slots(logits, class_names=SLOT_CLASSES, silence_index=SILENCE_INDEX):
    """Slot logits (B, S, K) -> per mixture a list of ``(label, confidence)``, slot order, silence
    dropped. Duplicate labels are kept (2026 allows two sources of one class)."""
    indices, probs = slot_predictions(logits)
    decoded = []
    for row_indices, row_probs in zip(indices.tolist(), probs.tolist()):
        decoded.append([(class_names[k], p) for k, p in zip(row_indices, row_probs)
                        if k != silence_index])
    return decoded


def slot_targets(label_lists, n_slots=3, class_names=CLASSES, silence_index=SILENCE_INDEX):
    """Label lists (names; duplicates allowed) -> (B, n_slots) class indices padded with silence."""
    rows = []
    for labels in label_lists:
        if len(labels) > n_slots:
            raise ValueError(f"slot_targets: {len(labels)} labels {labels} for {n_slots} slots")
        try:
            row = [class_names.index(label) for label in labels]
        except ValueError:
            raise ValueError(f"slot_targets: unknown label in {labels}; known: {list(class_names)}") from None
        rows.append(row + [silence_index] * (n_slots - len(row)))
    return torch.tensor(rows, dtype=torch.long)


# ----------------------------------------------------------------------------------------------
# Training-time augmentation of the log mel
# ----------------------------------------------------------------------------------------------
AUGMENT_KEYS = ("freq_shift", "n_freq_masks", "freq_mask", "n_time_masks", "time_mask")


def check_augment(augment):
    """A tagger's ``augment`` section: {} (none) or non-negative integers for
    :data:`AUGMENT_KEYS`; returns it with every key filled (0: off)."""
    augment = dict(augment or {})
    unknown = sorted(set(augment) - set(AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"augment: unknown key(s) {unknown}; known: {list(AUGMENT_KEYS)}")
    out = {}
    for key in AUGMENT_KEYS:
        value = augment.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"augment.{key} must be a non-negative integer, got {value!r}")
        out[key] = value
    return out


def augment_log_mel(lms, freq_shift=0, n_freq_masks=0, freq_mask=0, n_time_masks=0, time_mask=0):
    """Random changes of a normalised log mel (B, 1, n_mels, frames), each row its own: a shift
    of the whole spectrum by an integer number of mel bands uniform in [-``freq_shift``,
    ``freq_shift``] (the edge band repeated into the gap: roughly a pitch shift, since the mel
    scale is nearly logarithmic above 1 kHz), then SpecAugment's ``n_freq_masks`` bands of up to
    ``freq_mask`` mel bands and ``n_time_masks`` spans of up to ``time_mask`` frames set to 0
    (the normalisation's mean)."""
    batch, _, bins, frames = lms.shape
    if freq_shift:
        shift = torch.randint(-int(freq_shift), int(freq_shift) + 1, (batch,), device=lms.device)
        source = (torch.arange(bins, device=lms.device)[None] - shift[:, None]).clamp(0, bins - 1)
        lms = torch.gather(lms, 2, source[:, None, :, None].expand(batch, 1, bins, frames))
    if n_freq_masks or n_time_masks:
        lms = lms * random_grid_keep(batch, (bins, freq_mask, n_freq_masks),
                                     (frames, time_mask, n_time_masks), lms.device, lms.dtype)
    return lms


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------
def multilabel_bce(logits, targets):
    """Binary cross-entropy per clip, mean over classes: (B, K), (B, K) -> (B,)."""
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype),
                                              reduction="none").mean(-1)


def slot_presence_bce(logits, label_vector, silence_index=SILENCE_INDEX):
    """BCE of the class presence the slots imply: (B, S, K) slot logits, (B, n_classes) multi-hot
    -> (B,), mean over the classes.

    A class is present unless every slot says otherwise: P(c) = 1 - prod_s (1 - p_s(c)), with
    p_s the softmax of slot s. Unlike the slot cross-entropy it needs no slot assignment, so
    every class gets a gradient from every mixture; it adds no weights to the tagger.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    keep = [k for k in range(probs.shape[-1]) if k != silence_index]
    probs = probs[..., keep]                                       # (B, S, n_classes)
    if probs.shape[-1] != label_vector.shape[-1]:
        raise ValueError(f"slot presence: {probs.shape[-1]} classes in the slots, "
                         f"{label_vector.shape[-1]} in the labels")
    log_absent = torch.log1p(-probs.clamp(max=1.0 - 1e-6)).sum(1)  # log prod_s (1 - p_s)
    log_present = torch.log((-torch.expm1(log_absent)).clamp(min=1e-12))  # log (1 - prod)
    target = label_vector.to(probs.dtype)
    return -(target * log_present + (1.0 - target) * log_absent).mean(-1)


def pairwise_slot_ce(logits, targets):
    """Cross-entropy of every (output slot i, target slot j) pair: (B, S, K), targets -> (B, S, S).

    ``targets`` are class indices (B, S) or class probabilities / one-hots (B, S, K).
    """
    if logits.dim() != 3:
        raise ValueError(f"slot CE: logits must be (B, S, K), got {tuple(logits.shape)}")
    batch, slots, n_classes = logits.shape
    log_probs = torch.log_softmax(logits, dim=-1)
    if targets.dim() == 2 and not targets.is_floating_point():
        if targets.shape != (batch, slots):
            raise ValueError(f"slot CE: targets {tuple(targets.shape)} do not match logits "
                             f"{tuple(logits.shape)}")
        if targets.min() < 0 or targets.max() >= n_classes:
            raise ValueError(f"slot CE: target class indices must be in [0, {n_classes}), got "
                             f"{targets.min().item()}..{targets.max().item()}")
        index = targets.to(logits.device).unsqueeze(1).expand(batch, slots, slots)
        return -torch.gather(log_probs, 2, index)
    if targets.shape != logits.shape:
        raise ValueError(f"slot CE: targets must be (B, S) indices or (B, S, K) probabilities like "
                         f"the logits {tuple(logits.shape)}, got {tuple(targets.shape)}")
    return -(log_probs.unsqueeze(2) * targets.to(log_probs.dtype).unsqueeze(1)).sum(-1)


def pit_slot_ce(logits, targets, return_perm=False):
    """Permutation-invariant slot cross-entropy (2026 tagger): (B, S, K), (B, S) -> (B,).

    The loss of a mixture is the mean over slots of CE(logits[:, i], targets[:, perm[i]]) for the
    best permutation. With ``return_perm`` also the permutation (B, S): ``perm[b, j]`` is the output
    slot matched with target slot j.
    """
    pairwise = pairwise_slot_ce(logits, targets)
    perm = best_permutation(pairwise)
    loss = gather_pairs(pairwise, perm).mean(1)
    return (loss, perm) if return_perm else loss


def sed_loss(output, strong_targets, weak_targets, strong_weight=0.5):
    """CP-JKU SED loss per clip: λ·BCE(strong) + (1 − λ)·BCE(weak), λ = ``strong_weight``.

    Args:
        output: :class:`SEDTagger` output dict (``strong_logits`` (B, T, K), ``weak_probs`` (B, K)).
        strong_targets: (B, T, K) frame labels; weak_targets: (B, K) clip labels.
    Returns: (B,).
    """
    strong_logits, weak_probs = output["strong_logits"], output["weak_probs"]
    if strong_targets.shape != strong_logits.shape or weak_targets.shape != weak_probs.shape:
        raise ValueError(f"sed_loss: targets {tuple(strong_targets.shape)}/{tuple(weak_targets.shape)} "
                         f"do not match outputs {tuple(strong_logits.shape)}/{tuple(weak_probs.shape)}")
    strong = F.binary_cross_entropy_with_logits(
        strong_logits, strong_targets.to(strong_logits.dtype), reduction="none").mean(dim=(1, 2))
    eps = 1e-7
    weak = F.binary_cross_entropy(weak_probs.clamp(eps, 1 - eps), weak_targets.to(weak_probs.dtype),
                                  reduction="none").mean(-1)
    return strong_weight * strong + (1 - strong_weight) * weak


def strong_targets_from_events(events, n_frames=250, duration_s=10.0, n_classes=len(CLASSES)):
    """Frame labels (n_frames, n_classes) from ``(class_index, onset_s, offset_s)`` events: a frame
    is active when it overlaps the event (frames split ``duration_s`` evenly)."""
    targets = torch.zeros(n_frames, n_classes)
    step = duration_s / n_frames
    for class_index, onset, offset in events:
        if not 0 <= class_index < n_classes:
            raise ValueError(f"strong_targets_from_events: class index {class_index} out of range")
        if offset < onset:
            raise ValueError(f"strong_targets_from_events: offset {offset} before onset {onset}")
        first = min(n_frames - 1, max(0, int(onset // step)))
        last = min(n_frames, max(first + 1, int(-(-offset // step))))  # ceil, at least one frame
        targets[first:last, class_index] = 1.0
    return targets


# ----------------------------------------------------------------------------------------------
# Fine-tuning and checkpoints
# ----------------------------------------------------------------------------------------------
def set_trainable(tagger, mode):
    """Choose what trains, as the DCASE baseline's ``finetuning_layers``.

    ``"head"``: everything outside the ViT backbone; ``"backbone_out"``: also the final norm;
    ``"N_blocks"``: also the last N blocks; ``"all"``: everything. ``norm_stats`` never trains.
    """
    backbone = tagger.encoder.backbone
    backbone_params = {id(p) for p in backbone.parameters()}
    for param in tagger.parameters():
        param.requires_grad = id(param) not in backbone_params
    if mode == "head":
        return
    if mode == "all":
        trainable = list(backbone.parameters())
    elif mode == "backbone_out":
        trainable = list(backbone.norm.parameters())
    elif mode.endswith("_blocks") and mode.split("_")[0].isdigit():
        count = int(mode.split("_")[0])
        if not 1 <= count <= len(backbone.blocks):
            raise ValueError(f"set_trainable: {mode!r} but the encoder has {len(backbone.blocks)} blocks")
        trainable = list(backbone.norm.parameters())
        for block in backbone.blocks[len(backbone.blocks) - count:]:
            trainable += list(block.parameters())
    else:
        raise ValueError(f"set_trainable: unknown mode {mode!r} (head, backbone_out, N_blocks, all)")
    for param in trainable:
        param.requires_grad = True
    backbone.norm_stats.requires_grad = False


def load_tagger_checkpoint(model, path):
    """Load a tagger checkpoint strictly: a Lightning file (``m2dat.ckpt``, ``m2dat_4c.ckpt``, CP-JKU
    SED training checkpoints), one of our trainer's ``checkpoint_*.pt`` (a phase-1 run that phase 2
    starts from) or a plain state_dict file. As the DCASE inference loader does: the weights are
    ``ckpt['state_dict']`` (else ``ckpt['model']``, else the dict itself), the prefix is whatever precedes the model's first
    key (``model.``), it is stripped, and every key/shape must match.
    """
    checkpoint, source = _as_checkpoint(path)
    # Lightning files keep the weights under 'state_dict', our trainer's under 'model'
    weights = extract_state_dict(checkpoint, prefixes=(), source=source)
    anchor = next(iter(model.state_dict()))
    prefix = detect_prefix(weights, anchor)
    if prefix is None:
        raise CheckpointError(source, f"no key ends with {anchor!r}: not a checkpoint of "
                                      f"{type(model).__name__} (first keys: {list(weights)[:5]})")
    load_strict(model, strip_prefix(weights, prefix), source=source)
    return model
