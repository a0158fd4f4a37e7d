"""One data path for every trainer: partial renders (what a model reads) equal the same part of
the full render, on the CPU bit for bit and on the device within 1e-5; the tagger trains with
device synthesis (the code path runs without CUDA)."""
import numpy as np
import pytest
import torch

from s5lib.data.datasets import OnTheFlyMixtures
from s5lib.data.gpu_synth import collate_raw
from s5lib.data.synth import SynthConfig
from s5lib.data.training_data import TrainingDataError, build_training_data

TOL = 1e-5


@pytest.mark.parametrize("year", [2025, 2026])
def test_cpu_partial_render_is_the_full_render_in_part(bank_root, year):
    synth = SynthConfig(year=year)
    full = OnTheFlyMixtures(bank_root, "train", synth, epoch_size=6, seed=11)
    data = build_training_data(bank_root, "train", synth, 6, 11, "cpu", "cpu",
                               with_references=False, channels=[0])
    assert data.synthesis == "cpu" and data.batch_transform is None
    for index in range(6):
        whole, part = full[index], data.dataset[index]
        assert "references" not in part and part["mixture"].shape[0] == 1
        assert torch.equal(part["mixture"][0], whole["mixture"][0])  # bit for bit
        for key in ("label_vector", "label_index", "active", "onset", "offset", "n_targets"):
            assert torch.equal(part[key], whole[key]), key


@pytest.mark.parametrize("year", [2025, 2026])
def test_device_partial_render_matches_the_cpu_render(bank_root, year):
    synth = SynthConfig(year=year)
    full = OnTheFlyMixtures(bank_root, "train", synth, epoch_size=4, seed=3)
    data = build_training_data(bank_root, "train", synth, 4, 3, "device", "cpu",
                               with_references=False, channels=[0])
    assert data.synthesis == "device" and data.collate_fn is collate_raw
    batch = data.batch_transform(data.collate_fn([data.dataset[i] for i in range(4)]), "cpu")
    assert "references" not in batch and batch["mixture"].shape[1] == 1
    for index in range(4):
        error = (batch["mixture"][index, 0] - full[index]["mixture"][0]).abs().max()
        assert float(error) <= TOL
        assert torch.equal(batch["label_vector"][index], full[index]["label_vector"])
    # the full device render still carries everything
    whole = build_training_data(bank_root, "train", synth, 4, 3, "device", "cpu")
    batch = whole.batch_transform(whole.collate_fn([whole.dataset[i] for i in range(4)]), "cpu")
    assert batch["mixture"].shape[1] == 4 and "references" in batch
    assert float((batch["references"][0] - full[0]["references"]).abs().max()) <= TOL


def test_training_data_choices_and_errors(bank_root):
    synth = SynthConfig()
    assert build_training_data(bank_root, "train", synth, 2, 0, "auto", "cpu").synthesis == "cpu"
    with pytest.raises(TrainingDataError, match="synthesis must be one of"):
        build_training_data(bank_root, "train", synth, 2, 0, "gpu", "cpu")
    with pytest.raises(TrainingDataError, match="pooled mixtures are rendered on the CPU"):
        build_training_data(bank_root, "train", synth, 2, 0, "device", "cpu", pool={"mixtures": 2})
    with pytest.raises(TrainingDataError, match="references"):  # a tagger's data has none
        build_training_data(bank_root, "train", synth, 2, 0, "cpu", "cpu", with_references=False,
                            pool={"mixtures": 1, "keys": ["mixture", "references"]})


def test_tagger_trains_with_device_synthesis(tmp_path):
    import yaml
    from s5lib.bin.prep_data import main as prep_data
    from s5lib.bin.train_tagger import main as train_tagger
    data = tmp_path / "data"
    prep_data(["--out_dir", str(data), "--size", "tiny", "--n_valid", "2", "--n_test", "1",
               "--nj", "1"])
    config = tmp_path / "tagger.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"type": "m2d_2025", "m2d": {"embed_dim": 32, "depth": 1, "num_heads": 2}},
        "epoch_size": 4, "valid_max_mixtures": 2, "synthesis": "device",
        "train": {"max_steps": 2, "batch_size": 2, "device": "cpu", "progress": False}}))
    train_tagger(["--config", str(config), "--data", str(data), "--exp_dir", str(tmp_path / "e")])
    state = torch.load(tmp_path / "e" / "checkpoint_last.pt", weights_only=True)
    assert state["step"] == 2
    log = (tmp_path / "e" / "train.log").read_text()
    assert "rendered on cpu" in log and "no references" in log
    assert np.isfinite(float(state["best_value"]))


def test_pool_channels_are_rendered_channels(bank_root):
    """A pool that keeps channel 0 renders only channel 0 (the same values as the full render);
    a pool asking for other channels than the model reads is an error."""
    synth = SynthConfig()
    full = OnTheFlyMixtures(bank_root, "train", synth, epoch_size=2, seed=4)
    data = build_training_data(bank_root, "train", synth, 2, 4, "cpu", "cpu", with_references=False,
                               pool={"mixtures": 2, "channels": [0]})
    assert data.dataset.dataset.channels == [0]  # the pool's source renders one channel
    for index in range(2):
        assert torch.equal(data.dataset[index]["mixture"], full[index]["mixture"][[0]])
    with pytest.raises(TrainingDataError, match="differ from the channels the model reads"):
        build_training_data(bank_root, "train", synth, 2, 4, "cpu", "cpu", with_references=False,
                            channels=[0], pool={"mixtures": 2, "channels": [1]})


@pytest.mark.parametrize("synthesis", ["cpu", "device"])
def test_mixit_pairs_without_references(bank_root, synthesis):
    """MixIT's request: two mixtures per item, no references, the same values as the full render."""
    synth = SynthConfig()
    full = OnTheFlyMixtures(bank_root, "train", synth, epoch_size=2, seed=8, mixit_pairs=True)
    data = build_training_data(bank_root, "train", synth, 2, 8, synthesis, "cpu",
                               with_references=False, mixit_pairs=True)
    items = [data.dataset[i] for i in range(2)]
    batch = data.batch_transform(data.collate_fn(items), "cpu") if data.batch_transform else \
        torch.utils.data.default_collate(items)
    assert "references" not in batch and "references2" not in batch
    for index in range(2):
        for key in ("mixture", "mixture2"):
            error = (batch[key][index] - full[index][key]).abs().max()
            assert float(error) <= (0 if synthesis == "cpu" else TOL), key
