"""End to end: a recipe made by setup.sh runs all five stages on the tiny embedded bank.

Uses the baseline recipe's configs shrunk to a few updates, for both rule sets, and checks
what each stage leaves behind: the data set, checkpoints, estimates under the official
names with probabilities, the scores, RESULTS.md, and that finished stages are skipped.
"""
import importlib
import json
import os
import shutil
import subprocess

import pytest
import yaml

from s5lib.config import parse_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(REPO, "egs", "TEMPLATE")
BASELINE_CONF = os.path.join(REPO, "egs", "baseline", "conf")


def shrink(path, changes):
    with open(path) as f:
        cfg = yaml.safe_load(f)
    for dotted, value in changes.items():
        node = cfg
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)


@pytest.fixture
def tiny_recipe(tmp_path):
    recipe = tmp_path / "egs" / "tiny"
    subprocess.run([os.path.join(TEMPLATE, "setup.sh"), str(recipe)], check=True,
                   capture_output=True)
    shutil.rmtree(recipe / "conf")
    shutil.copytree(BASELINE_CONF, recipe / "conf")
    conf = recipe / "conf"
    shrink(conf / "prep_data.yaml", {"size": "tiny", "n_valid": 4, "n_test": 4})
    shrink(conf / "tagger.yaml", {"model.m2d": {"embed_dim": 32, "depth": 1, "num_heads": 2},
                                  "epoch_size": 8, "pool.mixtures": 4, "pool.num_workers": 0,
                                  "valid_max_mixtures": 4, "train.batch_size": 4, "train.max_steps": 2,
                                  "train.num_workers": 0, "train.valid_every_steps": None,
                                  "train.warmup_steps": 0, "train.scheduler": "constant"})
    shrink(conf / "separator.yaml", {"model.channels": [4, 4, 8, 8, 8, 8],
                                     "model.bottleneck_channels": 8, "model.condition_size": 16,
                                     "segment_seconds": 1, "epoch_size": 8, "pool.mixtures": 4,
                                     "pool.num_workers": 0, "valid_max_mixtures": 4,
                                     "train.batch_size": 4, "train.num_workers": 0,
                                     "train.valid_every_steps": None, "train.warmup_steps": 0,
                                     "train.scheduler": "constant"})
    return recipe


