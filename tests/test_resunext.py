"""REDUX's attentive ResUNeXt: eq. 1 widths, grouped convolutions, Table 1 widths, the attention
gate, SpecAugment, and the separator interface."""
import pytest
import torch

from s5lib import constants
from s5lib.models.blocks import AttentionGate, ResNeXtBlock, group_width
from s5lib.models.checkpoints import CheckpointError
from s5lib.models.factory import build_separator, separator_config_from_weights
from s5lib.models.resunext import (DECODER_NAMES, ENCODER_NAMES, AttResUNeXt, ResUNeXtConfig,
                                   resunext_full_config)

FULL_SIZE_PARAMETERS = 44_600_096   # recipe README and conf/full/separator.yaml

TINY = dict(channels=(8, 16, 16, 32, 32), pre_channels=8, bottleneck_channels=32, condition_size=16,
            n_fft=256, hop_length=128, blocks_per_level=1, intermediate_blocks=1, momentum=0.1)


@pytest.fixture(scope="module")
def full_model():
    return AttResUNeXt(resunext_full_config())


def test_group_width_is_eq_1():
    assert group_width(32, 8) == 32      # floor(4 * 32 / 32) * 8
    assert group_width(64, 8) == 64
    assert group_width(384, 8) == 384    # floor(48) * 8
    assert group_width(100, 8) == 96     # floor(12.5) * 8
    assert group_width(8, 8) == 8        # floor(1) * 8
    assert group_width(4, 8) == 8        # below one channel per group: C


