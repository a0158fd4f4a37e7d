"""Wav-directory scorer round trips (both naming schemes), anchors, input errors, RESULTS.md,
compare and the benchmark entry point."""
import csv
import json
import math
import os

import numpy as np
import pytest

from s5lib.audio import write_audio
from s5lib.bin import bench_score, compare, make_results
from s5lib.bin import score as score_cli
from s5lib.bin.score import ScoreInputError, ReferenceSet, score
from s5lib.config import ConfigError
from s5lib.metrics import EPS, S5Scorer
from s5lib.results import write_score_outputs

SR = 32000
T = 1600


def db(num, den):
    return 10 * math.log10((num + EPS) / (den + EPS))


def energy(x):
    return float(np.sum(np.asarray(x, np.float64) ** 2))


def snr_by_hand(est, ref):
    return db(energy(ref), energy(ref - est))


class Maker:
    """Writes a tiny test set and estimates, remembering the signals for hand computation."""

    def __init__(self, root):
        self.root = str(root)
        self.test = os.path.join(self.root, "test")
        self.est = os.path.join(self.root, "est")
        self.rng = np.random.default_rng(7)
        self.mix0 = {}
        os.makedirs(os.path.join(self.test, "oracle_target"), exist_ok=True)
        os.makedirs(self.est, exist_ok=True)

    def noise(self, scale):
        return (scale * self.rng.standard_normal(T)).astype(np.float32)

    def mixture(self, name, refs):
        mix = np.stack([sum(refs, np.zeros(T, np.float32)) + self.noise(0.05)
                        for _ in range(4)]).astype(np.float32)
        write_audio(os.path.join(self.test, "soundscape", f"{name}.wav"), mix, SR)
        self.mix0[name] = mix[0]
        return mix[0]

    def ref(self, filename, wave):
        write_audio(os.path.join(self.test, "oracle_target", filename), wave, SR)

    def estimate(self, filename, wave, sr=SR):
        write_audio(os.path.join(self.est, filename), wave, sr)


def run(maker, out, **cfg):
    base = {"ref_dir": maker.test, "est_dir": maker.est, "out_dir": str(out), "nj": 1,
            "plot": False, "recipe": "unit"}
    base.update(cfg)
    return score(base, command="python -m s5lib.bin.score (test)")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- round trips

@pytest.fixture()
def set_2025(tmp_path):
    """Mixture ids with underscores that prefix each other; TP, FP and FN cases."""
    m = Maker(tmp_path)
    a1, a2 = m.noise(0.3), m.noise(0.2)
    mix_a = m.mixture("room_a_1", [a1, a2])
    m.ref("room_a_1_Speech.wav", a1)
    m.ref("room_a_1_Dishes.wav", a2)
    est_speech = a1 + m.noise(0.1)
    m.estimate("room_a_1_Speech.wav", est_speech)        # TP
    m.estimate("room_a_1_Buzzer.wav", m.noise(0.1))      # FP ; Dishes is an FN
    b1 = m.noise(0.3)
    mix_b = m.mixture("room_a_10", [b1])
    m.ref("room_a_10_Pour.wav", b1)
    est_pour = b1 + m.noise(0.05)
    m.estimate("room_a_10_Pour.wav", est_pour)
    tp_a = snr_by_hand(est_speech, a1) - snr_by_hand(mix_a, a1)
    tp_b = snr_by_hand(est_pour, b1) - snr_by_hand(mix_b, b1)
    return m, {"room_a_1": tp_a / 3, "room_a_10": tp_b}, (tp_a, tp_b)


