"""Training defects of issue 9: the tagger's two-phase schedule, the single-query ResUNet's slot
choice, decoding options that must act or be refused, and full configs equal to the official ones."""
import os

import pytest
import torch
import yaml

from s5lib import constants
from s5lib.bin.train_separator import pick_query_slot
from s5lib.infer.tag import check_decode, tag_batch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = os.path.join(REPO, "egs", "baseline", "conf", "full")


def test_single_query_slot_is_always_an_active_one():
    # after crop_batch, slot 0 may be silent while 1 and 2 hold targets
    active = torch.tensor([[False, True, True]] * 50 + [[True, False, True]] * 50
                          + [[False, False, True]] * 10)
    slots = pick_query_slot(active, torch.arange(active.shape[0]))
    assert bool(active[torch.arange(active.shape[0]), slots].all())
    first = slots[:50].tolist()
    assert set(first) == {1, 2}  # both active slots are trained, slot 2 too
    assert set(slots[50:100].tolist()) == {0, 2}
    assert set(slots[100:].tolist()) == {2}
    # the choice follows the item index: the same for any batch composition
    assert torch.equal(pick_query_slot(active[3:9], torch.arange(3, 9)), slots[3:9])


class SlotStub(torch.nn.Module):
    kind = "m2d_2026"

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, mixture):
        return self.logits


def test_decode_options_act_or_are_refused():
    assert check_decode("m2d_2025", {"threshold": 0.3})["threshold"] == 0.3
    with pytest.raises(ValueError, match="threshold=0.3 has no effect on the m2d_2026 tagger"):
        check_decode("m2d_2026", {"threshold": 0.3})
    with pytest.raises(ValueError, match="max_labels=2 has no effect on the m2d_2026_4c"):
        check_decode("m2d_2026_4c", {"max_labels": 2})
    with pytest.raises(ValueError, match="min_confidence=0.5 has no effect on the m2d_2025"):
        check_decode("m2d_2025", {"min_confidence": 0.5})
    with pytest.raises(ValueError, match="unknown option"):
        check_decode("m2d_2025", {"treshold": 0.5})
    # the defaults of both kinds pass for either (one infer.yaml serves both years)
    assert check_decode("m2d_2026", {"threshold": 0.5, "min_labels": 1, "max_labels": 3})
    # min_confidence acts on the slot tagger: a slot below it becomes silence
    logits = torch.full((1, 3, 19), -4.0)
    logits[0, 0, constants.CLASS_INDEX["Speech"]] = 6.0   # p close to 1
    logits[0, 1, constants.CLASS_INDEX["Cough"]] = -3.0   # arg-max, but p about 0.13
    logits[0, 2, constants.SILENCE_INDEX] = 6.0
    plain = tag_batch(SlotStub(logits), torch.zeros(1, 4, 8))
    assert [label for label, _ in plain[0]] == ["Speech", "Cough"]
    strict = tag_batch(SlotStub(logits), torch.zeros(1, 4, 8),
                       **check_decode("m2d_2026", {"min_confidence": 0.5}))
    assert [label for label, _ in strict[0]] == ["Speech"]


def test_full_configs_follow_the_official_optimiser_settings():
    for name in ("tagger_m2dat.yaml", "separator_resunet.yaml", "separator_resunetk.yaml"):
        with open(os.path.join(FULL, name)) as f:
            train = yaml.safe_load(f)["train"]
        assert train["weight_decay"] == 0.0, name
        assert train["amsgrad"] is True, name
        assert train["grad_clip"] == 0.5, name
        assert train["sync_batchnorm"] == "auto", name
        assert train.get("scheduler", "constant") == "constant", name
    with open(os.path.join(FULL, "tagger_m2dat.yaml")) as f:
        phases = yaml.safe_load(f)["phases"]
    assert [(p["model"]["trainable"], p["train"]["lr"], p["train"]["batch_size"]) for p in phases] \
        == [("head", 1e-3, 32), ("2_blocks", 1e-5, 16)]


def test_tagger_phase_two_starts_from_phase_one(tmp_path):
    from s5lib.bin.prep_data import main as prep_data
    from s5lib.bin.train_tagger import main as train_tagger
    from s5lib.models.factory import build_tagger
    from s5lib.models.tagger import load_tagger_checkpoint
    data = tmp_path / "data"
    prep_data(["--out_dir", str(data), "--size", "tiny", "--n_valid", "2", "--n_test", "1",
               "--nj", "1"])
    config = tmp_path / "tagger.yaml"
    model = {"type": "m2d_2025", "m2d": {"embed_dim": 32, "depth": 2, "num_heads": 2}}
    config.write_text(yaml.safe_dump({
        "model": dict(model, trainable="all"), "epoch_size": 4, "valid_max_mixtures": 2,
        "phases": [{"name": "head", "model": {"trainable": "head"}, "train": {"lr": 1e-2}},
                   {"name": "1_blocks", "model": {"trainable": "1_blocks"},
                    "train": {"lr": 1e-3}}],
        "train": {"max_steps": 2, "batch_size": 2, "device": "cpu", "progress": False,
                  "scheduler": "constant"}}))
    exp = tmp_path / "exp"
    train_tagger(["--config", str(config), "--data", str(data), "--exp_dir", str(exp)])
    phase1, phase2 = exp / "phase1_head", exp / "phase2_1_blocks"
    for d in (phase1, phase2):
        assert (d / "checkpoint_best.pt").is_file() and (d / "config.yaml").is_file()
    cfg2 = yaml.safe_load((phase2 / "config.yaml").read_text())
    assert cfg2["model"]["init_checkpoint"] == str(phase1 / "checkpoint_best.pt")
    assert cfg2["model"]["trainable"] == "1_blocks" and cfg2["train"]["lr"] == 1e-3
    # phase 1 trained the head only; phase 2 started from it, so its first block is phase 1's
    first = build_tagger(dict(model))
    load_tagger_checkpoint(first, str(phase1 / "checkpoint_best.pt"))
    second = build_tagger(dict(model))
    load_tagger_checkpoint(second, str(phase2 / "checkpoint_best.pt"))
    torch.manual_seed(0)  # train.seed 0: the initial weights of phase 1
    before = build_tagger(dict(model))
    for key, value in before.backbone.state_dict().items():
        assert torch.equal(value, first.backbone.state_dict()[key]), key  # head-only phase
    assert torch.equal(first.backbone.blocks[0].attn.qkv.weight,
                       second.backbone.blocks[0].attn.qkv.weight)
    assert not torch.equal(first.backbone.blocks[1].attn.qkv.weight,
                           second.backbone.blocks[1].attn.qkv.weight)  # trained in phase 2
    assert not torch.equal(first.head.weight, before.head.weight)
    # the published experiment files are phase 2's: stage 4 reads them
    assert yaml.safe_load((exp / "config.yaml").read_text())["model"]["trainable"] == "1_blocks"
    published = torch.load(exp / "checkpoint_best.pt", weights_only=True)["model"]
    assert torch.equal(published["head.weight"], second.head.weight)
    # a re-run finds both phases done and trains nothing more
    mtime = os.path.getmtime(phase2 / "checkpoint_last.pt")
    train_tagger(["--config", str(config), "--data", str(data), "--exp_dir", str(exp)])
    assert os.path.getmtime(phase2 / "checkpoint_last.pt") == mtime
