"""Building blocks shared by the separators: the FiLM condition MLP, embedding injection and DPRNN.

* :class:`ConditionMLP` — ``Linear -> LayerNorm -> ReLU`` twice: the label query network of the
  baseline separators and, applied per frame to a (B, T, 1) activity curve, CP-JKU's Time-FiLM
  encoder (SPEC §7.2). Its output goes through a separator's FiLM layers.
* :class:`EmbeddingInjection` — CP-JKU's injection of a tagger's hidden states into a U-Net
  bottleneck: a softmax-weighted sum over the hidden layers, BatchNorm + LeakyReLU, bilinear resize
  to the bottleneck grid, a 1x1 projection, then both sides standardised per sample and channel and
  merged as ``a * x + b * f`` (learnable scalars, start 1).
* :class:`DualPathRNN` — dual-path recurrent blocks over a (B, C, T, F) map: in each block a path
  along time (every frequency row is a sequence) then a path along frequency (every frame is a
  sequence); each path is a multi-layer bidirectional GRU, a linear map back to C, GroupNorm(1, C)
  and a residual connection. After the blocks: PReLU and a 1x1 convolution.
* :class:`ResNeXtBlock` / :class:`ResNeXtStack` — REDUX's pre-activation ResNeXt bottleneck with an
  additive FiLM bias after each BatchNorm (:mod:`s5lib.models.resunext`).
* :class:`AttentionGate` — the attentive residual path that gates a U-Net skip by the up-sampled
  decoder features.

FiLM biases travel as flat dicts keyed by ``'->'``-joined module paths; :func:`sub_biases` takes the
part of one sub-module.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

LEAKY_SLOPE = 0.01
STANDARDISE_EPS = 1e-6
GROUP_NORM_EPS = 1e-8   # the DPRNN paths' GroupNorm (CP-JKU's FaSNet-style DPRNN)


def xavier_init(layer):
    """Xavier-uniform weights and zero bias (the ResUNet30 family's initialisation)."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def sub_biases(biases, block):
    """The entries of a flat FiLM dict that belong to ``block``, with ``block->`` removed."""
    prefix = block + "->"
    return {name[len(prefix):]: value for name, value in biases.items() if name.startswith(prefix)}


class ConditionMLP(nn.Sequential):
    """``Linear(in, width) -> LN -> ReLU -> Linear(width, width) -> LN -> ReLU`` (keys ``0`` .. ``5``);
    works on (B, in) vectors and on (B, T, in) sequences alike."""

    def __init__(self, in_features, width):
        super().__init__(nn.Linear(in_features, width), nn.LayerNorm(width), nn.ReLU(),
                         nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU())


def random_span_keep(batch, size, widest, count, device=None, dtype=torch.float32):
    """SpecAugment's masks along one axis: (batch, size), 0 inside ``count`` random spans per row
    and 1 elsewhere. Each span's width is uniform in [0, ``widest``] (at most ``size``), its
    start uniform over the positions where it fits; the rows draw their own spans."""
    keep = torch.ones(batch, size, device=device, dtype=dtype)
    positions = torch.arange(size, device=device)
    for _ in range(int(count)):
        width = torch.randint(0, int(widest) + 1, (batch,), device=device).clamp(max=size)
        start = (torch.rand(batch, device=device) * (size - width + 1)).floor().long()
        inside = (positions[None] >= start[:, None]) & (positions[None] < (start + width)[:, None])
        keep = keep * (~inside).to(dtype)
    return keep


def random_grid_keep(batch, rows, cols, device=None, dtype=torch.float32):
    """SpecAugment's masks of a 2-D map: (batch, 1, n_rows, n_cols), the product of
    :func:`random_span_keep` along the rows then the columns; ``rows`` / ``cols`` are
    (size, widest, count)."""
    along_rows = random_span_keep(batch, *rows, device=device, dtype=dtype)
    along_cols = random_span_keep(batch, *cols, device=device, dtype=dtype)
    return along_rows[:, None, :, None] * along_cols[:, None, None, :]


def standardise(x):
    """Per sample and channel over the last two axes: ``(x - mean) / (unbiased std + 1e-6)``."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.flatten(-2).std(dim=-1, unbiased=True)[..., None, None]
    return (x - mean) / (std + STANDARDISE_EPS)


class EmbeddingInjection(nn.Module):
    """Hidden states of a tagger -> features merged into a bottleneck (B, C, T, F).

    Args:
        n_layers: how many hidden states are mixed (13 for a 12-block ViT: patch embedding + blocks).
        embed_dim: their width (768); out_channels: the bottleneck's width (384).
    Keys: ``layer_weights`` (n_layers,), ``norm`` (BatchNorm2d(embed_dim)), ``proj`` (1x1 conv with
    bias), ``scale_bottleneck`` and ``scale_injected`` (scalars).
    """

    def __init__(self, n_layers, embed_dim, out_channels, momentum=0.01):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(n_layers))  # equal weights after softmax
        self.norm = nn.BatchNorm2d(embed_dim, momentum=momentum)
        self.proj = nn.Conv2d(embed_dim, out_channels, 1)
        self.scale_bottleneck = nn.Parameter(torch.ones(()))
        self.scale_injected = nn.Parameter(torch.ones(()))

    def mix(self, hidden):
        """``hidden``: a list of n_layers tensors (B, T', F', D) -> their softmax-weighted sum."""
        if len(hidden) != self.layer_weights.numel():
            raise ValueError(f"EmbeddingInjection: expected {self.layer_weights.numel()} hidden "
                             f"states, got {len(hidden)}")
        weights = torch.softmax(self.layer_weights, dim=0)
        return sum(w * h for w, h in zip(weights, hidden))

    def features(self, mixed, size):
        """A weighted sum (B, T', F', D) from :meth:`mix` -> (B, out_channels, *size)."""
        x = mixed.permute(0, 3, 1, 2)                                 # (B, D, T', F')
        x = F.leaky_relu(self.norm(x), LEAKY_SLOPE)
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        return self.proj(x)

    def merge(self, bottleneck, features):
        """``a * std(bottleneck) + b * std(features)``: the new bottleneck (same shape)."""
        return (self.scale_bottleneck * standardise(bottleneck)
                + self.scale_injected * standardise(features.to(bottleneck.dtype)))


class _DualPathLeg(nn.Module):
    """BiGRU along one axis, Linear back to the width, GroupNorm(1, C), residual."""

    def __init__(self, channels, hidden, num_layers, dropout):
        super().__init__()
        self.rnn = nn.GRU(channels, hidden, num_layers=num_layers, batch_first=True,
                          bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)
        self.linear = nn.Linear(2 * hidden, channels)
        self.norm = nn.GroupNorm(1, channels, eps=GROUP_NORM_EPS)

    def forward(self, x, along):
        """x (B, C, T, F); ``along`` 'time' or 'freq'."""
        batch, channels, frames, bins = x.shape
        if along == "time":
            seq = x.permute(0, 3, 2, 1).reshape(batch * bins, frames, channels)
        else:
            seq = x.permute(0, 2, 3, 1).reshape(batch * frames, bins, channels)
        if seq.is_cuda and not torch.compiler.is_compiling():
            self.rnn.flatten_parameters()  # one weight chunk: cuDNN's fused kernel, not a slow copy
        out = self.linear(self.rnn(seq.contiguous())[0])
        if along == "time":
            out = out.reshape(batch, bins, frames, channels).permute(0, 3, 2, 1)
        else:
            out = out.reshape(batch, frames, bins, channels).permute(0, 3, 1, 2)
        return x + self.norm(out.contiguous())


class DualPathBlock(nn.Module):
    def __init__(self, channels, hidden, num_layers, dropout):
        super().__init__()
        self.time_path = _DualPathLeg(channels, hidden, num_layers, dropout)
        self.freq_path = _DualPathLeg(channels, hidden, num_layers, dropout)

    def forward(self, x):
        return self.freq_path(self.time_path(x, "time"), "freq")


class DualPathRNN(nn.Module):
    """``num_blocks`` dual-path blocks, then PReLU and a 1x1 conv (keys ``blocks.i.{time,freq}_path.
    {rnn,linear,norm}``, ``prelu``, ``output``). (B, C, T, F) -> (B, C, T, F)."""

    def __init__(self, channels, hidden=256, num_blocks=2, num_layers=2, dropout=0.1):
        super().__init__()
        self.blocks = nn.ModuleList(DualPathBlock(channels, hidden, num_layers, dropout)
                                    for _ in range(num_blocks))
        self.prelu = nn.PReLU()
        self.output = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.output(self.prelu(x))


def group_width(out_channels, cardinality):
    """Report eq. 1: ``G_C = floor(4 * O_ch / 32) * C``, at least ``C`` (one channel per group)."""
    return max(1, (4 * int(out_channels)) // 32) * int(cardinality)


class ResNeXtBlock(nn.Module):
    """(BN + FiLM bias -> LeakyReLU -> conv) x3: 1x1 to G_C, grouped 3x3, 1x1 to the output width;
    identity or 1x1-conv shortcut. Keys ``bn{1,2,3}``, ``conv{1,2,3}``, ``shortcut``."""

    def __init__(self, in_channels, out_channels, cardinality, momentum, conditioned=True):
        super().__init__()
        inner = group_width(out_channels, cardinality)
        self.inner, self.groups, self.conditioned = inner, int(cardinality), conditioned
        self.bn1 = nn.BatchNorm2d(in_channels, momentum=momentum)
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner, momentum=momentum)
        self.conv2 = nn.Conv2d(inner, inner, 3, padding=1, groups=self.groups, bias=False)
        self.bn3 = nn.BatchNorm2d(inner, momentum=momentum)
        self.conv3 = nn.Conv2d(inner, out_channels, 1, bias=False)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        for layer in (self.conv1, self.conv2, self.conv3) + (
                (self.shortcut,) if self.shortcut is not None else ()):
            xavier_init(layer)

    def film_sizes(self):
        if not self.conditioned:
            return []
        return [("beta1", self.bn1.num_features), ("beta2", self.bn2.num_features),
                ("beta3", self.bn3.num_features)]

    def forward(self, x, biases):
        h = x
        for i in (1, 2, 3):
            h = getattr(self, f"bn{i}")(h)
            if self.conditioned:
                h = h + biases[f"beta{i}"]
            h = getattr(self, f"conv{i}")(F.leaky_relu(h, LEAKY_SLOPE))
        residual = x if self.shortcut is None else self.shortcut(x)
        return residual + h


class ResNeXtStack(nn.ModuleList):
    """``n`` ResNeXt blocks, the first ``in -> out``, the others ``out -> out`` (keys ``0``, ``1``, ..)."""

    def __init__(self, n, in_channels, out_channels, cardinality, momentum, conditioned):
        super().__init__(ResNeXtBlock(in_channels if i == 0 else out_channels, out_channels,
                                      cardinality, momentum, conditioned) for i in range(n))

    def film_sizes(self):
        return [(f"{i}->{name}", size) for i, block in enumerate(self) for name, size in block.film_sizes()]

    def run(self, x, biases):
        for i, block in enumerate(self):
            x = block(x, sub_biases(biases, str(i)))
        return x


class AttentionGate(nn.Module):
    """Gate a skip (B, C, T, F) by the up-sampled decoder features (B, C, T, F):
    ``skip * sigmoid(psi(LeakyReLU(BN(conv(skip)) + BN(conv(up)))))``, one map for all channels."""

    def __init__(self, channels, kernel=3, momentum=0.01):
        super().__init__()
        inner = max(1, channels // 2)
        self.skip_conv = nn.Conv2d(channels, inner, kernel, padding=kernel // 2, bias=False)
        self.skip_bn = nn.BatchNorm2d(inner, momentum=momentum)
        self.gate_conv = nn.Conv2d(channels, inner, kernel, padding=kernel // 2, bias=False)
        self.gate_bn = nn.BatchNorm2d(inner, momentum=momentum)
        self.psi = nn.Conv2d(inner, 1, 1)
        for layer in (self.skip_conv, self.gate_conv, self.psi):
            xavier_init(layer)

    def attention_map(self, skip, up):
        joint = self.skip_bn(self.skip_conv(skip)) + self.gate_bn(self.gate_conv(up))
        return torch.sigmoid(self.psi(F.leaky_relu(joint, LEAKY_SLOPE)))

    def forward(self, skip, up):
        return skip * self.attention_map(skip, up)
