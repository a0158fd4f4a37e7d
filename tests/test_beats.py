"""BEATs: the released layout at full size, strict weights-only loading of a release-shaped file,
the shared relative-position table, and (opt-in) equality with the reference code's outputs."""
import os
import sys

import pytest
import torch

from s5lib.models.beats import (BEATs, BEATsConfig, BEATsTagger, kaldi_fbank, load_beats,
                                relative_position_buckets)
from s5lib.models.checkpoints import (CheckpointError, read_reference_tsv,
                                      reference_parameter_count, unique_parameter_count)

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")
if not os.path.isdir(REFERENCE_DIR):
    REFERENCE_DIR = "/work/shared/reference"
needs_reference = pytest.mark.skipif(not os.path.isdir(REFERENCE_DIR),
                                     reason="shared/reference layouts not available")


@pytest.fixture(scope="module")
def full_beats():
    return BEATs(BEATsConfig())


@needs_reference
@pytest.mark.parametrize("name, finetuned", [("beats_iter3_plus_as2m.tsv", False),
                                             ("beats_iter3_plus_as2m_finetuned.tsv", True)])
def test_full_size_state_dict_is_the_release_layout(name, finetuned, full_beats):
    rows, meta = read_reference_tsv(os.path.join(REFERENCE_DIR, name))
    model = BEATs(BEATsConfig(finetuned_model=True)) if finetuned else full_beats
    state = model.state_dict()
    assert list(state) == list(rows)  # names and order
    for key, value in state.items():
        assert (tuple(value.shape), str(value.dtype).replace("torch.", "")) == (
            tuple(rows[key][0]), rows[key][1]), key
    assert unique_parameter_count(model) == reference_parameter_count(meta)
    if not finetuned:
        assert len(state) == 250 and unique_parameter_count(model) == 90_311_792


def test_relative_position_table_is_one_parameter_under_twelve_names(full_beats):
    tables = [layer.self_attn.relative_attention_bias.weight for layer in full_beats.encoder.layers]
    assert len(tables) == 12 and all(t is tables[0] for t in tables)
    state = full_beats.state_dict()
    names = [k for k in state if k.endswith("relative_attention_bias.weight")]
    assert len(names) == 12
    assert len({state[k].data_ptr() for k in names}) == 1


def test_release_file_loads_strictly_and_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    cfg = BEATsConfig.small()
    source = BEATs(cfg).eval()
    with torch.no_grad():  # a non-trivial weight norm and gate
        source.encoder.pos_conv[0].weight_g.mul_(1.7)
        for layer in source.encoder.layers:
            layer.self_attn.grep_a.add_(0.4)
    path = str(tmp_path / "BEATs_small.pt")
    torch.save({"cfg": dict(cfg.__dict__), "model": source.state_dict()}, path)
    loaded = load_beats(path).eval()
    x = 0.1 * torch.randn(2, 16000 * 2)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))
    # a missing key names the file and the key
    state = source.state_dict()
    state.pop("encoder.pos_conv.0.weight_g")
    torch.save({"cfg": dict(cfg.__dict__), "model": state}, path)
    with pytest.raises(CheckpointError, match="weight_g"):
        load_beats(path)
    torch.save(source.state_dict(), path)  # a bare state_dict: no cfg to build from
    with pytest.raises(CheckpointError, match="'cfg'"):
        load_beats(path)
    torch.save({"cfg": {"encoder_embed_dim": 100, "encoder_attention_heads": 12},
                "model": source.state_dict()}, path)
    with pytest.raises(CheckpointError, match="multiple"):
        load_beats(path)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = str(tmp_path / "evil.pt")
    torch.save({"cfg": {"x": BEATsConfig()}, "model": {}}, path)
    with pytest.raises(CheckpointError):
        load_beats(path)


def test_buckets_and_front_end():
    buckets = relative_position_buckets(600, 320, 800)
    assert buckets.min() >= 0 and buckets.max() < 320
    assert int(buckets[10, 10]) == 0
    assert int(buckets[10, 11]) == 161 and int(buckets[11, 10]) == 1  # later keys: upper half
    assert torch.equal(torch.diagonal(buckets, 1), torch.full((599,), 161))
    far = buckets[0, 1:].tolist()
    assert far == sorted(far)  # monotone in distance
    fbank = kaldi_fbank(torch.zeros(1, 16000) + 1e-3 * torch.randn(1, 16000))
    assert fbank.shape == (1, 98, 128)
    with pytest.raises(ValueError, match="batch, samples"):
        kaldi_fbank(torch.zeros(16000))
    with pytest.raises(ValueError, match="at least"):
        BEATs(BEATsConfig.small())(torch.zeros(1, 1000))


def test_tokens_and_tagger_shapes_and_frozen_gradients():
    torch.manual_seed(0)
    model = BEATs(BEATsConfig.small())
    tokens = model(0.1 * torch.randn(2, 16000 * 3))
    grid = model.token_grid(tokens)
    assert grid.shape == (2, 18, 8, 96)  # 298 frames -> 18 patches of 16 frames, 8 bands
    tagger = BEATsTagger()
    for p in tagger.encoder.parameters():
        p.requires_grad_(False)
    logits = tagger(0.1 * torch.randn(2, 4, 32000 * 2))
    assert logits.shape == (2, 18)
    logits.sum().backward()
    assert all(p.grad is None for p in tagger.encoder.parameters())
    assert tagger.head.weight.grad is not None


@pytest.mark.skipif(not os.environ.get("S5_BEATS_REFERENCE_CODE"),
                    reason="set S5_BEATS_REFERENCE_CODE to a folder with the reference BEATs.py, "
                           "backbone.py and modules.py (microsoft/unilm beats/)")
def test_outputs_equal_the_reference_code():
    sys.path.insert(0, os.environ["S5_BEATS_REFERENCE_CODE"])
    try:
        import BEATs as reference  # noqa: N813
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    for cfg in (BEATsConfig(), BEATsConfig.small()):
        ref = reference.BEATs(reference.BEATsConfig(dict(cfg.__dict__))).eval()
        state = ref.state_dict()
        for key in state:
            if key.endswith(("grep_a", "weight_g")):
                state[key] = state[key] + 0.3 * torch.rand_like(state[key])
        ref.load_state_dict(state)
        ours = BEATs(cfg).eval()
        ours.load_state_dict(state, strict=True)
        x = 0.1 * torch.randn(2, 16000 * 4)
        with torch.no_grad():
            expected, _ = ref.extract_features(x)
            assert torch.allclose(ours(x), expected, atol=5e-5, rtol=0)
