"""Released checkpoints: files in the organisers' container layouts load for inference, and
stages 4-5 run from them with no training stage (issue 9).

The files are built here: our module at the reference configuration, its state_dict checked
against ``shared/reference/*.tsv`` (names, shapes, dtypes), seeded random weights and BatchNorm
statistics, saved as the DCASE Lightning checkpoints hold them (``state_dict`` with the
``model.`` prefix, plus Lightning's bookkeeping entries).
"""
import json
import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
import torch

from s5lib.models.checkpoints import (CheckpointError, compare_state_dict, load_checkpoint_file,
                                      read_reference_tsv, trust_checkpoints)
from s5lib.models.factory import build_separator, build_tagger, load_model_file

from test_recipe import run_recipe, shrink, tiny_recipe  # noqa: F401 (fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(os.path.dirname(REPO), "shared", "reference")

# released file -> (role, our model config, reference layout, expected kind)
OFFICIAL = {
    "m2dat.ckpt": ("tagger", {"type": "m2d_2025"}, "m2dat_2025_tagger.tsv", "m2d_2025"),
    "m2dat_1c.ckpt": ("tagger", {"type": "m2d_2026"}, "m2dat_2026_1c_tagger.tsv", "m2d_2026"),
    "m2dat_4c.ckpt": ("tagger", {"type": "m2d_2026_4c"}, "m2dat_2026_4c_tagger.tsv", "m2d_2026_4c"),
    "resunet.ckpt": ("separator", {"type": "resunet"}, "dcase2025_resunet.tsv", "resunet"),
    "resunetk.ckpt": ("separator", {"type": "resunetk"}, "dcase2025_resunetk.tsv", "resunetk"),
}


def lightning_container(state_dict):
    """A checkpoint as Lightning saves it (prefix ``model.``, bookkeeping entries)."""
    return {
        "epoch": 41, "global_step": 820000, "pytorch-lightning_version": "2.5.0",
        "state_dict": {"model." + key: value for key, value in state_dict.items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 42}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'epoch_val/loss', 'mode': 'min'}": {
            "monitor": "epoch_val/loss", "best_model_score": torch.tensor(-9.8),
            "best_model_path": "/ckpt/epoch=41.ckpt", "dirpath": "/ckpt",
            "best_k_models": {"/ckpt/epoch=41.ckpt": torch.tensor(-9.8)}}},
        "optimizer_states": [{"state": {}, "param_groups": [
            {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
             "amsgrad": True, "params": [0, 1, 2]}]}],
        "lr_schedulers": [],
    }


def make_official_file(directory, name, seed=0):
    """Write ``name`` in its official layout; returns (path, the module's state_dict)."""
    role, cfg, reference, _ = OFFICIAL[name]
    torch.manual_seed(seed)
    model = build_tagger(cfg) if role == "tagger" else build_separator(cfg)
    rows, _ = read_reference_tsv(os.path.join(REFERENCE, reference))
    assert compare_state_dict(model.state_dict(), rows) == ([], [], [])
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # BatchNorm statistics away from their defaults: an update would show
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.num_batches_tracked.fill_(1234)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    path = os.path.join(directory, name)
    torch.save(lightning_container(state), path)
    return path, state


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("official"))
    states = {name: make_official_file(directory, name)[1] for name in OFFICIAL}
    return directory, states


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_layouts_load_with_the_architecture_read_from_the_file(official_dir, name):
    directory, states = official_dir
    role, _, _, kind = OFFICIAL[name]
    model, cfg, description = load_model_file(os.path.join(directory, name), role)
    assert model.kind == kind and cfg["type"] == kind
    assert "Lightning checkpoint" in description and "'model.'" in description
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    loaded = model.state_dict()
    assert set(loaded) == set(states[name])
    for key, value in states[name].items():
        assert torch.equal(loaded[key], value), key