def test_round_trip_2025(set_2025, tmp_path):
    maker, expected, tps = set_2025
    out = tmp_path / "score"
    summary = run(maker, out, year=2025, tag="exp1")
    metrics = summary["metrics"]
    assert metrics["CA-SDRi"] == pytest.approx(np.mean(list(expected.values())), abs=1e-4)
    assert metrics["label_accuracy"] == pytest.approx(50.0)
    assert (metrics["tp"], metrics["fp"], metrics["fn"]) == (2, 1, 1)
    assert metrics["SDRi_tp"] == pytest.approx(np.mean(tps), abs=1e-4)
    on_disk = json.loads((out / "summary.json").read_text())
    for key in ("recipe", "tag", "year", "label_mode", "command", "metrics"):
        assert key in on_disk
    assert (on_disk["recipe"], on_disk["tag"], on_disk["year"], on_disk["label_mode"]) == \
        ("unit", "exp1", 2025, "estimated")
    rows = {r["mixture"]: r for r in read_csv(out / "per_mixture.csv")}
    assert float(rows["room_a_1"]["score"]) == pytest.approx(expected["room_a_1"], abs=1e-3)
    assert rows["room_a_10"]["labels_correct"] == "1"
    per_source = read_csv(out / "per_source.csv")
    kinds = sorted((r["mixture"], r["label"], r["kind"]) for r in per_source)
    assert kinds == [("room_a_1", "Buzzer", "FP"), ("room_a_1", "Dishes", "FN"),
                     ("room_a_1", "Speech", "TP"), ("room_a_10", "Pour", "TP")]
    per_class = {r["label"]: r for r in read_csv(out / "per_class.csv")}
    assert per_class["Dishes"]["n_fn"] == "1" and per_class["Buzzer"]["n_fp"] == "1"
    assert float(per_class["Pour"]["snri_tp"]) == pytest.approx(tps[1], abs=1e-4)
    assert (out / "config.yaml").exists()


@pytest.fixture()
def set_2026(tmp_path):
    """Slots, a swapped same-class pair, zero-target mixtures with and without a false alarm."""
    m = Maker(tmp_path)
    s0, s1 = m.noise(0.3), m.noise(0.3)
    mix_d = m.mixture("soundscape_0000", [s0, s1])
    m.ref("soundscape_0000_0_Speech.wav", s0)
    m.ref("soundscape_0000_1_Speech.wav", s1)
    est_for_s1, est_for_s0 = s1 + m.noise(0.05), s0 + m.noise(0.1)
    m.estimate("soundscape_0000_0_Speech.wav", est_for_s1)   # swapped on purpose
    m.estimate("soundscape_0000_2_Speech.wav", est_for_s0)   # slot gap (1 was silent)
    m.mixture("soundscape_0001", [])                         # nothing anywhere: skipped
    m.mixture("soundscape_0002", [])
    m.estimate("soundscape_0002_1_Cough.wav", m.noise(0.1))  # false alarm: counts 0
    value_d = ((snr_by_hand(est_for_s1, s1) - snr_by_hand(mix_d, s1))
               + (snr_by_hand(est_for_s0, s0) - snr_by_hand(mix_d, s0))) / 2
    probs = {"nparams": 10, "probabilities": [
        {"soundscape": "soundscape_0000", "estimate": [
            {"filename": "soundscape_0000_0_Speech.wav", "label": "Speech", "probability": 0.9},
            {"filename": "soundscape_0000_2_Speech.wav", "label": "Speech", "probability": 0.7}]},
        {"soundscape": "soundscape_0001", "estimate": []},
        {"soundscape": "soundscape_0002", "estimate": [
            {"filename": "soundscape_0002_1_Cough.wav", "label": "Cough", "probability": 0.2}]},
    ]}
    probs_path = os.path.join(m.root, "eval_results.json")
    with open(probs_path, "w") as f:
        json.dump(probs, f)
    return m, value_d, probs_path


def test_round_trip_2026(set_2026, tmp_path):
    maker, value_d, probs_path = set_2026
    out = tmp_path / "score"
    metrics = run(maker, out, year=2026, probs=probs_path)["metrics"]
    assert metrics["CAPI-SDRi"] == pytest.approx((value_d + 0.0) / 2, abs=1e-4)
    assert (metrics["n_mixtures"], metrics["n_scored"], metrics["n_skipped"]) == (3, 2, 1)
    assert metrics["accuracy_mixture"] == pytest.approx(100 * 2 / 3)
    assert metrics["accuracy_source"] == pytest.approx(100 * 2 / 3)
    per_source = read_csv(out / "per_source.csv")
    pairs = {(r["est_name"], r["ref_name"]): r for r in per_source if r["kind"] == "TP"}
    assert set(pairs) == {("soundscape_0000_0_Speech.wav", "soundscape_0000_1_Speech.wav"),
                          ("soundscape_0000_2_Speech.wav", "soundscape_0000_0_Speech.wav")}
    fa = [r for r in per_source if r["kind"] == "FP"][0]
    assert fa["probability"] == "0.2" and fa["mixture"] == "soundscape_0002"
    rows = {r["mixture"]: r for r in read_csv(out / "per_mixture.csv")}
    assert rows["soundscape_0001"]["skipped"] == "1"
    assert rows["soundscape_0000"]["probabilities"] == "0.9000;0.7000"


