"""Diagnostics beside the official metric (s5lib.metrics.breakdown) on constructed mixtures."""
import json

import numpy as np
import pytest

from s5lib.constants import CLASSES
from s5lib.metrics.breakdown import NONE, breakdowns, casa_mixture, read_interferer_counts
from s5lib.metrics.s5 import score_mixture
from s5lib.metrics.signal import snr
from s5lib.results import diagnostics_table

T = 4000
RNG = np.random.default_rng(0)
SPEECH, BUZZER, BLENDER = (RNG.standard_normal(T) for _ in range(3))


def scored(year=2026):
    mix = SPEECH + BUZZER + BLENDER
    noisy = lambda x: x + 0.1 * RNG.standard_normal(T)  # noqa: E731
    return [
        # a label swap: the Buzzer estimate is the speech, the Speech estimate the buzzer
        score_mixture(year, "swap", mix, [("Buzzer", noisy(SPEECH)), ("Speech", noisy(BUZZER))],
                      [("Speech", SPEECH), ("Buzzer", BUZZER)]),
        # a missed source and a correct one
        score_mixture(year, "missed", mix, [("Speech", noisy(SPEECH))],
                      [("Speech", SPEECH), ("Blender", BLENDER)]),
        # an empty mixture with a false alarm, and one without
        score_mixture(year, "alarm", mix, [("Speech", noisy(SPEECH))], []),
        score_mixture(year, "quiet", mix, [], []),
    ]


def test_official_score_does_not_depend_on_the_diagnostics():
    mix = SPEECH + BUZZER
    args = (2026, "m", mix, [("Buzzer", SPEECH)], [("Speech", SPEECH), ("Buzzer", BUZZER)])
    with_cross, without = score_mixture(*args), score_mixture(*args, with_cross=False)
    assert with_cross.score == without.score and without.cross_snri is None
    assert np.asarray(with_cross.cross_snri).shape == (1, 2)
    # cross_snri[e][r] = SNR(est e, ref r) - SNR(mixture, ref r)
    assert with_cross.cross_snri[0][0] == pytest.approx(snr(SPEECH, SPEECH) - snr(mix, SPEECH))


def test_casa_pairs_by_signal_whatever_the_labels():
    swap, missed, alarm, quiet = scored()
    score, pairs = casa_mixture(swap)
    assert sorted(pairs) == [(0, 0), (1, 1)]  # est 0 (labelled Buzzer) <-> ref 0 (Speech)
    assert score == pytest.approx(np.mean([swap.cross_snri[0][0], swap.cross_snri[1][1]]))
    assert score > 10 and swap.score < 0  # the official metric punishes the swap
    score, pairs = casa_mixture(missed)
    assert pairs == [(0, 0)] and score == pytest.approx(missed.cross_snri[0][0] / 2)
    assert casa_mixture(alarm) == (0.0, []) and casa_mixture(quiet) == (None, [])


def test_breakdowns_of_constructed_mixtures():
    results = scored()
    out = breakdowns(results, 2026, "CAPI-SDRi",
                     n_interferers={"swap": 2, "missed": 0, "alarm": 0, "quiet": 1})
    assert list(out["by_n_targets"]) == ["0", "2"]
    by_targets = out["by_n_targets"]
    assert by_targets["0"]["n_mixtures"] == 2 and by_targets["0"]["n_scored"] == 1
    assert by_targets["2"]["n_mixtures"] == 2
    assert by_targets["2"]["CAPI-SDRi"] == pytest.approx(np.mean([results[0].score,
                                                                  results[1].score]))
    assert out["by_n_interferers"]["0"]["n_mixtures"] == 2
    # the swap's label set is right (its signals are what is swapped)
    assert out["by_n_interferers"]["2"]["label_accuracy"] == 100.0
    assert out["by_duplicates"]["without"]["n_mixtures"] == 4
    assert out["false_alarm"] == {"n_empty_mixtures": 2, "n_with_an_estimate": 1, "rate": 50.0}
    classes = {row["label"]: row for row in out["per_class"]}
    # Speech: TP in swap, missed; FP in alarm -> precision 2/3, recall 2/2
    assert classes["Speech"]["precision"] == pytest.approx(200 / 3)
    assert classes["Speech"]["recall"] == 100.0
    assert classes["Blender"]["recall"] == 0.0 and classes["Blender"]["precision"] is None
    labels = out["confusion"]["labels"]
    counts = np.array(out["confusion"]["counts"])
    at = lambda true, pred: counts[labels.index(true), labels.index(pred)]  # noqa: E731
    assert at("Speech", "Buzzer") == 1 and at("Buzzer", "Speech") == 1  # the swap
    assert at("Speech", "Speech") == 1  # the correct one in "missed"
    assert at("Blender", NONE) == 1 and at(NONE, "Speech") == 1
    assert counts.sum() == 5 and len(labels) == len(CLASSES) + 1
    assert out["casa"]["label_swaps"] == 2 and out["casa"]["n_pairs"] == 3
    assert out["casa"]["n_scored"] == 3  # "quiet" has nothing on either side
    json.dumps(out)  # JSON-ready


def test_duplicates_split_2026():
    mix = SPEECH + BUZZER
    dup = score_mixture(2026, "dup", mix, [("Speech", SPEECH)], [("Speech", SPEECH),
                                                                 ("Speech", BUZZER)])
    out = breakdowns([dup] + scored()[:2], 2026, "CAPI-SDRi")
    assert out["by_duplicates"]["with duplicates"]["n_mixtures"] == 1
    assert "by_n_interferers" not in out
    assert "by_duplicates" not in breakdowns(scored(2025)[:2], 2025, "CA-SDRi")


def test_interferer_counts_from_metadata(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"int_events": [{}, {}]}))
    (tmp_path / "b.json").write_text(json.dumps({"int_events": []}))
    assert read_interferer_counts(str(tmp_path), ["a", "b"]) == {"a": 2, "b": 0}
    assert read_interferer_counts(str(tmp_path / "none"), ["a"]) is None
    (tmp_path / "c.json").write_text("{broken")
    with pytest.raises(ValueError, match="c.json"):
        read_interferer_counts(str(tmp_path), ["a", "c"])


def test_diagnostics_table_in_results(tmp_path):
    out = breakdowns(scored(), 2026, "CAPI-SDRi", n_interferers={"swap": 2, "missed": 0,
                                                                 "alarm": 0, "quiet": 1})
    folder = tmp_path / "scores" / "estimated"
    folder.mkdir(parents=True)
    (folder / "breakdowns.json").write_text(json.dumps(out))
    summary = {"label_mode": "estimated", "anchor": None}
    table = diagnostics_table([(str(folder / "summary.json"), summary),
                               (None, {"anchor": "silence"})], "CAPI-SDRi")
    lines = table.splitlines()
    assert lines[0].startswith("| Labels | 0 targets (n) | 2 targets (n) | 0 interferers (n)")
    assert len(lines) == 3 and lines[2].startswith("| estimated |")
    assert "50.0 (2)" in lines[2] and "2 / 3" in lines[2]
    assert diagnostics_table([(None, summary)], "CAPI-SDRi") is None


def test_diagnostics_table_leaves_out_false_alarms_without_empty_mixtures(tmp_path):
    out = breakdowns(scored(2025)[:2], 2025, "CA-SDRi")
    (tmp_path / "breakdowns.json").write_text(json.dumps(out))
    table = diagnostics_table([(str(tmp_path / "summary.json"), {"label_mode": "oracle"})],
                              "CA-SDRi")
    assert "False alarms" not in table and table.splitlines()[2].startswith("| oracle |")
