"""Submission packaging (s5lib.infer.submission, s5lib.bin.package_submission): layouts of the
2025 zip and the 2026 zip + eval_results.json, the meta file, and every refused input."""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from s5lib import constants
from s5lib.audio import write_audio
from s5lib.bin import package_submission as cli
from s5lib.bin.common import RecipeError
from s5lib.infer.submission import (PLACEHOLDER, SubmissionError, archive_folder,
                                    check_estimates, meta_yaml_text, package_submission,
                                    submission_label)
from s5lib.metrics.naming import source_filename

SR = constants.SAMPLE_RATE
FULL = constants.N_SAMPLES
SHORT = 3200
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (mixture length, [(slot, label, probability)]); slots are ignored for 2025 names
MIX_2025 = {
    "eval_0000": (FULL, [(0, "Speech", 0.9), (1, "Dishes", 0.6)]),
    "eval_0001": (SHORT, [(0, "Cough", 0.7)]),
    "eval_0010": (SHORT, [(0, "Blender", 0.55), (1, "Buzzer", 0.8), (2, "Typing", 0.51)]),
}
MIX_2026 = {
    "eval_0000": (FULL, [(0, "Speech", 0.9), (2, "Speech", 0.7)]),  # same class, slot gap
    "eval_0001": (SHORT, []),                                        # nothing detected
    "eval_0002": (SHORT, [(1, "Doorbell", 0.66)]),
}


def fake_run(root, year, mixtures, label_mode="estimated", seed=0):
    """A stage-4 output as s5lib.bin.infer writes it, plus the soundscape folder."""
    rng = np.random.default_rng(seed)
    soundscape = os.path.join(root, "eval_set", "soundscape")
    est_dir = os.path.join(root, "infer", "estimated")
    wav_dir = os.path.join(est_dir, "estimates")
    os.makedirs(wav_dir, exist_ok=True)
    probabilities = []
    for name, (frames, ests) in mixtures.items():
        write_audio(os.path.join(soundscape, f"{name}.wav"),
                    rng.uniform(-0.3, 0.3, (4, frames)), SR, subtype="PCM_16")
        entry = {"soundscape": name, "estimate": []}
        for slot, label, prob in ests:
            fname = source_filename(name, label, slot if year == 2026 else None)
            write_audio(os.path.join(wav_dir, fname), rng.uniform(-0.5, 0.5, frames), SR)
            entry["estimate"].append({"filename": fname, "label": label, "probability": prob})
        probabilities.append(entry)
    write_results(est_dir, {"probabilities": probabilities, "label_mode": label_mode,
                            "rtf": 0.01})
    return est_dir, soundscape


def read_results(est_dir):
    with open(os.path.join(est_dir, "eval_results.json")) as f:
        return json.load(f)


def write_results(est_dir, data):
    with open(os.path.join(est_dir, "eval_results.json"), "w") as f:
        json.dump(data, f, indent=1)


def entry_of(data, mixture):
    return next(e for e in data["probabilities"] if e["soundscape"] == mixture)


def package(year, est_dir, soundscape, out, **kw):
    kw.setdefault("team", "Nguyen_NTT")
    if year == 2026:
        kw.setdefault("nparams", 1234)
    return package_submission(est_dir, out, year, soundscape_dir=soundscape, **kw)


# ----------------------------------------------------------------------------- layouts

def test_label_rules():
    assert submission_label("Nguyen_NTT", 3) == "Nguyen_NTT_task4_3"
    assert submission_label("Park_GIST-Hanwha", 4) == "Park_GIST-Hanwha_task4_4"
    assert archive_folder("Nguyen_NTT_task4_3", 2025) == "Nguyen_NTT_task4_3_out"
    assert archive_folder("Nguyen_NTT_task4_3", 2026) == "Nguyen_NTT_task4_3"
    for team, index, problem in [(None, 1, "no team"), ("Nguyen", 1, "not <Lastname>"),
                                 ("Ng_uy_en", 1, "not <Lastname>"), ("Ng uyen_NTT", 1, "not"),
                                 ("Nguyen_NTT", 5, "1, 2, 3 or 4"),
                                 ("Nguyen_NTT", 0, "1, 2, 3 or 4"),
                                 ("Nguyen_NTT", "1", "1, 2, 3 or 4")]:
        with pytest.raises(SubmissionError, match=problem):
            submission_label(team, index)


