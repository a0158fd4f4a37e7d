"""The rendered pool (data reuse): pooled items equal the on-the-fly ones, only what is asked is
kept, indices vary between uses, and a refresh renders the next mixtures."""
import pytest
import torch

from s5lib.data.datasets import OnTheFlyMixtures
from s5lib.data.pool import RenderedPool, pool_from_config
from s5lib.data.synth import SynthConfig


@pytest.fixture(scope="module")
def fresh(bank_root):
    return OnTheFlyMixtures(bank_root, "train", SynthConfig(), epoch_size=6, seed=5)


def test_pooled_items_are_the_rendered_ones(fresh):
    pool = RenderedPool(fresh, 3, epoch_size=7, keys=["mixture", "label_vector"], channels=[0])
    assert len(pool) == 7
    fresh.set_epoch(0)
    for i in range(7):
        item = pool[i]
        assert set(item) == {"mixture", "label_vector", "index"}
        reference = fresh[i % 3]
        assert item["mixture"].shape == (1, reference["mixture"].shape[1])
        assert torch.equal(item["mixture"][0], reference["mixture"][0])
        assert torch.equal(item["label_vector"], reference["label_vector"])
    # the index differs between the uses of one pooled mixture and between epochs
    assert pool[0]["index"] != pool[3]["index"]
    pool.set_epoch(1)
    assert int(pool[0]["index"]) == 7


def test_refresh_renders_the_next_mixtures(fresh):
    pool = RenderedPool(fresh, 2, epoch_size=2, keys=["mixture"], refresh_epochs=2)
    first = pool[0]["mixture"].clone()
    pool.set_epoch(1)
    assert torch.equal(pool[0]["mixture"], first)  # same generation
    pool.set_epoch(2)
    fresh.set_epoch(1)
    assert torch.equal(pool[0]["mixture"], fresh[0]["mixture"])
    assert not torch.equal(pool[0]["mixture"], first)


def test_pool_config_errors(fresh):
    assert pool_from_config(fresh, {}, 6) is fresh
    with pytest.raises(ValueError, match="unknown option"):
        pool_from_config(fresh, {"mixtures": 2, "size": 3}, 6)
    with pytest.raises(ValueError, match="mixtures"):
        pool_from_config(fresh, {"channels": [0]}, 6)
    with pytest.raises(KeyError, match="no \\['wet'\\]"):
        RenderedPool(fresh, 1, keys=["wet"])


def test_cached_validation_items_equal_fresh_renders(tmp_path, monkeypatch):
    from s5lib.bin.prep_data import main as prep_data
    from s5lib.bin.common import read_dataset_info
    from s5lib.data.datasets import MetadataMixtures
    prep_data(["--out_dir", str(tmp_path / "data"), "--size", "tiny", "--n_valid", "3",
               "--n_test", "1", "--nj", "1"])
    info = read_dataset_info(str(tmp_path / "data"))
    plain = MetadataMixtures(info["valid_list"], info["bank_root"], "valid")
    cached = MetadataMixtures(info["valid_list"], info["bank_root"], "valid", cache_mb=1024)
    first = [cached[i] for i in range(3)]
    renders = []
    original = cached._render
    monkeypatch.setattr(cached, "_render", lambda i: renders.append(i) or original(i))
    for _ in range(2):
        for i in range(3):
            again, fresh = cached[i], plain[i]
            assert set(again) == set(fresh)
            for key in fresh:
                assert torch.equal(again[key], fresh[key]), key
    assert renders == []  # served from memory
    assert all(torch.equal(first[i]["mixture"], cached[i]["mixture"]) for i in range(3))
    # a cache too small for one item renders every time
    tiny = MetadataMixtures(info["valid_list"], info["bank_root"], "valid", cache_mb=0.001)
    tiny[0]
    assert tiny._cache == {}


def test_a_feature_pool_keeps_the_front_end_output_in_place_of_the_mixture(fresh):
    calls = []

    def feature_fn(mixture):  # stands in for a tagger's log mel: (1, C, L) -> (1, C, L // 100)
        calls.append(tuple(mixture.shape))
        return mixture[..., ::100] * 2.0

    pool = RenderedPool(fresh, 3, epoch_size=4, keys=["mixture", "label_vector"], channels=[0],
                        feature_fn=feature_fn)
    assert len(calls) == 3 and all(shape[:2] == (1, 1) for shape in calls)  # once per mixture
    fresh.set_epoch(0)
    for i in range(4):
        item = pool[i]
        assert set(item) == {"features", "label_vector", "index"}  # the mixture is not kept
        assert torch.equal(item["features"], fresh[i % 3]["mixture"][:1, ::100] * 2.0)
    assert len(calls) == 3
    with pytest.raises(KeyError, match="keep 'mixture'"):
        RenderedPool(fresh, 1, keys=["label_vector"], feature_fn=feature_fn)
    assert pool_from_config(fresh, {"mixtures": 2, "features": True}, 4,
                            feature_fn=feature_fn).items["features"].shape[0] == 2
    with pytest.raises(ValueError, match="no input features"):
        pool_from_config(fresh, {"mixtures": 2, "features": True}, 4)
    with pytest.raises(ValueError, match="true or false"):
        pool_from_config(fresh, {"mixtures": 2, "features": "log_mel"}, 4, feature_fn=feature_fn)
