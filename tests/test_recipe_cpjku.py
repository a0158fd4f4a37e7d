"""End to end: egs/cpjku (SED tagger -> AudioSep-SED separator with its stage-2 SED inside ->
iterative inference with three label sources -> per-step scores) on the tiny embedded bank, with
the recipe's own configs shrunk to a few updates, and its ablation table."""
import json
import os
import re
import shutil
import subprocess

import pytest
import torch
import yaml

from test_recipe import shrink  # the tests folder is on sys.path (pytest rootdir imports)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(REPO, "egs", "TEMPLATE")
TINY_M2D = {"embed_dim": 16, "depth": 1, "num_heads": 2, "patch_size": [80, 8]}


def copy_recipe(tmp_path, name):
    """``egs/<name>`` rebuilt under ``tmp_path/egs`` (TEMPLATE links, its own conf/, local/ and
    run.sh), so a test can shrink its configs; test_recipe_redux uses it too."""
    recipe = tmp_path / "egs" / name
    subprocess.run([os.path.join(TEMPLATE, "setup.sh"), str(recipe)], check=True, capture_output=True)
    for part in ("conf", "local"):
        shutil.rmtree(recipe / part)
        shutil.copytree(os.path.join(REPO, "egs", name, part), recipe / part)
    shutil.copy(os.path.join(REPO, "egs", name, "run.sh"), recipe / "run.sh")
    return recipe


@pytest.fixture
def cpjku_recipe(tmp_path):
    recipe = copy_recipe(tmp_path, "cpjku")
    conf = recipe / "conf"
    shrink(conf / "prep_data.yaml", {"size": "tiny", "n_valid": 4, "n_test": 3})
    shrink(conf / "tagger.yaml", {"model.m2d": TINY_M2D, "model.seq_len": 20, "epoch_size": 8,
                                  "pool.mixtures": 4, "pool.num_workers": 0, "valid_max_mixtures": 4,
                                  "train.batch_size": 4, "train.max_steps": 2, "train.num_workers": 0,
                                  "train.valid_every_steps": None, "train.warmup_steps": 0,
                                  "train.scheduler": "constant"})
    shrink(conf / "separator.yaml", {"model.channels": [4, 4, 8, 8, 8, 8],
                                     "model.bottleneck_channels": 8, "model.condition_size": 16,
                                     "model.dprnn_hidden": 4, "segment_seconds": 1, "epoch_size": 8,
                                     "pool.mixtures": 4, "pool.num_workers": 0, "valid_max_mixtures": 2,
                                     "train.batch_size": 4, "train.num_workers": 0,
                                     "train.valid_every_steps": None, "train.warmup_steps": 0,
                                     "train.scheduler": "constant"})
    shrink(conf / "infer_iterative.yaml", {"refine_steps": 3})
    # a stand-in for egs/baseline's stage-2 tagger (run.sh's --baseline_tagger ../baseline/exp/tagger)
    from s5lib.models.factory import build_tagger
    baseline = tmp_path / "egs" / "baseline" / "exp" / "tagger"
    baseline.mkdir(parents=True)
    model_cfg = {"type": "m2d_2025", "m2d": {"embed_dim": 16, "depth": 1, "num_heads": 2}}
    torch.save(build_tagger(model_cfg).state_dict(), baseline / "checkpoint_best.pt")
    (baseline / "config.yaml").write_text(yaml.safe_dump({"model": model_cfg}))
    return recipe


def run(recipe, *args, script="./run.sh", timeout=900):
    """A recipe script run in ``recipe`` with this checkout's s5lib (test_recipe_redux uses it too)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([script, *args], cwd=recipe, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cpjku_all_stages_iterative_with_three_label_sources(cpjku_recipe):
    result = run(cpjku_recipe, "--nj", "1", "--class_eq_mixtures", "4",
                 "--separator_config", "conf/ablation/iter2.yaml",
                 "--infer_config", "conf/infer_iterative.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = cpjku_recipe / "exp"
    separator = exp / "separator_iter2"
    cfg = yaml.safe_load((separator / "config.yaml").read_text())
    # stage 3 built the separator's SED from stage 2's tagger
    assert cfg["model"]["sed_checkpoint"] == "exp/tagger/checkpoint_best.pt"
    assert cfg["model"]["sed"]["m2d"]["embed_dim"] == 16 and cfg["model"]["refine_iterations"] == 2
    state = torch.load(separator / "checkpoint_best.pt", weights_only=True)["model"]
    assert "feedback_bn.weight" in state and "dprnn.output.weight" in state
    decode = separator / "decode_test_infer_iterative"
    for source in ("estimated", "oracle", "baseline_tagger"):
        for step, name in ((1, f"{source}_step1"), (2, f"{source}_step2"), (3, source)):
            probs = json.loads((decode / name / "eval_results.json").read_text())
            assert probs["refine_step"] == step and probs["refine_steps"] == 3
            summary = json.loads((decode / "scores" / name / "summary.json").read_text())
            assert summary["label_mode"] == name and "CA-SDRi" in summary["metrics"]
    # the step estimates differ (refinement acts) and the oracle ones are scored on every mixture
    oracle1 = json.loads((decode / "scores" / "oracle_step1" / "summary.json").read_text())
    assert oracle1["metrics"]["n_scored"] == 3
    results = (cpjku_recipe / "RESULTS.md").read_text()
    assert "baseline_tagger_step1" in results and "oracle_step2" in results


def test_ablation_script_makes_one_table(cpjku_recipe):
    result = run(cpjku_recipe, "--seeds", "0 1", "--variants", "frozen_sed", "--tagger_seed", "0",
                 "--", "--nj", "1", "--class_eq_mixtures", "4", script="local/ablation.sh")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (cpjku_recipe / "exp" / "ablation" / "table.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| cpjku |")]
    rows = {line.split("|")[2].strip(): line for line in lines}
    assert set(rows) >= {"separator_frozen_sed/decode_test", "anchor: silence (2025 rules)"}
    header = table.splitlines()[0]
    assert "baseline_tagger" in header and "estimated" in header and "oracle" in header
    cells = [c.strip() for c in rows["separator_frozen_sed/decode_test"].split("|")[4:-1]]
    assert len(cells) == 3 and all(re.fullmatch(r"-?[0-9.]+ ± [0-9.]+ \(2\)", c) for c in cells), cells
    for seed in (0, 1):  # both separator seeds
        assert (cpjku_recipe / "exp" / f"separator_frozen_sed_seed{seed}" / "checkpoint_best.pt").is_file()
    # --tagger_seed 0: one tagger serves both seeds
    assert (cpjku_recipe / "exp" / "tagger_seed0" / "checkpoint_best.pt").is_file()
    assert not (cpjku_recipe / "exp" / "tagger_seed1").exists()