def test_plain_state_dict_and_wrong_files(official_dir, tmp_path):
    directory, states = official_dir
    plain = tmp_path / "resunetk_plain.pt"
    torch.save(states["resunetk.ckpt"], plain)  # no container, no prefix
    model, _, description = load_model_file(str(plain), "separator")
    assert model.kind == "resunetk" and "state_dict file" in description
    # a tagger file given as the separator: names the file and what is missing
    with pytest.raises(CheckpointError, match="m2dat.ckpt.*not a separator checkpoint"):
        load_model_file(os.path.join(directory, "m2dat.ckpt"), "separator")
    # a file with a key less: strict loading names the key
    broken = dict(states["resunetk.ckpt"])
    del broken["base.after_conv.bias"]
    torch.save({"state_dict": {"model." + k: v for k, v in broken.items()}}, tmp_path / "b.ckpt")
    with pytest.raises(CheckpointError, match=r"(?s)b\.ckpt.*missing keys: base\.after_conv\.bias"):
        load_model_file(str(tmp_path / "b.ckpt"), "separator")
    # a plain file of a small separator with the per-class frequency bias: read from the keys
    small = build_separator({"type": "resunet", "channels": [4, 4, 8, 8, 8, 8],
                             "bottleneck_channels": 8, "condition_size": 16, "n_fft": 256,
                             "class_freq_bias": True, "class_frame_gate": True,
                             "frame_gate_channels": 12, "frame_gate_layers": 3})
    torch.save(small.state_dict(), tmp_path / "small.pt")
    model, cfg, _ = load_model_file(str(tmp_path / "small.pt"), "separator")
    assert model.kind == "resunet" and cfg["class_freq_bias"] and cfg["channels"] == [4, 4, 8, 8, 8, 8]
    assert cfg["class_frame_gate"] and cfg["frame_gate_channels"] == 12
    assert cfg["frame_gate_layers"] == 3 and cfg["frame_gate_bands"] == 1
    banded = build_separator({"type": "resunetk", "channels": [4, 4, 8, 8, 8, 8],
                              "bottleneck_channels": 8, "condition_size": 16, "n_fft": 256,
                              "class_frame_gate": True, "frame_gate_bands": 6})
    torch.save(banded.state_dict(), tmp_path / "banded.pt")
    _, cfg, _ = load_model_file(str(tmp_path / "banded.pt"), "separator")
    assert cfg["frame_gate_bands"] == 6
    # a config that does not fit the weights: strict loading says so
    with pytest.raises(CheckpointError, match="(?s)resunetk_plain.pt.*shape mismatches"):
        load_model_file(str(plain), "separator", {"type": "resunetk", "condition_size": 256})