def test_pool_matches_serial(set_2026, tmp_path):
    maker, _, _ = set_2026
    serial = run(maker, tmp_path / "a", year=2026)["metrics"]
    pooled = run(maker, tmp_path / "b", year=2026, nj=2, plot=True)["metrics"]
    assert pooled == serial
    assert (tmp_path / "b" / "per_class.png").stat().st_size > 1000


def test_anchors(set_2026, tmp_path):
    maker, _, _ = set_2026
    mixture = run(maker, tmp_path / "m", year=2026, est_dir=None, anchor="mixture")
    assert mixture["metrics"]["CAPI-SDRi"] == 0.0
    assert (mixture["label_mode"], mixture["tag"]) == ("oracle", "anchor_mixture")
    assert mixture["metrics"]["accuracy_mixture"] == 100.0
    oracle = run(maker, tmp_path / "o", year=2026, est_dir=None, anchor="oracle")["metrics"]
    assert math.isfinite(oracle["CAPI-SDRi"]) and oracle["CAPI-SDRi"] > 60
    # the SNR of a perfect estimate is the SPEC formula with a zero error
    test_set = ReferenceSet(maker.test, 2026)
    refs, _ = test_set.read_references("soundscape_0000")
    expected = np.mean([db(energy(w), 0.0) for _, w in refs])
    assert oracle["SDR_tp"] == pytest.approx(expected, abs=1e-6)


def test_in_memory_matches_wav_directory(set_2026, tmp_path):
    maker, _, _ = set_2026
    from_files = run(maker, tmp_path / "f", year=2026)["metrics"]
    test_set = ReferenceSet(maker.test, 2026)
    scorer = S5Scorer(2026)
    for mixture in test_set.mixtures:
        refs, names = test_set.read_references(mixture)
        ests = []
        for filename in sorted(os.listdir(maker.est)):
            if filename.startswith(mixture + "_"):
                from s5lib.audio import read_audio
                ests.append((filename[:-4].split("_")[-1],
                             read_audio(os.path.join(maker.est, filename)), None))
        ests.sort(key=lambda e: e[0])
        scorer.add(mixture, test_set.read_mixture(mixture)[0], ests, refs, ref_names=names)
    summary = write_score_outputs(scorer, str(tmp_path / "mem"), {"tag": "mem"}, plot=False)
    assert summary["metrics"]["CAPI-SDRi"] == pytest.approx(from_files["CAPI-SDRi"], abs=1e-9)
    assert (tmp_path / "mem" / "summary.json").exists()


# ----------------------------------------------------------------------------- errors

def test_bad_inputs_listed_in_one_error(set_2026, tmp_path):
    maker, _, _ = set_2026
    maker.estimate("soundscape_0001_0_Speach.wav", maker.noise(0.1))        # unknown label
    maker.estimate("soundscape_9999_0_Speech.wav", maker.noise(0.1))        # unknown mixture
    maker.estimate("soundscape_0000_0_Cough.wav", maker.noise(0.1))         # slot 0 twice
    with open(os.path.join(maker.est, "notes.txt"), "w") as f:             # ignored, warned
        f.write("x")
    with pytest.raises(ScoreInputError) as err:
        run(maker, tmp_path / "s", year=2026)
    message = str(err.value)
    assert "3 problem(s)" in message
    assert "soundscape_0001_0_Speach.wav" in message and "unknown label 'Speach'" in message
    assert "soundscape_9999_0_Speech.wav" in message
    assert "slot 0 2 times" in message
    assert "notes.txt" not in message


def test_audio_problems_listed_in_one_error(set_2026, tmp_path):
    maker, _, _ = set_2026
    write_audio(os.path.join(maker.est, "soundscape_0000_0_Speech.wav"), np.zeros(T - 5), SR)
    write_audio(os.path.join(maker.est, "soundscape_0002_1_Cough.wav"), np.zeros(T), 16000)
    with pytest.raises(ScoreInputError) as err:
        run(maker, tmp_path / "s", year=2026)
    message = str(err.value)
    assert "2 problem(s)" in message
    assert f"{T - 5} samples, expected {T}" in message
    assert "soundscape_0002_1_Cough.wav: sample rate is 16000 Hz" in message