def test_full_size_layout(full_model):
    base = full_model.base
    assert sum(p.numel() for p in full_model.parameters()) == FULL_SIZE_PARAMETERS
    # Table 1: encoder 32->32->64->128->256->384, intermediate 384 x3, decoder 384->...->32
    enc = [(getattr(base, n).blocks[0].bn1.num_features, getattr(base, n).blocks[0].conv3.out_channels)
           for n in ENCODER_NAMES]
    assert enc == [(32, 32), (32, 64), (64, 128), (128, 256), (256, 384)]
    dec = [(getattr(base, n).up.in_channels, getattr(base, n).up.out_channels) for n in DECODER_NAMES]
    assert dec == [(384, 384), (384, 256), (256, 128), (128, 64), (64, 32)]
    assert len(base.intermediate) == 3
    assert all(b.bn1.num_features == 384 and b.conv3.out_channels == 384 for b in base.intermediate)
    for name in ENCODER_NAMES + DECODER_NAMES:
        assert len(getattr(base, name).blocks) == 8
    # eq. 1 at every block, grouped 3x3 with cardinality 8
    blocks = [m for m in full_model.modules() if isinstance(m, ResNeXtBlock)]
    assert len(blocks) == 5 * 8 + 3 + 5 * 8
    for block in blocks:
        out = block.conv3.out_channels
        inner = (4 * out // 32) * 8
        assert block.conv1.out_channels == inner and block.conv3.in_channels == inner
        assert block.conv2.groups == 8 and block.conv2.kernel_size == (3, 3)
        assert tuple(block.conv2.weight.shape) == (inner, inner // 8, 3, 3)
    # a transposed convolution starts every decoder level; each has its attention gate
    for name in DECODER_NAMES:
        level = getattr(base, name)
        assert isinstance(level.up, torch.nn.ConvTranspose2d) and level.up.stride == (2, 2)
        assert isinstance(level.gate, AttentionGate)


def test_grouped_convolution_is_grouped():
    torch.manual_seed(0)
    block = ResNeXtBlock(32, 32, cardinality=8, momentum=0.1)
    conv = block.conv2
    per_group = conv.in_channels // 8
    x = torch.randn(1, conv.in_channels, 6, 6)
    y = conv(x)
    x2 = x.clone()
    x2[:, :per_group] += torch.randn(1, per_group, 6, 6)   # change the inputs of group 0 only
    y2 = conv(x2)
    changed = (y2 - y).abs().flatten(2).amax(dim=2)[0]
    assert (changed[:per_group] > 0).all()
    assert torch.equal(changed[per_group:], torch.zeros(conv.out_channels - per_group))


def test_attention_gate_zero_weights_halves_the_skip():
    gate = AttentionGate(16, kernel=3)
    with torch.no_grad():
        for param in gate.parameters():
            param.zero_()
    skip, up = torch.randn(2, 16, 5, 7), torch.randn(2, 16, 5, 7)
    for mode in (gate.train, gate.eval):
        mode()
        assert torch.allclose(gate(skip, up), 0.5 * skip)
    # trained weights: a map in (0, 1) that depends on the decoder features
    torch.manual_seed(1)
    gate = AttentionGate(16).eval()
    first, second = gate.attention_map(skip, up), gate.attention_map(skip, -up)
    assert ((first > 0) & (first < 1)).all() and not torch.allclose(first, second)


def test_spec_augment_masks_bands_and_spans_in_training_only():
    torch.manual_seed(0)
    model = AttResUNeXt(ResUNeXtConfig(**TINY, spec_augment=True, freq_mask=10, time_mask=6))
    base = model.base
    x = torch.ones(64, 2, 40, 129)
    base.train()
    y = base.augment(x)
    assert torch.equal(y[:, 0], y[:, 1])                        # the same mask on every channel
    zero_bins = (y[:, 0] == 0).all(dim=1).sum(dim=1)            # bins masked over all frames
    zero_frames = (y[:, 0] == 0).all(dim=2).sum(dim=1)          # frames masked over all bins
    assert zero_bins.max() <= 10 and zero_frames.max() <= 6
    assert zero_bins.float().mean() > 2 and zero_frames.float().mean() > 1
    assert len({tuple(r.tolist()) for r in (y[:, 0, 0] == 0)}) > 1   # each sample its own
    assert ((y == 0) | (y == 1)).all()
    base.eval()
    assert torch.equal(base.augment(x), x)
    off = AttResUNeXt(ResUNeXtConfig(**TINY)).base.train()
    assert torch.equal(off.augment(x), x)


def test_separator_interface_and_switches():
    torch.manual_seed(0)
    model = build_separator(dict(type="resunextk", **TINY))
    assert model.kind == "resunextk"
    mixture = torch.randn(2, constants.N_FOA_CHANNELS, 8000) * 0.01
    query = torch.zeros(2, 54)
    query[0, 3] = 1.0
    query[1, 5] = query[1, 18 + 7] = 1.0
    out = model(mixture, query)
    assert out.shape == (2, 3, 8000)
    assert torch.equal(out[0, 1:], torch.zeros(2, 8000)) and out[1, 1].abs().max() > 0
    out.square().mean().backward()
    assert model.base.encoder1.blocks[0].conv2.weight.grad.abs().sum() > 0
    assert model.base.decoder5.gate.psi.weight.grad.abs().sum() > 0
    single = build_separator(dict(type="resunext", **TINY))
    assert single.config.num_slots == 1 and single(mixture, query[:, :18]).shape == (2, 1, 8000)
    encoder_only = AttResUNeXt(ResUNeXtConfig(**TINY, film_scope="encoder"))
    names = encoder_only.film_names()
    assert names and not any(n.startswith("decoder") for n in names)
    assert any(n.startswith("decoder") for n in model.film_names())
    plain = AttResUNeXt(ResUNeXtConfig(**TINY, attention=False))
    assert plain.base.decoder1.gate is None
    with pytest.raises(ValueError, match="film_scope"):
        ResUNeXtConfig(**TINY, film_scope="decoder")
    with pytest.raises(ValueError, match="5 encoder widths"):
        ResUNeXtConfig(**dict(TINY, channels=(8, 16, 16, 32, 32, 32)))


def test_phase1_placeholder_is_explained_outside_a_recipe():
    with pytest.raises(ValueError, match="base: run"):
        build_separator(dict(type="resunextk", **TINY, init_checkpoint="phase1"))


def test_plain_weights_need_a_config():
    weights = AttResUNeXt(ResUNeXtConfig(**TINY)).state_dict()
    with pytest.raises(CheckpointError, match="ResUNeXt"):
        separator_config_from_weights(weights, "x.pt")
