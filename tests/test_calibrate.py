"""Output-gain calibration (s5lib.infer.calibrate): the closed-form objective equals the real
metric on scaled estimates, the fit finds a known gain, and bad settings are refused."""
import numpy as np
import pytest
import torch

from s5lib.infer.calibrate import (GAIN_GRID, calibrate, check_output_gain, fit_output_gain,
                                   mixture_statistics, score_by_gain)
from s5lib.metrics.s5 import ca_sdri, capi_sdri


def _mixture(rng, labels, n=4000, level=1.3, noise=0.3):
    refs = [(label, rng.standard_normal(n)) for label in labels]
    mix0 = sum(r for _, r in refs) + rng.standard_normal(n)
    ests = [(label, level * (r + noise * rng.standard_normal(n))) for label, r in refs]
    return ests, refs, mix0


@pytest.mark.parametrize("year", [2025, 2026])
def test_objective_equals_the_metric_on_scaled_estimates(year):
    rng = np.random.default_rng(0)
    labels = [["Buzzer", "Doorbell"], ["Speech"], ["Speech", "Speech", "Doorbell"]]
    if year == 2025:
        labels[2] = ["Speech", "Buzzer", "Doorbell"]
    mixtures = []
    for lab in labels:
        ests, refs, mix0 = _mixture(rng, lab)
        ests = ests[:-1] + [("AlarmClock", ests[-1][1])] if len(lab) == 3 else ests  # an FP + FN
        mixtures.append((ests, refs, mix0))
    stats = [mixture_statistics(year, e, r, m) for e, r, m in mixtures]
    gains = [0.5, 0.8, 1.0, 1.4]
    fast = score_by_gain(stats, gains)
    for g, value in zip(gains, fast):
        scores = []
        for ests, refs, mix0 in mixtures:
            scaled = [(label, g * wave) for label, wave in ests]
            if year == 2025:
                score, _ = ca_sdri(dict(scaled), dict(refs), mix0)
            else:
                score, _ = capi_sdri(scaled, refs, mix0)
            scores.append(score)
        assert value == pytest.approx(np.mean(scores), abs=1e-6)


def test_fit_finds_the_gain_that_undoes_a_known_level_error():
    rng = np.random.default_rng(1)
    stats = []
    for _ in range(20):
        ests, refs, mix0 = _mixture(rng, ["Buzzer", "Speech"], level=1.25, noise=0.05)
        stats.append(mixture_statistics(2025, ests, refs, mix0))
    fit = fit_output_gain(stats)
    assert fit["gain"] == pytest.approx(0.8, abs=0.02)
    assert fit["score"] > fit["score_at_1"] + 3
    assert fit["mixtures"] == 20 and fit["pairs"] == 40


def test_skipped_mixtures_do_not_count_and_none_left_is_an_error():
    rng = np.random.default_rng(2)
    ests, refs, mix0 = _mixture(rng, ["Buzzer"])
    empty = mixture_statistics(2026, [], [], mix0)
    assert empty is None
    one = mixture_statistics(2026, ests, refs, mix0)
    assert score_by_gain([one, empty], [1.0]) == pytest.approx(score_by_gain([one], [1.0]))
    with pytest.raises(ValueError, match="no validation mixture"):
        fit_output_gain([empty])


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "train", True, None])
def test_bad_output_gain_is_refused(bad):
    with pytest.raises(ValueError, match="output_gain"):
        check_output_gain(bad)


def test_good_output_gain_values():
    assert check_output_gain("valid") == "valid"
    assert check_output_gain(1) == 1.0 and check_output_gain(0.8) == 0.8


def test_calibrate_runs_the_separation_per_step_on_a_dataset():
    rng = np.random.default_rng(3)
    n = 3200
    items = []
    for k in range(5):
        refs = torch.zeros(3, n)
        refs[0] = torch.from_numpy(rng.standard_normal(n)).float()
        refs[1] = torch.from_numpy(rng.standard_normal(n)).float()
        mixture = torch.zeros(4, n)
        mixture[0] = refs[0] + refs[1] + 0.5
        items.append({"mixture": mixture, "references": refs, "n_targets": torch.tensor(2),
                      "label_index": torch.tensor([k % 18, (k + 1) % 18, 18])})
    truth = {}

    def separate(mixture, labels):  # step 1 twice too loud, step 2 half too quiet
        rows1, rows2 = [], []
        for b, labs in enumerate(labels):
            key = float(mixture[b, 0, :8].sum())
            refs = truth[key]
            rows1.append([(label, 2.0 * refs[k]) for k, label in enumerate(labs)])
            rows2.append([(label, 0.5 * refs[k]) for k, label in enumerate(labs)])
        return [rows1, rows2]

    for item in items:
        truth[float(item["mixture"][0, :8].sum())] = item["references"]
    fits = calibrate(separate, items, 2025, n_steps=2, batch_size=2)
    assert [f["gain"] for f in fits] == [0.5, 2.0]
    assert all(f["mixtures"] == 5 and f["pairs"] == 10 for f in fits)
    assert GAIN_GRID.min() <= 0.5 and GAIN_GRID.max() >= 2.0
    with pytest.raises(ValueError, match="refinement steps"):
        calibrate(separate, items, 2025, n_steps=1)