class _Payload:
    """Unpickling this object creates a file: the attack weights-only loading prevents."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_unsafe_file_is_refused_unless_trusted(tmp_path, official_dir):
    directory, states = official_dir
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.ckpt"
    container = {"state_dict": {"model." + k: v for k, v in states["m2dat.ckpt"].items()},
                 "payload": _Payload(str(marker))}
    with open(evil, "wb") as handle:
        torch.save(container, handle, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match=r"(?s)evil\.ckpt: refused: it holds .*open.*"
                                              r"--trust_checkpoint true"):
        load_model_file(str(evil), "tagger")
    assert not marker.exists()
    # only the explicit option unpickles it, with a warning that names the file
    trust_checkpoints(True)
    try:
        with pytest.warns(RuntimeWarning, match="evil.ckpt"):
            load_checkpoint_file(str(evil))
    finally:
        trust_checkpoints(False)
    assert marker.exists()


def crop_test_set(test_dir, out_dir, n_mixtures, seconds, with_references=True):
    """A copy of the first mixtures of a test set, cut to ``seconds`` (CPU-sized full models)."""
    n = int(seconds * 32000)
    names = sorted(f[:-4] for f in os.listdir(os.path.join(test_dir, "soundscape")))[:n_mixtures]
    folders = ["soundscape"] + (["oracle_target"] if with_references else [])
    for folder in folders:
        os.makedirs(os.path.join(out_dir, folder))
        for f in sorted(os.listdir(os.path.join(test_dir, folder))):
            if any(f == m + ".wav" or f.startswith(m + "_") for m in names):
                audio, sr = soundfile.read(os.path.join(test_dir, folder, f), dtype="float32")
                soundfile.write(os.path.join(out_dir, folder, f), audio[:n], sr, subtype="FLOAT")
    return names


@pytest.mark.parametrize("year,tagger,separator", [(2025, "m2dat.ckpt", "resunetk.ckpt"),
                                                   (2026, "m2dat_4c.ckpt", "resunetk.ckpt")])
def test_stages_4_and_5_from_released_checkpoints(tiny_recipe, official_dir, year, tagger,
                                                  separator):
    directory, states = official_dir
    shrink(tiny_recipe / "conf" / "prep_data.yaml", {"n_test": 2})
    result = run_recipe(tiny_recipe, "--year", str(year), "--stage", "1", "--stop_stage", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    data = "data" if year == 2025 else "data_2026"
    info = json.loads((tiny_recipe / data / "dataset.json").read_text())
    short = tiny_recipe / "short_test"
    names = crop_test_set(info["test_dir"], str(short), 2, 1.0)
    # conf/full/infer.yaml: the official decode (no fitted output gain), as the README says
    args = ["--year", str(year), "--stage", "4", "--stop_stage", "5", "--tag", "official",
            "--infer_config", "conf/full/infer.yaml",
            "--tagger_checkpoint", os.path.join(directory, tagger),
            "--separator_checkpoint", os.path.join(directory, separator),
            "--test_dir", str(short), "--class_eq_mixtures", "4"]
    result = run_recipe(tiny_recipe, *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = tiny_recipe / "exp"
    assert not (exp / "tagger_official").exists()
    assert not (exp / "separator_official" / "checkpoint_best.pt").exists()  # nothing trained
    decode = exp / "separator_official" / "decode_short_test"
    log = (decode / "logs" / "infer.log").read_text()
    assert "Lightning checkpoint" in log
    assert not (decode / "output_gain.json").exists()  # written as the released models give them
    for mode in ("estimated", "oracle"):
        files = sorted(os.listdir(decode / mode / "estimates"))
        assert files or (year == 2026 and mode == "estimated")
        assert all(f.split("_")[0] + "_" + f.split("_")[1] in names for f in files)
        summary = json.loads((decode / "scores" / mode / "summary.json").read_text())
        assert summary["metrics"]["n_mixtures"] == 2
    # nothing was trained or updated: the estimates of a second run are identical
    first = {f: soundfile.read(decode / "oracle" / "estimates" / f)[0]
             for f in os.listdir(decode / "oracle" / "estimates")}
    result = run_recipe(tiny_recipe, *args, "--stop_stage", "4", "--force", "true")
    assert result.returncode == 0, result.stderr[-3000:]
    for f, audio in first.items():
        again = soundfile.read(decode / "oracle" / "estimates" / f)[0]
        assert np.array_equal(audio, again), f


def test_evaluation_set_gives_estimates_and_skips_scoring(tiny_recipe, official_dir):
    directory, _ = official_dir
    shrink(tiny_recipe / "conf" / "prep_data.yaml", {"n_test": 2})
    assert run_recipe(tiny_recipe, "--stage", "1", "--stop_stage", "1").returncode == 0
    info = json.loads((tiny_recipe / "data" / "dataset.json").read_text())
    eval_dir = tiny_recipe / "eval_set"
    crop_test_set(info["test_dir"], str(eval_dir), 1, 0.5, with_references=False)
    result = run_recipe(tiny_recipe, "--stage", "4", "--stop_stage", "5", "--tag", "eval",
                        "--infer_config", "conf/full/infer.yaml",
                        "--tagger_checkpoint", os.path.join(directory, "m2dat.ckpt"),
                        "--separator_checkpoint", os.path.join(directory, "resunet.ckpt"),
                        "--test_dir", str(eval_dir))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    infer = tiny_recipe / "exp" / "separator_eval" / "decode_eval_set"
    assert os.listdir(infer / "estimated" / "estimates")  # 2025: at least one label per mixture
    assert not (infer / "oracle").exists()
    assert "label mode 'oracle' skipped" in (infer / "logs" / "infer.log").read_text()
    assert "scoring skipped" in result.stdout + result.stderr
    assert not (infer / "scores" / "estimated").exists()
    shutil.rmtree(infer)
