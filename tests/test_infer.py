"""Model factory, full-size recipe configs, and the batched tag/separate helpers of inference."""
import os

import pytest
import torch
import yaml

from s5lib import constants
from s5lib.infer.separate import separate_batch, slot_query
from s5lib.infer.tag import tag_batch
from s5lib.models.factory import build_separator, build_tagger

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = os.path.join(REPO, "egs", "baseline", "conf", "full")


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", [("separator_resunetk.yaml", 29_888_747),
                                           ("separator_resunet.yaml", 29_869_523)])
def test_full_size_separator_configs(name, expected):
    with open(os.path.join(FULL, name)) as f:
        cfg = yaml.safe_load(f)
    assert n_params(build_separator(cfg["model"])) == expected


def test_full_size_tagger_config():
    with open(os.path.join(FULL, "tagger_m2dat.yaml")) as f:
        cfg = yaml.safe_load(f)
    assert cfg["model"]["type"] is None  # the year picks the head (train_tagger)
    model = build_tagger(dict(cfg["model"], type="m2d_2025"))
    assert n_params(model) == 85_506_836  # m2dat_2025_tagger.tsv
    # phase 1 trains the head only: BatchNorm has no affine, Linear(768, 18)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 13_842


def test_factory_rejects_unknown_types():
    with pytest.raises(ValueError, match="model.type"):
        build_separator({"type": "convtasnet"})
    with pytest.raises(ValueError, match="model.type"):
        build_tagger({"type": "panns"})


TINY_SEP = {"channels": [4, 4, 8, 8, 8, 8], "bottleneck_channels": 8, "condition_size": 16,
            "n_fft": 256, "hop_length": 128}


def test_slot_query():
    q = slot_query([["Speech", "Cough"], [], ["Typing", "Typing", "Buzzer"]])
    assert q.shape == (3, 54)
    q = q.view(3, 3, 18)
    assert q[0, 0, constants.CLASS_INDEX["Speech"]] == 1 and q[0, 1, constants.CLASS_INDEX["Cough"]] == 1
    assert q[0, 2].sum() == 0 and q[1].sum() == 0
    assert q[2, 1, constants.CLASS_INDEX["Typing"]] == 1
    with pytest.raises(ValueError):
        slot_query([["Speech"] * 4])


@pytest.mark.parametrize("kind", ["resunet", "resunetk"])
def test_separate_batch_matches_direct_calls(kind):
    torch.manual_seed(0)
    model = build_separator(dict(TINY_SEP, type=kind)).eval()
    mixture = torch.randn(2, 4, 8000) * 0.1
    labels = [["Speech", "Dishes"], ["Blender"]]
    out = separate_batch(model, mixture, labels, max_rows=2)
    assert [[lbl for lbl, _ in row] for row in out] == labels
    with torch.no_grad():
        if kind == "resunetk":
            direct = model(mixture, slot_query(labels))
            expected = direct[0, 1]
        else:
            query = torch.zeros(1, 18)
            query[0, constants.CLASS_INDEX["Dishes"]] = 1
            expected = model(mixture[:1], query)[0, 0]
    torch.testing.assert_close(out[0][1][1], expected)
    assert out[1][0][1].shape == (8000,)


class FixedTagger(torch.nn.Module):
    """Returns fixed logits, to check the decoding rules of tag_batch."""

    def __init__(self, logits, kind):
        super().__init__()
        self.logits = logits
        self.kind = kind

    def forward(self, mixture):
        return self.logits


def test_tag_batch_2025_rules():
    logits = torch.full((3, 18), -5.0)
    logits[0, [1, 2, 3, 4]] = torch.tensor([3.0, 2.0, 1.0, 4.0])  # 4 above threshold: keep 3
    logits[1, 7] = -1.0  # none above threshold: the most probable one
    logits[2, [0, 17]] = 2.0
    out = tag_batch(FixedTagger(logits, "m2d_2025"), torch.zeros(3, 4, 10))
    assert [lbl for lbl, _ in out[0]] == ["Clapping", "BicycleBell", "Blender"]
    assert [lbl for lbl, _ in out[1]] == ["Dishes"]
    assert sorted(lbl for lbl, _ in out[2]) == ["AlarmClock", "VacuumCleaner"]
    assert all(0 < p < 1 for row in out for _, p in row)


def test_tag_batch_2026_slots_keep_duplicates_and_drop_silence():
    logits = torch.full((1, 3, 19), -5.0)
    logits[0, 0, constants.CLASS_INDEX["Speech"]] = 5
    logits[0, 1, constants.CLASS_INDEX["Speech"]] = 5
    logits[0, 2, constants.SILENCE_INDEX] = 5
    out = tag_batch(FixedTagger(logits, "m2d_2026"), torch.zeros(1, 4, 10))
    assert [lbl for lbl, _ in out[0]] == ["Speech", "Speech"]


def test_training_start_seeds_the_model_initialisation(tmp_path):
    from s5lib.bin.common import read_dataset_info, start_training
    from s5lib.bin.prep_data import main as prep_data
    prep_data(["--out_dir", str(tmp_path / "data"), "--size", "tiny", "--n_valid", "1",
               "--n_test", "1", "--nj", "1"])
    info = read_dataset_info(str(tmp_path / "data"))
    weights = []
    for attempt in range(2):
        torch.manual_seed(100 + attempt)  # whatever happened before must not matter
        cfg = {"exp_dir": str(tmp_path / f"exp{attempt}"), "train": {"seed": 3, "device": "cpu"},
               "synth": {}, "year": 2025}
        start_training(cfg, info)
        weights.append(build_separator(dict(TINY_SEP, type="resunetk")).state_dict())
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