def test_probabilities_must_match_files(set_2026, tmp_path):
    maker, _, probs_path = set_2026
    with open(probs_path) as f:
        probs = json.load(f)
    probs["probabilities"][2]["estimate"][0]["filename"] = "soundscape_0002_3_Cough.wav"
    with open(probs_path, "w") as f:
        json.dump(probs, f)
    with pytest.raises(ScoreInputError) as err:
        run(maker, tmp_path / "s", year=2026, probs=probs_path)
    message = str(err.value)
    assert "lists 'soundscape_0002_3_Cough.wav'" in message
    assert "no probability for estimate 'soundscape_0002_1_Cough.wav'" in message


def test_2025_duplicate_class_and_missing_folders(set_2025, tmp_path):
    maker, _, _ = set_2025
    write_audio(os.path.join(maker.est, "room_a_10_3_Pour.wav"), np.zeros(T), SR)
    with pytest.raises(ScoreInputError, match="2025 allows one estimate per class"):
        run(maker, tmp_path / "s", year=2025)
    with pytest.raises(ScoreInputError, match="soundscape folder does not exist"):
        run(maker, tmp_path / "s", year=2025, ref_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ScoreInputError, match="estimate folder does not exist"):
        run(maker, tmp_path / "s", year=2025, est_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ScoreInputError, match="est_dir is required"):
        run(maker, tmp_path / "s", year=2025, est_dir=None)


def test_cli_reports_errors_and_unknown_options(set_2025, tmp_path, capsys):
    maker, _, _ = set_2025
    write_audio(os.path.join(maker.est, "room_a_10_Pour.wav"), np.zeros((2, T)), SR)
    argv = ["--year", "2025", "--ref_dir", maker.test, "--est_dir", maker.est,
            "--out_dir", str(tmp_path / "s"), "--nj", "1", "--plot", "false"]
    assert score_cli.main(argv) == 1
    assert "has 2 channel(s), expected 1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown option --n_jobs"):
        score_cli.main(argv + ["--n_jobs", "3"])


# ----------------------------------------------------------------------------- RESULTS / compare