def test_2025_zip_layout_audio_and_meta(tmp_path):
    est_dir, soundscape = fake_run(str(tmp_path), 2025, MIX_2025)
    out = str(tmp_path / "submission")
    result = package(2025, est_dir, soundscape, out, index=2, system_name="Tiny S5 system",
                     abbreviation="TinyS5", nparams=4321)
    label = "Nguyen_NTT_task4_2"
    assert result["label"] == label
    assert result["zip"] == os.path.join(out, f"{label}_out.zip")
    assert result["meta"] == os.path.join(out, f"{label}.meta.yaml")
    assert sorted(os.listdir(out)) == sorted([f"{label}_out.zip", f"{label}.meta.yaml"])
    assert (result["n_mixtures"], result["n_estimates"]) == (3, 6)
    assert any("2,290" in w for w in result["warnings"])  # not the full evaluation set

    wav_names = sorted(source_filename(m, lbl) for m, (_, ests) in MIX_2025.items()
                       for _, lbl, _ in ests)
    folder = f"{label}_out/eval_out/"
    with zipfile.ZipFile(result["zip"]) as zf:
        members = zf.namelist()
        assert sorted(members) == sorted([f"{label}_out/", folder]
                                         + [folder + n for n in wav_names])
        for name in wav_names:
            data = zf.read(folder + name)
            info = sf.info(io.BytesIO(data))
            mixture = name.rsplit("_", 1)[0]
            assert (info.samplerate, info.channels, info.frames, info.subtype) == \
                   (SR, 1, MIX_2025[mixture][0], "PCM_16")
            packed, _ = sf.read(io.BytesIO(data), dtype="float32")
            original, _ = sf.read(os.path.join(est_dir, "estimates", name), dtype="float32")
            np.testing.assert_allclose(packed, original, atol=1.0 / 32768 + 1e-7)

    with open(result["meta"]) as f:
        text = f.read()
    meta = yaml.safe_load(text)
    sub = meta["submission"]
    assert sub["label"] == label and sub["name"] == "Tiny S5 system"
    assert sub["abbreviation"] == "TinyS5"
    author = sub["authors"][0]
    assert author["lastname"] == "Nguyen" and author["corresponding"] is True
    assert author["affiliation"]["abbreviation"] == "NTT"
    assert author["firstname"] == PLACEHOLDER and author["email"] == PLACEHOLDER
    assert meta["system"]["description"]["input_sampling_rate"] == SR
    assert meta["system"]["description"]["input_channels"] == 4
    assert meta["system"]["complexity"]["total_parameters"] == 4321
    assert meta["results"]["development_dataset"] == {
        "CA-SDRi": PLACEHOLDER, "label_prediction_accuracy": PLACEHOLDER}


