"""End to end: egs/redux (baseline M2D tagger -> attentive ResUNeXt in two phases -> inference with
the classify / separate / verify / subtract strategy -> scores with the per-case counts) on the
tiny embedded bank with the recipe's own configs shrunk to a few updates; its Table 2 script; and
the 2026 rules (empty scenes, duplicates, CAPI-SDRi)."""
import json
import os
import re
import shutil

import pytest
import torch
import yaml

from test_recipe import shrink  # the tests folder is on sys.path (pytest rootdir imports)
from test_recipe_cpjku import copy_recipe, run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(REPO, "egs", "baseline")
TINY_M2D = {"embed_dim": 16, "depth": 1, "num_heads": 2, "patch_size": [80, 8]}
SHORT_TRAINING = {"epoch_size": 8, "pool.mixtures": 4, "pool.num_workers": 0, "valid_max_mixtures": 2,
                  "train.batch_size": 4, "train.num_workers": 0, "train.valid_every_steps": None,
                  "train.warmup_steps": 0, "train.scheduler": "constant"}


@pytest.fixture
def redux_recipe(tmp_path):
    recipe = copy_recipe(tmp_path, "redux")
    # the ResUNeXt configs (and the Table 2 baseline rows) start from egs/baseline's separator config
    shutil.copytree(os.path.join(BASELINE, "conf"), tmp_path / "egs" / "baseline" / "conf")
    conf = recipe / "conf"
    shrink(conf / "prep_data.yaml", {"size": "tiny", "n_valid": 4, "n_test": 3})
    shrink(conf / "tagger.yaml", {"model.m2d": TINY_M2D, "train.max_steps": 2, **SHORT_TRAINING})
    shrink(conf / "separator_nospecaug.yaml", {"model.channels": [4, 4, 8, 8, 8], "model.pre_channels": 4,
                                               "model.bottleneck_channels": 8, "model.condition_size": 16,
                                               "model.intermediate_blocks": 1, "segment_seconds": 1,
                                               **SHORT_TRAINING})
    shrink(conf / "separator.yaml", {"epoch_size": 4, "train.valid_every_steps": None,
                                     "train.warmup_steps": 0})
    shrink(tmp_path / "egs" / "baseline" / "conf" / "separator_plain.yaml",
           {"model.channels": [4, 4, 8, 8, 8, 8], "model.bottleneck_channels": 8,
            "model.condition_size": 16, "segment_seconds": 1, **SHORT_TRAINING})
    return recipe


