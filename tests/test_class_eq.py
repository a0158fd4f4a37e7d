"""The class-EQ anchor: least-squares gains per (class, bin), applied to channel 0, scored."""
import json

import numpy as np
import pytest
import torch

from s5lib import constants
from s5lib.infer.class_eq import apply_class_eq, fit_class_eq, load_gains, save_gains


def item(mixture0, references, labels):
    n = len(mixture0)
    refs = torch.zeros(3, n)
    index = torch.full((3,), constants.SILENCE_INDEX)
    active = torch.zeros(3, dtype=torch.bool)
    for k, (ref, label) in enumerate(zip(references, labels)):
        refs[k] = torch.as_tensor(ref)
        index[k] = constants.CLASS_INDEX[label]
        active[k] = True
    mixture = torch.zeros(4, n)
    mixture[0] = torch.as_tensor(mixture0)
    return {"mixture": mixture, "references": refs, "label_index": index, "active": active}


def test_gains_recover_a_fixed_scaling_and_apply_it(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for _ in range(3):
        x = rng.standard_normal(16000).astype(np.float32)
        items.append(item(x, [0.25 * x, -x], ["Speech", "Cough"]))
    gains, count = fit_class_eq(items)
    assert count == 3 and gains.shape == (18, 513)
    assert np.allclose(gains[constants.CLASS_INDEX["Speech"]], 0.25, atol=1e-4)
    assert np.all(gains[constants.CLASS_INDEX["Cough"]] == 0)  # a negative gain is clipped
    assert np.all(gains[constants.CLASS_INDEX["Typing"]] == 0)  # never seen
    x = rng.standard_normal(16000).astype(np.float32)
    estimate = apply_class_eq(gains, x, "Speech")
    assert estimate.shape == x.shape and np.allclose(estimate, 0.25 * x, atol=1e-3)
    path = tmp_path / "g.npz"
    save_gains(path, gains, year=2025)
    loaded, n_fft, hop = load_gains(path)
    assert np.array_equal(loaded, gains) and (n_fft, hop) == (1024, 256)
    np.savez(tmp_path / "bad.npz", gains=np.zeros((3, 4)), n_fft=1024, hop=256)
    with pytest.raises(ValueError, match="bad.npz: gains of shape"):
        load_gains(tmp_path / "bad.npz")


def test_class_eq_anchor_scores_between_silence_and_oracle(tmp_path):
    from s5lib.bin.fit_class_eq import main as fit
    from s5lib.bin.prep_data import main as prep_data
    from s5lib.bin.score import main as score
    data = tmp_path / "data"
    prep_data(["--out_dir", str(data), "--size", "tiny", "--n_valid", "1", "--n_test", "4",
               "--nj", "1"])
    info = json.loads((data / "dataset.json").read_text())
    fit(["--data", str(data), "--out", str(tmp_path / "eq.npz"), "--n_mixtures", "30"])
    results = {}
    for anchor in ("silence", "class_eq"):
        extra = ["--class_eq", str(tmp_path / "eq.npz")] if anchor == "class_eq" else []
        score(["--year", "2025", "--ref_dir", info["test_dir"], "--anchor", anchor,
               "--out_dir", str(tmp_path / anchor), "--nj", "1", "--plot", "false"] + extra)
        results[anchor] = json.loads((tmp_path / anchor / "summary.json").read_text())
    assert results["class_eq"]["anchor"] == "class_eq"
    assert results["class_eq"]["metrics"]["CA-SDRi"] > results["silence"]["metrics"]["CA-SDRi"]
    assert score(["--year", "2025", "--ref_dir", info["test_dir"], "--anchor", "class_eq",
                  "--out_dir", str(tmp_path / "x"), "--nj", "1"]) == 1  # no gains file given


def test_results_page_orders_rows_and_reports_the_seed_spread(tmp_path):
    from s5lib.results import write_results_md

    def summary(tag, mode, value, anchor=None):
        return {"tag": tag, "year": 2025, "label_mode": mode, "anchor": anchor, "recipe": "r",
                "command": f"score {tag} {anchor or mode}",
                "metrics": {"CA-SDRi": value, "label_accuracy": 40.0 + value, "n_mixtures": 10}}
    experiments = []
    for tag, shift in (("separator/decode_test", 0.0), ("separator_seed1/decode_test", 1.0)):
        for s in (summary(tag, "oracle", 6.0 + shift, anchor="silence"),
                  summary(tag, "oracle", 5.0 + shift), summary(tag, "estimated", 3.0 + shift)):
            experiments.append((tag, s, s["command"]))
    text = write_results_md(str(tmp_path), experiments, str(tmp_path / "RESULTS.md"))
    section = text.split("## separator/decode_test")[1].split("##")[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")]
    assert rows == ["Labels", "estimated", "oracle", "anchor: silence"]
    spread = text.split("## Across seeds")[1]
    assert "separator/decode_test: 2 runs" in spread
    assert "| estimated | 3.50 ± 0.71 | 43.50 ± 0.71 |" in spread  # mean and sample std of 3, 4
    assert "anchor" not in spread.split("|---|")[1]
    table = text.split("## Comparison table")[1]
    assert "| r | separator/decode_test |  | 3.50 ± 0.71 (2) | 5.50 ± 0.71 (2) |" in table


def test_separator_started_from_class_eq_gains_is_the_class_eq_filter():
    """init_class_gains: a fresh ResUNetK (mag_phase masks from mask_init) answers a query for
    class c with gains[c] on channel 0 and the mixture phase, i.e. the class-EQ estimate."""
    from s5lib.models.factory import build_separator
    model = build_separator({"type": "resunetk", "channels": [4, 4, 4, 4, 4, 4],
                             "bottleneck_channels": 4, "condition_size": 8, "n_fft": 512,
                             "hop_length": 256, "mask_init": 0.3, "class_freq_bias": True}).eval()
    rng = np.random.default_rng(1)
    gains = rng.uniform(0.05, 0.9, size=(18, 257)).astype(np.float32)
    model.init_class_gains(gains)
    x = (0.1 * rng.standard_normal((4, 32000))).astype(np.float32)
    label = "Speech"
    query = torch.zeros(1, 54)
    query[0, constants.CLASS_INDEX[label]] = 1.0  # slot 0
    with torch.no_grad():
        out = model(torch.from_numpy(x)[None], query)[0, 0].numpy()
    no_nyquist = gains.copy()
    no_nyquist[:, -1] = 0.0  # the U-Net never outputs the Nyquist bin (module doc)
    expected = apply_class_eq(no_nyquist, x[0], label, n_fft=512, hop=256)
    inner = slice(1024, -1024)  # away from the edge frames
    error = np.sum((out - expected)[inner] ** 2) / np.sum(expected[inner] ** 2)
    assert 10 * np.log10(1 / error) > 40  # the same filter
    assert not np.allclose(out, 0.3 * x[0], atol=1e-3)  # and not the plain mask_init start
    with pytest.raises(ValueError, match="must be \\(18, 257\\)"):
        model.init_class_gains(gains[:, :100])
    plain = build_separator({"type": "resunetk", "channels": [4, 4, 4, 4, 4, 4],
                             "bottleneck_channels": 4, "condition_size": 8, "n_fft": 512,
                             "hop_length": 256})
    with pytest.raises(ValueError, match="class_freq_bias"):
        plain.init_class_gains(gains)