def test_2026_zip_layout_and_eval_results(tmp_path):
    est_dir, soundscape = fake_run(str(tmp_path), 2026, MIX_2026)
    dev = tmp_path / "dev_set_test_results.json"
    dev_data = {"CAPI-SDRi": {"mean": 8.2}, "details": [{"soundscape": "soundscape_0000"}]}
    dev.write_text(json.dumps(dev_data))
    out = str(tmp_path / "submission")
    result = cli.main(["--year", "2026", "--est_dir", est_dir, "--out", out,
                       "--soundscape_dir", soundscape, "--team", "Nguyen_NTT",
                       "--system", "Tiny", "--nparams", "1234", "--dev_results", str(dev)])
    label = "Nguyen_NTT_task4_1"
    assert result["zip"] == os.path.join(out, f"{label}.zip")
    wav_names = sorted(source_filename(m, lbl, slot) for m, (_, ests) in MIX_2026.items()
                       for slot, lbl, _ in ests)
    assert wav_names == ["eval_0000_0_Speech.wav", "eval_0000_2_Speech.wav",
                         "eval_0002_1_Doorbell.wav"]
    with zipfile.ZipFile(result["zip"]) as zf:
        members = zf.namelist()
        assert sorted(members) == sorted(
            [f"{label}/", f"{label}/eval_out/", f"{label}/eval_results.json",
             f"{label}/dev_set_test_results.json"]
            + [f"{label}/eval_out/{n}" for n in wav_names])
        results = json.loads(zf.read(f"{label}/eval_results.json"))
        assert json.loads(zf.read(f"{label}/dev_set_test_results.json")) == dev_data
        for name in wav_names:
            info = sf.info(io.BytesIO(zf.read(f"{label}/eval_out/{name}")))
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")

    assert set(results) == {"nparams", "probabilities", "config"}
    assert type(results["nparams"]) is int and results["nparams"] == 1234
    assert isinstance(results["config"], dict) and results["config"]["label_mode"] == "estimated"
    assert [e["soundscape"] for e in results["probabilities"]] == sorted(MIX_2026)
    listed = []
    for entry in results["probabilities"]:
        assert set(entry) == {"soundscape", "estimate"}
        assert isinstance(entry["soundscape"], str) and isinstance(entry["estimate"], list)
        for est in entry["estimate"]:
            assert set(est) == {"filename", "label", "probability"}
            assert isinstance(est["filename"], str) and isinstance(est["label"], str)
            assert type(est["probability"]) is float and 0 <= est["probability"] <= 1
            assert est["filename"].startswith(entry["soundscape"] + "_")
            listed.append(est["filename"])
    assert sorted(listed) == wav_names  # the official check: JSON names == wav files
    assert entry_of(results, "eval_0001")["estimate"] == []  # explicitly empty
    assert [(e["label"], e["probability"]) for e in entry_of(results, "eval_0000")["estimate"]] \
        == [("Speech", 0.9), ("Speech", 0.7)]

    meta = yaml.safe_load(open(result["meta"]))
    assert meta["submission"]["label"] == label
    assert meta["system"]["complexity"]["total_parameters"] == 1234
    assert set(meta["results"]["development_dataset"]) == {
        "CAPI-SDRi", "accuracy_mixture", "accuracy_source"}


def test_2026_nparams_counted_from_the_stage4_experiments(tmp_path):
    from s5lib.models.factory import build_separator, build_tagger
    est_dir, soundscape = fake_run(str(tmp_path), 2026, MIX_2026)
    exps = {}
    for key, builder, model_cfg in [
            ("tagger_exp", build_tagger,
             {"type": "m2d_2026", "m2d": {"embed_dim": 32, "depth": 1, "num_heads": 2}}),
            ("separator_exp", build_separator,
             {"type": "resunetk", "channels": [4, 4, 8, 8, 8, 8], "bottleneck_channels": 8,
              "condition_size": 16, "n_fft": 256, "hop_length": 128})]:
        exp = tmp_path / key
        exp.mkdir()
        (exp / "config.yaml").write_text(yaml.safe_dump({"model": model_cfg}))
        model = builder(model_cfg)
        torch.save({"model": model.state_dict()}, exp / "checkpoint_best.pt")
        exps[key] = (str(exp), sum(p.numel() for p in model.parameters()))
    infer_cfg = {"tagger_exp": exps["tagger_exp"][0], "separator_exp": exps["separator_exp"][0],
                 "label_modes": ["estimated"]}
    (tmp_path / "infer" / "config.yaml").write_text(yaml.safe_dump(infer_cfg))
    out = str(tmp_path / "submission")
    result = cli.main(["--year", "2026", "--est_dir", est_dir, "--out", out,
                       "--soundscape_dir", soundscape, "--team", "Nguyen_NTT"])
    with zipfile.ZipFile(result["zip"]) as zf:
        results = json.loads(zf.read("Nguyen_NTT_task4_1/eval_results.json"))
    expected = exps["tagger_exp"][1] + exps["separator_exp"][1]
    assert results["nparams"] == expected
    assert results["config"]["infer"]["separator_exp"] == exps["separator_exp"][0]


def test_2026_without_nparams_or_stage4_config_is_refused(tmp_path):
    est_dir, soundscape = fake_run(str(tmp_path), 2026, MIX_2026)
    with pytest.raises(RecipeError, match="--nparams"):
        cli.main(["--year", "2026", "--est_dir", est_dir, "--out", str(tmp_path / "o"),
                  "--soundscape_dir", soundscape, "--team", "Nguyen_NTT"])
    assert not os.path.exists(tmp_path / "o")
    # a stage-4 config whose experiments are gone: the error says which file and what to do
    (tmp_path / "infer" / "config.yaml").write_text(yaml.safe_dump(
        {"tagger_exp": str(tmp_path / "gone"), "separator_exp": str(tmp_path / "gone")}))
    with pytest.raises(RecipeError, match=r"config\.yaml.*pass --nparams"):
        cli.main(["--year", "2026", "--est_dir", est_dir, "--out", str(tmp_path / "o"),
                  "--soundscape_dir", soundscape, "--team", "Nguyen_NTT"])