def fake_summary(path, recipe, tag, label_mode, year, main, acc):
    metric = "CA-SDRi" if year == 2025 else "CAPI-SDRi"
    acc_key = "label_accuracy" if year == 2025 else "accuracy_mixture"
    data = {"recipe": recipe, "tag": tag, "year": year, "label_mode": label_mode,
            "command": f"python -m s5lib.bin.score --tag {tag}", "metric_name": metric,
            "metrics": {"year": year, "metric_name": metric, metric: main, acc_key: acc,
                        "accuracy_source": acc + 1, "n_mixtures": 1512, "n_skipped": 3}}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def test_make_results(tmp_path):
    recipe = tmp_path / "egs" / "baseline"
    a = fake_summary(str(recipe / "exp" / "score_a" / "summary.json"), "baseline", "sep_a",
                     "estimated", 2026, 8.1714, 57.1)
    fake_summary(str(recipe / "exp" / "score_a_oracle" / "summary.json"), "baseline", "sep_a",
                 "oracle", 2026, 11.5, 100.0)
    out = recipe / "RESULTS.md"
    assert make_results.main(["--summaries", a, str(recipe / "exp" / "score_a_oracle"),
                              "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("<!-- Generated") and "Never edit" in text
    assert "# Results: baseline" in text
    for key in ("date:", "python:", "torch:", "numpy:", "git:", "host:", "cpu:", "gpu:"):
        assert key in text
    assert text.count("## sep_a") == 1
    assert "| estimated | 8.17 | 57.10 | 58.10 | 1512 | 3 |" in text
    assert "| oracle | 11.50 | 100.00 | 101.00 | 1512 | 3 |" in text
    assert "python -m s5lib.bin.score --tag sep_a" in text
    assert make_results.main(["--summaries", str(tmp_path / "none.json"),
                              "--out", str(out)]) == 1
    # another recipe's summary with the same tag gets its own table, titled by its recipe
    other = fake_summary(str(tmp_path / "egs" / "kubig" / "exp" / "s" / "summary.json"), "kubig",
                         "sep_a", "estimated", 2026, 1.25, 40.0)
    assert make_results.main(["--summaries", a, other, "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("## sep_a") == 1 and text.count("## kubig: sep_a") == 1
    assert "| estimated | 1.25 | 40.00 | 41.00 | 1512 | 3 |" in text.split("## kubig: sep_a")[1]


def test_compare(tmp_path, capsys):
    fake_summary(str(tmp_path / "egs" / "baseline" / "exp" / "s" / "summary.json"),
                 "baseline", "sep", "estimated", 2026, 8.1714, 57.1)
    fake_summary(str(tmp_path / "egs" / "cpjku" / "exp" / "s" / "summary.json"),
                 "cpjku", "iter2", "estimated", 2026, 9.25, 61.0)
    md, table = tmp_path / "cmp.md", tmp_path / "cmp.csv"
    duplicate = str(tmp_path / "egs" / "cpjku" / "exp" / "s" / "summary.json")
    assert compare.main(["--results", str(tmp_path / "egs" / "baseline"),
                         str(tmp_path / "egs" / "cpjku"), duplicate, "--out", str(md),
                         "--csv", str(table), "--sort", "score"]) == 0
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| Recipe | Experiment | Year | Labels | CAPI-SDRi |")
    assert "CA-SDRi |" not in lines[0]
    assert lines[2].startswith("| cpjku | iter2 | 2026 | estimated | 9.25 | 61.00 |")
    assert lines[3].startswith("| baseline | sep | 2026 | estimated | 8.17 | 57.10 |")
    rows = read_csv(table)
    assert [r["recipe"] for r in rows] == ["cpjku", "baseline"]       # each summary once
    assert float(rows[1]["CAPI-SDRi"]) == pytest.approx(8.1714)
    assert compare.main(["--results", str(tmp_path / "missing")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_bench_score_runs(tmp_path, capsys):
    assert bench_score.main(["--n_mix", "2", "--nj", "1", "--tmp_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "scoring from wav files:" in out and "extrapolated to 1512 mixtures:" in out
    assert os.listdir(tmp_path) == []


def test_empty_estimate_folder_scores_as_nothing_found(tmp_path, capsys):
    maker = Maker(tmp_path)
    ref = maker.noise(0.3)
    maker.mixture("m1", [ref])
    maker.ref("m1_0_Speech.wav", ref)
    maker.mixture("m2", [])  # no target: skipped by CAPI-SDRi, a correct empty prediction
    summary = run(maker, tmp_path / "out", year=2026)
    assert "no estimate wav files found" in capsys.readouterr().err
    assert summary["metrics"]["CAPI-SDRi"] == 0.0  # one false negative counts 0
    assert summary["metrics"]["n_skipped"] == 1


def test_seed_table_groups_seeds_sources_and_refinement_steps(tmp_path):
    from s5lib.results import seed_table

    def summary(tag, mode, value, anchor=None, recipe="cpjku"):
        return {"recipe": recipe, "tag": tag, "year": 2025, "label_mode": mode, "anchor": anchor,
                "metric_name": "CA-SDRi", "metrics": {"CA-SDRi": value}}
    summaries = []
    for seed, shift in ((0, 0.0), (1, 1.0)):
        tag = f"separator_full_seed{seed}/decode_test"
        summaries += [summary(tag, "estimated", 4.0 + shift), summary(tag, "oracle", 6.0 + shift),
                      summary(tag, "baseline_tagger", 5.0 + shift)]
        it = f"separator_iter3_seed{seed}/decode_test_infer_iterative"
        summaries += [summary(it, "oracle_step1", 6.0 + shift), summary(it, "oracle_step2", 6.5 + shift),
                      summary(it, "oracle", 7.0 + shift)]
    summaries += [summary("separator_full_seed0/decode_test", "oracle", 4.46, anchor="silence"),
                  summary("separator/decode_test", "oracle", 5.5, recipe="baseline")]
    lines = seed_table(summaries).splitlines()
    assert lines[0] == "| Recipe | Experiment | Steps | baseline_tagger | estimated | oracle |"
    full = next(line for line in lines if "separator_full/decode_test" in line)
    assert "| 5.50 ± 0.71 (2) | 4.50 ± 0.71 (2) | 6.50 ± 0.71 (2) |" in full
    steps = [line for line in lines if "separator_iter3/" in line]
    assert [line.split("|")[3].strip() for line in steps] == ["1", "2", "3"]  # the last step is 3
    assert steps[2].endswith("| 7.50 ± 0.71 (2) |")
    assert any(line.startswith("| baseline | separator/decode_test |") and "5.50 ± 0.00 (1)" in line
               for line in lines)
    assert any("anchor: silence (2025 rules)" in line and "4.46" in line for line in lines)
    from s5lib.results import plot_refinement_curves, refinement_curves
    curves = refinement_curves(summaries)
    assert list(curves) == [("cpjku", "separator_iter3/decode_test_infer_iterative")]
    oracle = curves[("cpjku", "separator_iter3/decode_test_infer_iterative")]["oracle"]
    assert [(k, round(m, 2), n) for k, m, _, n in oracle] == [(1, 6.5, 2), (2, 7.0, 2), (3, 7.5, 2)]
    assert plot_refinement_curves(curves, str(tmp_path / "steps.png"))
    assert (tmp_path / "steps.png").stat().st_size > 1000
    assert not plot_refinement_curves({}, str(tmp_path / "none.png"))


def test_score_accepts_label_sources_and_refinement_steps(tmp_path):
    from s5lib.bin.score import is_label_mode
    for mode in ("estimated", "oracle", "baseline_tagger", "oracle_step2", "baseline_tagger_step10"):
        assert is_label_mode(mode), mode
    for mode in ("est", "oracle_step", "oracle_stepx", "anchor_silence", "", None):
        assert not is_label_mode(mode), mode


def test_make_results_keeps_runs_whose_exp_dirs_are_gone(tmp_path, capsys):
    """RESULTS.json archives every run of the page: regenerating without some runs' summaries
    (a fresh clone) keeps their rows and diagnostics and names them; --forget_missing drops
    them; a page older than the archive keeps its experiment sections as text; a damaged
    archive is an error naming it."""
    import shutil
    recipe = tmp_path / "egs" / "baseline"
    a = fake_summary(str(recipe / "exp" / "sep_a" / "scores" / "estimated" / "summary.json"),
                     "baseline", "sep_a", "estimated", 2026, 8.1714, 57.1)
    b_dir = recipe / "exp" / "sep_b" / "scores" / "oracle"
    b = fake_summary(str(b_dir / "summary.json"), "baseline", "sep_b", "oracle", 2026, 11.5, 100.0)
    (b_dir / "breakdowns.json").write_text(json.dumps(
        {"by_n_targets": {"1": {"CAPI-SDRi": 9.25, "n_mixtures": 4}},
         "casa": {"CASA-SDRi": 7.5, "label_swaps": 1, "n_pairs": 9},
         "casa_per_mixture": {"soundscape_0000": 7.5}, "per_class": [{"label": "Bark"}]}))
    out = recipe / "RESULTS.md"
    assert make_results.main(["--summaries", a, b, "--out", str(out)]) == 0
    first = out.read_text()
    archive = json.loads((recipe / "RESULTS.json").read_text())
    assert sorted(r["name"] for r in archive["runs"]) == ["sep_a", "sep_b"]
    # the archive keeps what the page shows of breakdowns.json, not its per-mixture parts
    assert next(r for r in archive["runs"] if r["name"] == "sep_b")["breakdowns"] == {
        "by_n_targets": {"1": {"CAPI-SDRi": 9.25, "n_mixtures": 4}},
        "casa": {"CASA-SDRi": 7.5, "label_swaps": 1, "n_pairs": 9}}
    assert "| oracle | 9.25 (4) | 7.50 | 1 / 9 |" in first.split("## sep_b")[1]
    assert "Kept from" not in first

    shutil.rmtree(recipe / "exp" / "sep_b")  # a fresh clone: sep_b's exp dir is gone
    capsys.readouterr()
    assert make_results.main(["--summaries", a, "--out", str(out)]) == 0
    assert "1 kept from the previous page" in capsys.readouterr().out
    text = out.read_text()
    assert "Kept from the previous page (1 record(s) of `RESULTS.json`)" in text and "`sep_b`" in text
    assert text.split("## sep_b")[1] == first.split("## sep_b")[1]  # same rows and diagnostics
    assert make_results.main(["--summaries", a, "--out", str(out)]) == 0  # kept again
    assert "## sep_b" in out.read_text()

    assert make_results.main(["--summaries", a, "--out", str(out), "--forget_missing"]) == 0
    text = out.read_text()
    assert "## sep_b" not in text and "Kept from" not in text and "## sep_a" in text
    assert [r["name"] for r in json.loads((recipe / "RESULTS.json").read_text())["runs"]] == ["sep_a"]

    # a page written before the archive existed: its other experiments' sections stay as text
    os.remove(recipe / "RESULTS.json")
    old_section = "| oracle | 6.38 | 100.00 |\n\nCommands:\n\n```sh\n# oracle labels\nrun it\n```"
    out.write_text(f"# Results: baseline\n\n## Environment\n\nx\n\n## old_run/decode_test\n\n"
                   f"{old_section}\n\n## sep_a\n\nstale\n\n## Across seeds\n\nstale spread\n")
    assert make_results.main(["--summaries", a, "--out", str(out)]) == 0
    text = out.read_text()
    assert f"## old_run/decode_test\n\n{old_section}\n" in text
    assert "stale" not in text and text.count("## sep_a") == 1
    records = json.loads((recipe / "RESULTS.json").read_text())["runs"]
    assert {"name": "old_run/decode_test", "markdown": old_section} in records
    assert make_results.main(["--summaries", a, "--out", str(out)]) == 0
    assert f"## old_run/decode_test\n\n{old_section}\n" in out.read_text()

    (recipe / "RESULTS.json").write_text("{not json")
    capsys.readouterr()
    assert make_results.main(["--summaries", a, "--out", str(out)]) == 1
    assert "RESULTS.json: not a RESULTS archive" in capsys.readouterr().err


def test_make_results_rebuilds_an_older_page_from_its_tables(tmp_path):
    """A RESULTS.md without RESULTS.json (written before the archive existed): regenerating it
    where its runs' exp dirs are gone gives the same sections, the same diagnostics and the
    same across-seeds rows, rebuilt from its tables (values with two decimals here: the tables
    print two, so other values come back rounded)."""
    import shutil
    recipe = tmp_path / "egs" / "cpjku"
    paths = []
    for seed, (sdri, acc) in enumerate([(6.17, 39.0), (6.59, 41.0)]):
        for mode, value in (("estimated", sdri - 2), ("oracle", sdri)):
            d = recipe / "exp" / f"sep_full_seed{seed}" / "scores" / mode
            paths.append(fake_summary(str(d / "summary.json"), "cpjku",
                                      f"sep_full_seed{seed}/decode_test", mode, 2025, value, acc))
            (d / "breakdowns.json").write_text(json.dumps(
                {"by_n_targets": {"2": {"CA-SDRi": value + 0.5, "n_mixtures": 37}},
                 "casa": {"CASA-SDRi": value - 0.25, "label_swaps": 3, "n_pairs": 20}}))
    d = recipe / "exp" / "sep_full_seed0" / "scores" / "anchor_silence"
    paths.append(fake_summary(str(d / "summary.json"), "cpjku", "sep_full_seed0/decode_test",
                              "estimated", 2025, 4.46, 100.0))
    with open(paths[-1]) as f:
        anchor = json.load(f)
    anchor["anchor"] = "silence"
    with open(paths[-1], "w") as f:
        json.dump(anchor, f)
    out = recipe / "RESULTS.md"
    assert make_results.main(["--summaries", *paths, "--out", str(out)]) == 0
    first = out.read_text()
    assert "| estimated | 4.38 ± 0.30 |" in first  # across seeds: mean ± std of 4.17, 4.59
    os.remove(recipe / "RESULTS.json")
    shutil.rmtree(recipe / "exp")
    cases = "| Recipe | Experiment | Labels |\n|---|---|---|\n| cpjku | sep_full/decode_test | estimated |"
    out.write_text(first + f"\n## Strategy cases\n\n{cases}\n")  # counts no table row holds
    other = fake_summary(str(tmp_path / "other" / "summary.json"), "cpjku", "sep_new/decode_test",
                         "oracle", 2025, 7.0, 100.0)
    assert make_results.main(["--summaries", other, "--out", str(out)]) == 0
    again = out.read_text()
    assert "Some rows were rebuilt from the tables" in again
    for seed in (0, 1):
        head = f"## sep_full_seed{seed}/decode_test"
        assert again.split(head)[1].split("\n## ")[0] == first.split(head)[1].split("\n## ")[0]
    spread = first.split("## Across seeds")[1].split("## Comparison table")[0]
    assert spread.strip() in again
    assert "| cpjku | sep_full/decode_test |  | 4.38 ± 0.30 (2) | 6.38 ± 0.30 (2) |" in again
    assert again.endswith(f"## Strategy cases\n\n{cases}\n")