def test_redux_table2_two_phases_and_the_strategy(redux_recipe):
    result = run(redux_recipe, "--seeds", "0", "--rows", "resunext continued", "--",
                 "--nj", "1", "--class_eq_mixtures", "4", script="local/table2.sh")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = redux_recipe / "exp"
    separator = exp / "separator_t2_resunext_seed0"
    # phase 1 without SpecAugment, phase 2 with it, starting from phase 1's best checkpoint
    phase1 = yaml.safe_load((separator / "phase1" / "config.yaml").read_text())
    phase2 = yaml.safe_load((separator / "config.yaml").read_text())
    assert phase1["model"]["spec_augment"] is False and phase1["model"]["type"] == "resunextk"
    assert phase2["model"]["spec_augment"] is True
    assert phase2["model"]["init_checkpoint"] == "exp/separator_t2_resunext_seed0/phase1/checkpoint_best.pt"
    first = torch.load(separator / "phase1" / "checkpoint_best.pt", weights_only=True)["model"]
    second = torch.load(separator / "checkpoint_best.pt", weights_only=True)["model"]
    assert "base.decoder1.gate.psi.weight" in second
    assert any(not torch.equal(first[k], second[k]) for k in first if first[k].is_floating_point())
    # the strategy decode: every mixture's path, and the counts
    decode = separator / "decode_test_strategy"
    probs = json.loads((decode / "estimated" / "eval_results.json").read_text())
    assert len(probs["probabilities"]) == 3
    for entry in probs["probabilities"]:
        path = entry["strategy"]
        assert path["case"] in ("I", "II", "IV") and path["cases"][-1] == path["case"]
        assert path["separator_calls"] >= 1 and path["tagger_calls"] >= 2
        labels = [e["label"] for e in entry["estimate"]]
        assert len(labels) == len(set(labels)) <= 3   # 2025: distinct classes
    counts = json.loads((decode / "estimated" / "strategy.json").read_text())
    assert counts["mixtures"] == 3 and sum(counts["final_case"].values()) == 3
    assert not (decode / "oracle").exists()          # conf/table2/strategy.yaml: tagger labels only
    level_cfg = yaml.safe_load((separator / "decode_test_strategy_level" / "config.yaml").read_text())
    assert level_cfg["strategy"]["verify_level"] == "mixture"
    assert (decode / "scores" / "estimated" / "summary.json").is_file()
    # the control: phase 1 copied from the resunext row (its base: chain's first config without
    # init_checkpoint: phase1), then phase 2's settings without SpecAugment
    control = exp / "separator_t2_continued_seed0"
    assert torch.equal(torch.load(control / "phase1" / "checkpoint_best.pt", weights_only=True)["model"][
        "base.pre_conv.weight"], first["base.pre_conv.weight"])
    control_cfg = yaml.safe_load((control / "config.yaml").read_text())
    assert control_cfg["model"]["spec_augment"] is False and control_cfg["train"]["lr"] == phase2["train"]["lr"]
    assert control_cfg["model"]["init_checkpoint"].endswith("separator_t2_continued_seed0/phase1/checkpoint_best.pt")
    # the "w/o SpecAugment" row decodes phase 1 itself
    nospecaug = exp / "separator_t2_nospecaug_seed0" / "decode_test_infer_single"
    assert (nospecaug / "scores" / "oracle" / "summary.json").is_file()
    infer_cfg = yaml.safe_load((nospecaug / "config.yaml").read_text())
    assert infer_cfg["separator_checkpoint"].endswith("separator_t2_resunext_seed0/phase1/checkpoint_best.pt")
    table = (exp / "table2" / "table.md").read_text()
    experiments = {line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| redux |")}
    assert {"separator_t2_resunext/decode_test_infer_single", "separator_t2_resunext/decode_test_strategy",
            "separator_t2_nospecaug/decode_test_infer_single",
            "separator_t2_continued/decode_test_infer_single"} <= experiments
    accuracy = (exp / "table2" / "label_accuracy.md").read_text()
    assert re.search(r"separator_t2_resunext/decode_test_strategy \|\s+\|\s+[0-9.]+ ± 0.00 \(1\)", accuracy)
    cases = (exp / "table2" / "strategy_cases.md").read_text()
    assert "separator_t2_resunext/decode_test_strategy" in cases and "case II" in cases
    assert "## Strategy cases" in (redux_recipe / "RESULTS.md").read_text()


def test_redux_2026_rules(redux_recipe):
    result = run(redux_recipe, "--year", "2026", "--nj", "1", "--class_eq_mixtures", "4",
                 "--stop_stage", "4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    decode = redux_recipe / "exp" / "separator_2026" / "decode_test"
    probs = json.loads((decode / "estimated" / "eval_results.json").read_text())
    for entry in probs["probabilities"]:
        path = entry["strategy"]
        if path["case"] == "empty":
            assert entry["estimate"] == [] and path["separator_calls"] == 0
        for slot, estimate in enumerate(entry["estimate"]):   # 2026 names carry the slot
            assert estimate["filename"].startswith(f"{entry['soundscape']}_{slot}_")
    counts = json.loads((decode / "estimated" / "strategy.json").read_text())
    assert counts["mixtures"] == len(probs["probabilities"])
    assert (decode / "oracle" / "eval_results.json").is_file()