def test_dev_summary_fills_the_meta_results(tmp_path):
    summary = {"year": 2026, "label_mode": "estimated", "anchor": None,
               "metrics": {"CAPI-SDRi": 8.12345, "accuracy_mixture": 57.1,
                           "accuracy_source": 67.25}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    est_dir, soundscape = fake_run(str(tmp_path), 2026, MIX_2026)
    result = package(2026, est_dir, soundscape, str(tmp_path / "out"), dev_summary=str(path))
    meta = yaml.safe_load(open(result["meta"]))
    assert meta["results"]["development_dataset"] == {
        "CAPI-SDRi": 8.123, "accuracy_mixture": 57.1, "accuracy_source": 67.25}
    for bad, problem in [(dict(summary, label_mode="oracle"), "label_mode 'oracle'"),
                         (dict(summary, year=2025), "scores year 2025"),
                         ({"year": 2026}, "no 'metrics'")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(SubmissionError, match=problem):
            package(2026, est_dir, soundscape, str(tmp_path / "out2"), dev_summary=str(path))


def test_meta_yaml_is_valid_yaml_with_awkward_names():
    text = meta_yaml_text("Nguyen_NTT_task4_1", 2025, system_name='ResUNetK: "big" #1',
                          abbreviation="R#K")
    meta = yaml.safe_load(text)
    assert meta["submission"]["name"] == 'ResUNetK: "big" #1'
    assert meta["submission"]["abbreviation"] == "R#K"
    assert meta["system"]["complexity"]["total_parameters"] == PLACEHOLDER
    with pytest.raises(SubmissionError, match="longer than 10"):
        meta_yaml_text("Nguyen_NTT_task4_1", 2025, abbreviation="ElevenChars")


def test_float_subtype_keeps_samples_and_allows_peaks_above_one(tmp_path):
    est_dir, soundscape = fake_run(str(tmp_path), 2025, MIX_2025)
    path = os.path.join(est_dir, "estimates", "eval_0001_Cough.wav")
    loud = np.linspace(-1.5, 1.5, SHORT, dtype=np.float32)
    write_audio(path, loud, SR)
    with pytest.raises(SubmissionError, match=r"eval_0001_Cough\.wav: peak 1\.500 exceeds 1\.0"):
        package(2025, est_dir, soundscape, str(tmp_path / "pcm"))
    assert not os.path.exists(tmp_path / "pcm" / "Nguyen_NTT_task4_1_out.zip")
    result = package(2025, est_dir, soundscape, str(tmp_path / "float"), subtype="FLOAT")
    with zipfile.ZipFile(result["zip"]) as zf:
        data = zf.read("Nguyen_NTT_task4_1_out/eval_out/eval_0001_Cough.wav")
    assert sf.info(io.BytesIO(data)).subtype == "FLOAT"
    np.testing.assert_array_equal(sf.read(io.BytesIO(data), dtype="float32")[0], loud)


def test_without_soundscape_dir_the_json_gives_the_mixtures_and_10_s_is_expected(tmp_path):
    full_only = {"eval_0000": MIX_2026["eval_0000"], "eval_0005": (FULL, [])}
    est_dir, _ = fake_run(str(tmp_path / "a"), 2026, full_only)
    checked = check_estimates(est_dir, 2026)
    assert checked.mixtures == ["eval_0000", "eval_0005"]
    assert any("no --soundscape_dir" in w for w in checked.warnings)
    est_dir, _ = fake_run(str(tmp_path / "b"), 2026, MIX_2026)
    with pytest.raises(SubmissionError,
                       match=r"eval_0002_1_Doorbell\.wav: 3200 samples, the mixture 'eval_0002' "
                             r"has 320000"):
        check_estimates(est_dir, 2026)


def test_existing_output_is_kept_and_check_only_writes_nothing(tmp_path):
    est_dir, soundscape = fake_run(str(tmp_path), 2025, MIX_2025)
    out = tmp_path / "out"
    result = package(2025, est_dir, soundscape, str(out), check_only=True)
    assert result["zip"] is None and not out.exists()
    package(2025, est_dir, soundscape, str(out))
    before = os.path.getmtime(out / "Nguyen_NTT_task4_1_out.zip")
    with pytest.raises(SubmissionError, match=r"Nguyen_NTT_task4_1_out\.zip: exists"):
        package(2025, est_dir, soundscape, str(out))
    assert os.path.getmtime(out / "Nguyen_NTT_task4_1_out.zip") == before
    package(2025, est_dir, soundscape, str(out), overwrite=True)


# ----------------------------------------------------------------------------- refused input

def _rewrite(path, data, sr=SR):
    os.unlink(path)
    sf.write(path, data, sr, subtype="FLOAT")


def _edit_json(est_dir, change):
    data = read_results(est_dir)
    change(data)
    write_results(est_dir, data)


def _est(est_dir, mixture, i=0):
    return lambda data: entry_of(data, mixture)["estimate"][i]


def bad_2025(case, est_dir, soundscape):
    wav_dir = os.path.join(est_dir, "estimates")
    cough = os.path.join(wav_dir, "eval_0001_Cough.wav")
    if case == "no_estimate":
        os.unlink(cough)
        _edit_json(est_dir, lambda d: entry_of(d, "eval_0001").update(estimate=[]))
    elif case == "stereo":
        _rewrite(cough, np.zeros((SHORT, 2), np.float32))
    elif case == "rate":
        _rewrite(cough, np.zeros(SHORT, np.float32), sr=16000)
    elif case == "length":
        _rewrite(cough, np.zeros(SHORT - 1, np.float32))
    elif case == "nan":
        data = np.zeros(SHORT, np.float32)
        data[5] = np.nan
        _rewrite(cough, data)
    elif case == "unreadable":
        with open(cough, "wb") as f:
            f.write(b"RIFF not audio")
    elif case in ("unknown_label", "silence", "unknown_mixture"):
        name = {"unknown_label": "eval_0001_Dog.wav", "silence": "eval_0001_silence.wav",
                "unknown_mixture": "other_0001_Speech.wav"}[case]
        write_audio(os.path.join(wav_dir, name), np.zeros(SHORT), SR)
    elif case == "slot_name":
        os.rename(cough, os.path.join(wav_dir, "eval_0001_0_Cough.wav"))
        _edit_json(est_dir, lambda d: _est(est_dir, "eval_0001")(d).update(
            filename="eval_0001_0_Cough.wav"))
    elif case == "stray_file":
        with open(os.path.join(wav_dir, "notes.txt"), "w") as f:
            f.write("x")
    elif case == "stray_folder":
        os.mkdir(os.path.join(wav_dir, "old_run"))
    elif case == "hidden_file":
        with open(os.path.join(wav_dir, ".DS_Store"), "w") as f:
            f.write("x")
    elif case.startswith("probability_"):
        value = {"probability_high": 1.5, "probability_negative": -0.1,
                 "probability_string": "0.7", "probability_nan": float("nan"),
                 "probability_bool": True}[case]
        _edit_json(est_dir, lambda d: _est(est_dir, "eval_0001")(d).update(probability=value))
    elif case == "not_listed":
        write_audio(os.path.join(wav_dir, "eval_0001_Speech.wav"), np.zeros(SHORT), SR)
    elif case == "listed_missing":
        _edit_json(est_dir, lambda d: entry_of(d, "eval_0001")["estimate"].append(
            {"filename": "eval_0001_Speech.wav", "label": "Speech", "probability": 0.5}))
    elif case == "label_mismatch":
        _edit_json(est_dir, lambda d: _est(est_dir, "eval_0001")(d).update(label="Speech"))
    elif case == "wrong_soundscape":
        def move(d):
            est = entry_of(d, "eval_0001")["estimate"].pop()
            entry_of(d, "eval_0010")["estimate"].append(est)
        _edit_json(est_dir, move)
    elif case == "oracle":
        _edit_json(est_dir, lambda d: d.update(label_mode="oracle"))
    elif case == "bad_json":
        with open(os.path.join(est_dir, "eval_results.json"), "w") as f:
            f.write("{")
    elif case == "bad_structure":
        write_results(est_dir, {"probabilities": {"eval_0001": 0.5}})
    elif case == "mixture_rate":
        sf.write(os.path.join(soundscape, "eval_0001.wav"), np.zeros((SHORT, 4)), 16000)
    else:
        raise AssertionError(case)


CASES_2025 = {
    "no_estimate": r"eval_0001: no estimate in .*at least one",
    "stereo": r"eval_0001_Cough\.wav: has 2 channels, estimates must be mono",
    "rate": r"eval_0001_Cough\.wav: sample rate is 16000 Hz, expected 32000 Hz",
    "length": r"eval_0001_Cough\.wav: 3199 samples, the mixture 'eval_0001' has 3200",
    "nan": r"eval_0001_Cough\.wav: contains NaN or infinite samples",
    "unreadable": r"eval_0001_Cough\.wav: unreadable audio file",
    "unknown_label": r"eval_0001_Dog\.wav: bad estimate name: unknown label 'Dog'",
    "silence": r"eval_0001_silence\.wav: bad estimate name: unknown label 'silence'",
    "unknown_mixture": r"other_0001_Speech\.wav: bad estimate name: does not start with",
    "slot_name": r"eval_0001_0_Cough\.wav: 2025 names carry no slot",
    "stray_file": r"notes\.txt: not a \.wav file \(stray file\)",
    "stray_folder": r"old_run: sub-folder in the estimate folder",
    "hidden_file": r"\.DS_Store: hidden file",
    "probability_high": r"eval_results\.json: probability of eval_0001_Cough\.wav is 1\.5",
    "probability_negative": r"eval_results\.json: probability of eval_0001_Cough\.wav is -0\.1",
    "probability_string": r"eval_results\.json: probability of eval_0001_Cough\.wav is '0\.7'",
    "probability_nan": r"eval_results\.json: probability of eval_0001_Cough\.wav is nan",
    "probability_bool": r"eval_results\.json: probability of eval_0001_Cough\.wav is True",
    "not_listed": r"eval_0001_Speech\.wav: not listed in .*eval_results\.json",
    "listed_missing": r"eval_results\.json: lists eval_0001_Speech\.wav, which is not in",
    "label_mismatch": r"eval_0001_Cough\.wav has label 'Speech' but its name says 'Cough'",
    "wrong_soundscape": r"eval_0001_Cough\.wav is listed under soundscape 'eval_0010'",
    "oracle": r"eval_results\.json: label_mode is 'oracle'",
    "bad_json": r"eval_results\.json: not valid JSON",
    "bad_structure": r"eval_results\.json: expected an object with a 'probabilities' list",
    "mixture_rate": r"eval_0001\.wav: mixture sample rate is 16000 Hz",
}


@pytest.mark.parametrize("case", sorted(CASES_2025))
def test_2025_bad_input_is_refused_naming_the_file(tmp_path, case):
    est_dir, soundscape = fake_run(str(tmp_path), 2025, MIX_2025)
    bad_2025(case, est_dir, soundscape)
    out = tmp_path / "out"
    with pytest.raises(SubmissionError, match=CASES_2025[case]):
        package(2025, est_dir, soundscape, str(out))
    assert not out.exists() or os.listdir(out) == []  # nothing half-written


def bad_2026(case, est_dir):
    wav_dir = os.path.join(est_dir, "estimates")
    if case == "missing_entry":
        _edit_json(est_dir, lambda d: d["probabilities"].remove(entry_of(d, "eval_0001")))
    elif case == "slot_twice":
        write_audio(os.path.join(wav_dir, "eval_0002_1_Cough.wav"), np.zeros(SHORT), SR)
        _edit_json(est_dir, lambda d: entry_of(d, "eval_0002")["estimate"].append(
            {"filename": "eval_0002_1_Cough.wav", "label": "Cough", "probability": 0.5}))
    elif case == "no_json":
        os.unlink(os.path.join(est_dir, "eval_results.json"))
    elif case == "listed_twice":
        _edit_json(est_dir, lambda d: entry_of(d, "eval_0002")["estimate"].append(
            dict(entry_of(d, "eval_0002")["estimate"][0])))
    elif case == "soundscape_twice":
        _edit_json(est_dir, lambda d: d["probabilities"].append(
            {"soundscape": "eval_0001", "estimate": []}))
    elif case == "unknown_soundscape":
        _edit_json(est_dir, lambda d: d["probabilities"].append(
            {"soundscape": "eval_9999", "estimate": []}))
    elif case == "silence_slot":
        write_audio(os.path.join(wav_dir, "eval_0001_2_silence.wav"), np.zeros(SHORT), SR)
    else:
        raise AssertionError(case)


CASES_2026 = {
    "missing_entry": r"eval_results\.json: mixture 'eval_0001' has no entry; a mixture "
                     r"without estimates must be listed with an empty 'estimate' list",
    "slot_twice": r"slot 1 of mixture 'eval_0002' is used more than once "
                  r"\(eval_0002_1_Cough\.wav, eval_0002_1_Doorbell\.wav\)",
    "no_json": r"eval_results\.json: missing",
    "listed_twice": r"eval_results\.json: eval_0002_1_Doorbell\.wav is listed twice",
    "soundscape_twice": r"eval_results\.json: soundscape 'eval_0001' is listed twice",
    "unknown_soundscape": r"eval_results\.json: soundscape 'eval_9999' is not a mixture",
    "silence_slot": r"eval_0001_2_silence\.wav: bad estimate name: unknown label 'silence'",
}


@pytest.mark.parametrize("case", sorted(CASES_2026))
def test_2026_bad_input_is_refused_naming_the_file(tmp_path, case):
    est_dir, soundscape = fake_run(str(tmp_path), 2026, MIX_2026)
    bad_2026(case, est_dir)
    out = tmp_path / "out"
    with pytest.raises(SubmissionError, match=CASES_2026[case]):
        package(2026, est_dir, soundscape, str(out))
    assert not out.exists() or os.listdir(out) == []


def test_all_problems_are_reported_together(tmp_path):
    est_dir, soundscape = fake_run(str(tmp_path), 2025, MIX_2025)
    bad_2025("stray_file", est_dir, soundscape)
    bad_2025("length", est_dir, soundscape)
    with pytest.raises(SubmissionError) as err:
        package(2025, est_dir, soundscape, str(tmp_path / "out"))
    assert len(err.value.problems) == 2
    assert "2 problem(s)" in str(err.value)


def test_missing_folders_and_bad_options(tmp_path):
    with pytest.raises(SubmissionError, match="estimate folder does not exist"):
        check_estimates(str(tmp_path / "nope"), 2025)
    (tmp_path / "mode").mkdir()
    with pytest.raises(SubmissionError, match=r"mode/estimates: no estimates/ folder"):
        check_estimates(str(tmp_path / "mode"), 2025)
    est_dir, soundscape = fake_run(str(tmp_path), 2025, MIX_2025)
    with pytest.raises(SubmissionError, match="soundscape folder does not exist"):
        check_estimates(est_dir, 2025, str(tmp_path / "no_soundscape"))
    with pytest.raises(SubmissionError, match="year must be one of"):
        check_estimates(est_dir, 2024)
    with pytest.raises(SubmissionError, match="subtype must be one of"):
        package(2025, est_dir, soundscape, str(tmp_path / "o"), subtype="MP3")
    with pytest.raises(SubmissionError, match="belongs to the 2026 package only"):
        package(2025, est_dir, soundscape, str(tmp_path / "o"), dev_results="x.json")
    with pytest.raises(SubmissionError, match="2026 needs nparams"):
        package(2026, est_dir, soundscape, str(tmp_path / "o"), nparams=None)
    bad = tmp_path / "dev.json"
    bad.write_text(json.dumps({"details": []}))
    with pytest.raises(SubmissionError, match=r"dev\.json: not a dev_set_test_results\.json"):
        package(2026, est_dir, soundscape, str(tmp_path / "o"), dev_results=str(bad))
    with pytest.raises(RecipeError, match="--team|--est_dir|--out"):
        cli.main(["--year", "2025", "--est_dir", est_dir])


def test_cli_prints_one_clean_error_line(tmp_path):
    est_dir, soundscape = fake_run(str(tmp_path), 2025, MIX_2025)
    bad_2025("no_estimate", est_dir, soundscape)
    proc = subprocess.run(
        [sys.executable, "-m", "s5lib.bin.package_submission", "--year", "2025",
         "--est_dir", est_dir, "--out", str(tmp_path / "out"), "--soundscape_dir", soundscape,
         "--team", "Nguyen_NTT"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.startswith("ERROR: cannot package")
    assert "eval_0001: no estimate" in proc.stderr and "Traceback" not in proc.stderr
