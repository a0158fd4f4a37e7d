"""External data merged into the bank (KUBIG's FSD50K interferers and EARS speech): links in a
new tree, the speaker-level split, the groups of same-class duplicates, and every problem listed."""
import os

import numpy as np
import pytest

from s5lib.audio import write_audio
from s5lib.data.external import ExternalDataError, merge_external
from s5lib.data.synth import FoaSynthesizer, SoundBank, SynthConfig


def _wav(path, rate=32000, channels=1, seconds=0.5):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = 0.3 * np.sin(np.arange(int(rate * seconds)) / 7.0).astype(np.float32)
    write_audio(str(path), x if channels == 1 else np.stack([x] * channels), rate)


def test_merge_links_splits_by_speaker_and_keeps_groups(bank_root, tmp_path):
    ears = tmp_path / "ears"
    for speaker in ("p001", "p002", "p090"):
        for n in range(2):
            _wav(ears / "Speech" / speaker / f"utt{n}.wav")
    fsd = tmp_path / "fsd50k_dev"
    _wav(fsd / "ZzExtraClass" / "1.wav")
    _wav(fsd / "loose.wav")
    out = tmp_path / "merged"
    summary = merge_external(bank_root, out, [ears], [fsd], valid_speakers=["p090"])
    assert summary["added"] == {"sound_event/train": 4, "sound_event/valid": 2,
                                "interference/train": 2}
    assert os.path.islink(out / "room_ir") and os.path.islink(
        out / "sound_event" / "train" / "Speech" / "ears_p001" / "utt0.wav")
    train, valid = SoundBank(str(out), "train"), SoundBank(str(out), "valid")
    base = SoundBank(bank_root, "train")
    groups = {c.group for c in train.targets["Speech"]}
    assert {"ears_p001", "ears_p002"} <= groups and "ears_p090" not in groups
    assert "ears_p090" in {c.group for c in valid.targets["Speech"]}
    assert len(train.targets["Speech"]) == len(base.targets["Speech"]) + 4
    assert len(train.targets["Cough"]) == len(base.targets["Cough"])  # base files all kept
    assert "ZzExtraClass" in train.interferers and "fsd50k_dev" in train.interferers
    mix = FoaSynthesizer(train, SynthConfig(year=2026)).synthesize(np.random.default_rng(0))
    assert mix.mixture.shape[0] == 4
    # a re-run replaces the merged tree; the files it pointed to stay
    merge_external(bank_root, out, [ears], [], valid_speakers=["p090"])
    assert not os.path.exists(out / "interference" / "train" / "ZzExtraClass")
    assert os.path.isfile(fsd / "ZzExtraClass" / "1.wav")


def test_every_problem_is_listed_before_anything_is_written(bank_root, tmp_path):
    extra = tmp_path / "extra"
    _wav(extra / "Speech" / "a.wav", rate=16000)
    _wav(extra / "Speech" / "b.wav", channels=2)
    _wav(extra / "Dog" / "c.wav")
    fsd = tmp_path / "fsd"
    _wav(fsd / "FSD50K.eval_audio" / "Bark" / "d.wav")
    out = tmp_path / "merged"
    with pytest.raises(ExternalDataError) as err:
        merge_external(bank_root, out, [extra, tmp_path / "nowhere"], [fsd])
    text = str(err.value)
    assert "16000 Hz" in text and "2 channels" in text and "'Dog'" in text
    assert "eval" in text and "nowhere" in text and "5 problem(s)" in text
    assert not out.exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    ok = tmp_path / "ok"
    _wav(ok / "Speech" / "a.wav")
    with pytest.raises(ExternalDataError, match="refusing"):
        merge_external(bank_root, tmp_path / "mine", [ok], [])
    assert (tmp_path / "mine" / "keep.txt").exists()


def test_prep_data_merges_from_the_command_line(tmp_path):
    import json
    from s5lib.bin import prep_data
    ears = tmp_path / "ears"
    _wav(ears / "Speech" / "p001" / "a.wav")
    _wav(ears / "Speech" / "p090" / "b.wav")
    data = tmp_path / "data"
    prep_data.main(["--year", "2026", "--size", "tiny", "--n_valid", "1", "--n_test", "1", "--nj", "1",
                    "--out_dir", str(data), "--extra_sound_event", str(ears),
                    "--valid_speakers", "p090,p091"])
    info = json.loads((data / "dataset.json").read_text())
    assert info["bank_root"] == str(data / "dev_set_extended")
    assert info["test_dir"].startswith(str(data / "dev_set"))   # the base's test set
    assert (data / "dev_set_extended" / "sound_event" / "valid" / "Speech" / "ears_p090" / "b.wav").is_symlink()
    assert (data / "dev_set_extended" / "sound_event" / "train" / "Speech" / "ears_p001" / "a.wav").is_symlink()