def run_recipe(recipe, *args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(["./run.sh", "--nj", "1", *args], cwd=recipe, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("year", [2025, 2026])
def test_all_stages_on_the_tiny_bank(tiny_recipe, year):
    result = run_recipe(tiny_recipe, "--year", str(year), "--class_eq_mixtures", "6")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = tiny_recipe / "exp"
    suffix = "" if year == 2025 else "_2026"  # the 2026 run's dirs do not mix with 2025's
    tagger, separator = exp / f"tagger{suffix}", exp / f"separator{suffix}"
    decode = separator / "decode_test"
    data = tiny_recipe / ("data" if year == 2025 else "data_2026")
    for n in range(1, 6):
        assert f"Stage {n}:" in result.stderr
    assert (data / "dataset.json").is_file()
    assert (tagger / "checkpoint_best.pt").is_file()
    assert (separator / "checkpoint_best.pt").is_file()
    assert (separator / "config.yaml").is_file()
    for mode in ("estimated", "oracle"):
        est = sorted(os.listdir(decode / mode / "estimates"))
        # a tagger trained for 2 updates may find nothing in 2026; oracle labels always query
        assert est or (mode == "estimated" and year == 2026), mode
        for name in est:
            parts = name[:-4].split("_")
            assert parts[0] == "soundscape" and parts[1].isdigit()
            assert parts[2].isdigit() if year == 2026 else len(parts) == 3
        probs = json.loads((decode / mode / "eval_results.json").read_text())
        listed = sorted(e["filename"] for p in probs["probabilities"] for e in p["estimate"])
        assert listed == est
        summary = json.loads((decode / "scores" / mode / "summary.json").read_text())
        metric = "CA-SDRi" if year == 2025 else "CAPI-SDRi"
        assert summary["label_mode"] == mode
        assert summary["tag"] == f"separator{suffix}/decode_test"
        assert summary["year"] == year
        assert any(metric in key for key in summary["metrics"]), summary["metrics"]
    anchors = {name: json.loads((decode / "scores" / f"anchor_{name}" / "summary.json").read_text())
               for name in ("oracle", "mixture", "silence", "class_eq")}
    oracle, mixture = anchors["oracle"], anchors["mixture"]
    key = next(k for k in mixture["metrics"] if "SDRi" in k)
    assert abs(mixture["metrics"][key]) < 1e-6  # mixture as estimate: SDRi 0 by definition
    assert oracle["metrics"][key] > 20
    assert all(a["tag"] == mixture["tag"] == f"separator{suffix}/decode_test"
               for a in anchors.values())
    results = (tiny_recipe / "RESULTS.md").read_text()
    assert "generated" in results.lower() and f"## separator{suffix}/decode_test" in results
    assert "| anchor: class_eq |" in results and "| anchor: silence |" in results
    assert "/tmp/" not in results and "--ref_dir data" in results  # paths relative to the recipe
    assert "Where to look next" in result.stdout and "report.html" in result.stdout
    assert "RESULTS" in result.stdout or "|" in result.stdout  # the table is printed
    assert "Diagnostics (`breakdowns.json`" in results  # beside the official table
    # stage 5's listening page: both label modes of the decode, the anchors in its summary
    page = (decode / "scores" / "report.html").read_text()
    assert "(estimated labels) vs" in page and "(oracle labels)" in page
    assert "anchor: silence" in page and 'class="mix"' in page
    assert (decode / "scores" / "estimated" / "breakdowns.json").is_file()
    # every step's run.sh replays it: its saved config is one its own module accepts
    replays = sorted(exp.rglob("run.sh"))
    replayed = set()
    for script in replays:
        line = script.read_text().splitlines()[-1]
        if " python -m s5lib.bin." not in line:
            continue  # stages.sh's stage replays
        module = line.split("python -m ")[1].split()[0]
        config_path = tiny_recipe / line.split("--config ")[1].strip().strip("'")
        defaults = importlib.import_module(module).DEFAULTS
        parse_config(defaults, ["--config", str(config_path)])  # raises on an unknown key
        replayed.add(module)
    assert {"s5lib.bin.train_tagger", "s5lib.bin.train_separator", "s5lib.bin.infer"} <= replayed

    # a second run skips every finished stage
    again = run_recipe(tiny_recipe, "--year", str(year), "--class_eq_mixtures", "6")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("already done") == 5

    # output_gain valid (conf/infer.yaml): one gain fitted on the validation mixtures, recorded,
    # and applied to every written estimate: the same separator's estimates at gain 1, scaled
    record = json.loads((decode / "output_gain.json").read_text())
    assert record["metric"] == ("CA-SDRi" if year == 2025 else "CAPI-SDRi")
    (fit,) = record["steps"]
    assert 0.05 <= fit["gain"] <= 2.0 and fit["score"] >= fit["score_at_1"] - 1e-9
    (tiny_recipe / "conf" / "infer_gain1.yaml").write_text("base: infer_oracle.yaml\n"
                                                           "output_gain: 1.0\n")
    plain_run = run_recipe(tiny_recipe, "--year", str(year), "--stage", "4", "--stop_stage", "4",
                           "--infer_config", "conf/infer_gain1.yaml")
    assert plain_run.returncode == 0, plain_run.stdout[-3000:] + plain_run.stderr[-3000:]
    decode_plain = separator / "decode_test_infer_gain1"
    assert not (decode_plain / "output_gain.json").exists()
    from s5lib.audio import read_audio
    names = sorted(os.listdir(decode / "oracle" / "estimates"))
    assert names == sorted(os.listdir(decode_plain / "oracle" / "estimates"))
    for name in names[:3]:
        plain = read_audio(str(decode_plain / "oracle" / "estimates" / name))
        scaled = read_audio(str(decode / "oracle" / "estimates" / name))
        assert abs(scaled - fit["gain"] * plain).max() <= 1e-5 * max(1.0, abs(plain).max())
