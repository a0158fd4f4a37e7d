"""Tests of the DCASE dev_set layout verifier (s5lib.data.layout) and its CLI."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import soundfile as sf

from s5lib import constants
from s5lib.bin import verify_data
from s5lib.data.layout import DataLayoutError, check_dev_set, verify_dev_set

SR = constants.SAMPLE_RATE


def write_wav(path, channels=1, sample_rate=SR, frames=64):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = np.zeros((frames, channels), dtype=np.float32)
    data[0] = 0.1
    sf.write(path, data, sample_rate, subtype="PCM_16")


def write_sofa(path, receivers=4, positions=2, with_positions=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        f["Data.IR"] = np.zeros((positions, receivers, 16), dtype=np.float64)
        if with_positions:
            f["SourcePosition"] = np.ones((positions, 3))
        f["Data.SamplingRate"] = np.array([float(SR)])


def make_dev_set(root, year=2025):
    """A minimal dev_set tree that passes every check."""
    for split in ("train", "valid"):
        for label in constants.CLASSES:
            write_wav(os.path.join(root, "sound_event", split, label, f"{label}_{split}.wav"))
        write_wav(os.path.join(root, "sound_event", split, "Speech", "speaker1", "nested.wav"))
        write_wav(os.path.join(root, "interference", split, "Rain", "rain.wav"))
        write_wav(os.path.join(root, "noise", split, "ambient.wav"), channels=4)
        write_sofa(os.path.join(root, "room_ir", split, f"room_{split}.sofa"))
    meta = {"config": {}, "room": "room_valid.sofa",
            "fg_events": [{"label": "Speech", "source_file": "sound_event/valid/Speech/Speech_valid.wav"}],
            "int_events": [], "bg_events": [{"label": None, "source_file": "noise/valid/ambient.wav"}]}
    os.makedirs(os.path.join(root, "metadata", "valid"))
    with open(os.path.join(root, "metadata", "valid", "soundscape_0000.json"), "w") as f:
        json.dump(meta, f)
    with open(os.path.join(root, "metadata", "valid.json"), "w") as f:
        json.dump([{"metadata_path": "valid/soundscape_0000.json",
                    "ref_event": ["Speech", "silence", "silence"]}], f)
    test_dir = os.path.join(root, "test" if year == 2025 else os.path.join("synthesized", "test"))
    write_wav(os.path.join(test_dir, "soundscape", "soundscape_0000.wav"), channels=4)
    oracle = "soundscape_0000_Speech.wav" if year == 2025 else "soundscape_0000_0_Speech.wav"
    write_wav(os.path.join(test_dir, "oracle_target", oracle))
    return str(root)


@pytest.fixture
def dev_set(tmp_path):
    return make_dev_set(tmp_path / "dev_set")


@pytest.mark.parametrize("year", [2025, 2026])
def test_complete_tree_is_ok(tmp_path, year):
    root = make_dev_set(tmp_path / "dev_set", year)
    report = verify_dev_set(root, year)
    assert report.ok, report.format()
    assert report.counts["sound_event/train"] == "19 wav in 18 classes"  # nested folder counted
    assert "room_ir/valid" in report.counts and not report.warnings
    assert check_dev_set(root, year).ok
    assert ": OK" in report.format()


def test_missing_class_folder_is_named(dev_set):
    shutil.rmtree(os.path.join(dev_set, "sound_event", "train", "Blender"))
    shutil.rmtree(os.path.join(dev_set, "sound_event", "train", "Cough"))
    report = verify_dev_set(dev_set, check_audio=False)
    assert not report.ok
    message = [p for p in report.problems if "class folder" in p]
    assert len(message) == 1
    assert "sound_event/train" in message[0] and "Blender" in message[0] and "Cough" in message[0]
    assert "Speech" not in message[0]
    with pytest.raises(DataLayoutError, match="Blender"):
        check_dev_set(dev_set, check_audio=False)


def test_missing_top_folders_and_empty_class_folder(dev_set):
    shutil.rmtree(os.path.join(dev_set, "noise", "valid"))
    os.unlink(os.path.join(dev_set, "sound_event", "valid", "Pour", "Pour_valid.wav"))
    report = verify_dev_set(dev_set)
    text = report.format()
    assert "noise/valid/ is missing" in text
    assert "sound_event/valid/Pour/ holds no .wav files" in text


def test_wrong_sample_rate_and_channel_count_are_reported_per_file(dev_set):
    bad_rate = os.path.join(dev_set, "sound_event", "valid", "Dishes", "Dishes_valid.wav")
    write_wav(bad_rate, sample_rate=44100)
    write_wav(os.path.join(dev_set, "noise", "train", "ambient.wav"), channels=1)
    write_wav(os.path.join(dev_set, "test", "soundscape", "soundscape_0000.wav"), channels=2)
    with open(os.path.join(dev_set, "interference", "train", "Rain", "broken.wav"), "wb") as f:
        f.write(b"not a wav file")
    report = verify_dev_set(dev_set)
    text = report.format()
    assert "sound_event/valid/Dishes/Dishes_valid.wav: sample rate is 44100 Hz, expected 32000 Hz" in text
    assert "noise/train/ambient.wav: has 1 channel(s), expected 4 channels" in text
    assert "test/soundscape/soundscape_0000.wav: has 2 channel(s), expected 4 channels" in text
    assert "interference/train/Rain/broken.wav: unreadable audio file" in text
    assert len(report.problems) == 4
    assert verify_dev_set(dev_set, check_audio=False).ok  # headers are only read with check_audio


def test_unreadable_and_malformed_sofa_files(dev_set):
    with open(os.path.join(dev_set, "room_ir", "train", "room_train.sofa"), "wb") as f:
        f.write(b"garbage")
    write_sofa(os.path.join(dev_set, "room_ir", "valid", "stereo.sofa"), receivers=2)
    write_sofa(os.path.join(dev_set, "room_ir", "valid", "nopos.sofa"), with_positions=False)
    report = verify_dev_set(dev_set, check_audio=False)
    text = report.format()
    assert "room_ir/train/room_train.sofa: not a readable SOFA" in text
    assert "room_ir/valid/stereo.sofa: Data.IR has 2 receivers, expected 4" in text
    assert "room_ir/valid/nopos.sofa: no SourcePosition" in text
    assert len(report.problems) == 3


def test_metadata_and_test_set_problems(dev_set):
    with open(os.path.join(dev_set, "metadata", "valid.json")) as f:
        entries = json.load(f)
    entries.append({"metadata_path": "valid/soundscape_0001.json", "ref_event": ["Cough"]})
    with open(os.path.join(dev_set, "metadata", "valid.json"), "w") as f:
        json.dump(entries, f)
    write_wav(os.path.join(dev_set, "test", "oracle_target", "soundscape_0000_Guitar.wav"))
    write_wav(os.path.join(dev_set, "test", "oracle_target", "soundscape_0009_Cough.wav"))
    write_wav(os.path.join(dev_set, "test", "soundscape", "soundscape_0001.wav"), channels=4)
    report = verify_dev_set(dev_set, check_audio=False)
    text = report.format()
    assert "metadata/valid/soundscape_0001.json (entry 1 of metadata/valid.json) is missing" in text
    assert "'Guitar' is not one of the 18 target classes" in text
    assert "no soundscape soundscape_0009.wav" in text
    assert "test/soundscape/soundscape_0001.wav has no oracle target" in text


def test_wrong_year_points_at_the_other_test_folder(dev_set):
    report = verify_dev_set(dev_set, year=2026, check_audio=False)
    assert not report.ok
    assert "synthesized/test/ is missing (found test/ instead" in report.format()
    with pytest.raises(ValueError, match="year"):
        verify_dev_set(dev_set, year=2024)


def test_unknown_metadata_sources_are_warnings(dev_set):
    path = os.path.join(dev_set, "metadata", "valid", "soundscape_0000.json")
    with open(path) as f:
        meta = json.load(f)
    meta["fg_events"][0]["source_file"] = "elsewhere/Unknown.wav"
    with open(path, "w") as f:
        json.dump(meta, f)
    report = verify_dev_set(dev_set, check_audio=False)
    assert report.ok
    assert any("elsewhere/Unknown.wav" in w for w in report.warnings)


def test_report_caps_each_kind(dev_set):
    for i in range(25):
        write_wav(os.path.join(dev_set, "sound_event", "train", "Typing", f"bad_{i:02d}.wav"),
                  sample_rate=16000)
    report = verify_dev_set(dev_set)
    assert len(report.problems) == 25
    text = report.format()
    assert text.count("expected 32000 Hz") == 20
    assert "... and 5 more" in text


def test_missing_root(tmp_path):
    report = verify_dev_set(tmp_path / "nowhere")
    assert not report.ok and "does not exist" in report.problems[0]


def test_cli_exit_status_and_report(dev_set, capsys):
    assert verify_data.main(["--db_root", dev_set, "--year", "2025"]) == 0
    assert ": OK" in capsys.readouterr().out
    os.unlink(os.path.join(dev_set, "metadata", "valid.json"))
    assert verify_data.main(["--db_root", dev_set, "--no_audio"]) == 1
    assert "metadata/valid.json is missing" in capsys.readouterr().out
