"""Procedural sounds and the embedded mini soundbank (tiny size)."""
import hashlib
import json
import os

import numpy as np
import pytest
import soundfile as sf

from s5lib.bin import make_soundbank
from s5lib.constants import CLASSES
from s5lib.data import procedural
from s5lib.data.sofa import read_sofa
from s5lib.data.soundbank import MARKER_FILE, build_mini_soundbank

SR = 32000


# -------------------------------------------------------------------------- procedural sounds


@pytest.mark.parametrize("name", CLASSES)
def test_target_generator_is_finite_audible_and_seeded(name):
    generator = procedural.TARGET_GENERATORS[name]
    x = generator(np.random.default_rng(7), SR, 1.3)
    assert x.dtype == np.float32 and x.shape == (int(round(1.3 * SR)),)
    assert np.all(np.isfinite(x))
    assert 0.5 - 1e-6 <= np.max(np.abs(x)) <= 0.9 + 1e-6
    assert np.sqrt(np.mean(x ** 2)) > 5e-3  # not silent
    np.testing.assert_array_equal(x, generator(np.random.default_rng(7), SR, 1.3))
    assert not np.array_equal(x, generator(np.random.default_rng(8), SR, 1.3))
    short = generator(np.random.default_rng(1), SR, 0.5)
    assert short.shape == (SR // 2,) and np.max(np.abs(short)) >= 0.5 - 1e-6


def _features(x):
    """Mean log energy in 16 log-spaced bands (relative to the loudest) + envelope statistics."""
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 1024)[::512]
    power = np.abs(np.fft.rfft(frames * np.hanning(1024), axis=1)) ** 2
    freqs = np.fft.rfftfreq(1024, 1 / SR)
    edges = np.geomspace(50, 16000, 17)
    bands = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(1)
                      for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
    spectrum = np.log10(bands + 1e-10).mean(0)
    envelope = np.log10(power.sum(1) + 1e-10)
    return np.concatenate([(spectrum - spectrum.max()) / 2,
                           [np.std(envelope), np.mean(np.abs(np.diff(envelope)))]])


def test_target_classes_are_distinct():
    """Clips of the same class resemble each other more than clips of other classes:
    a 1-nearest-neighbour rule on crude spectral/temporal features recognises most clips."""
    features, labels = [], []
    for index, name in enumerate(CLASSES):
        for k in range(3):
            clip = procedural.TARGET_GENERATORS[name](np.random.default_rng(100 + k), SR, 2.0)
            features.append(_features(clip))
            labels.append(index)
    features, labels = np.array(features), np.array(labels)
    distances = ((features[:, None] - features[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    accuracy = np.mean(labels[np.argmin(distances, axis=1)] == labels)
    assert accuracy >= 0.75, accuracy
    centroids = {name: np.mean(features[labels == i], axis=0) for i, name in enumerate(CLASSES)}
    assert np.linalg.norm(centroids["Speech"] - centroids["VacuumCleaner"]) > 0.5


def test_identity_shapes_the_voice():
    low = procedural.draw_identity("Speech", np.random.default_rng(0))
    low.update(pitch=100.0, formant_scale=0.9)
    high = dict(low, pitch=230.0, formant_scale=1.15)
    a = procedural.speech(np.random.default_rng(3), SR, 2.0, identity=low)
    b = procedural.speech(np.random.default_rng(3), SR, 2.0, identity=high)
    centroid = [np.sum(np.abs(np.fft.rfft(x)) * np.fft.rfftfreq(len(x), 1 / SR)) /
                np.sum(np.abs(np.fft.rfft(x))) for x in (a, b)]
    assert centroid[1] > centroid[0]
    with pytest.raises(KeyError):
        procedural.draw_identity("Blender", np.random.default_rng(0))


def test_interference_generators():
    assert len(procedural.INTERFERENCE_GENERATORS) >= 8
    assert not set(procedural.INTERFERENCE_GENERATORS) & set(CLASSES)
    for name, generator in procedural.INTERFERENCE_GENERATORS.items():
        x = generator(np.random.default_rng(2), SR, 1.0)
        assert x.shape == (SR,) and np.all(np.isfinite(x)), name
        assert np.sqrt(np.mean(x ** 2)) > 5e-3, name


def test_ambient_noise_is_diffuse_foa():
    noise = procedural.ambient_noise(np.random.default_rng(4), SR, 3.0)
    assert noise.shape == (4, 3 * SR) and noise.dtype == np.float32
    assert np.all(np.isfinite(noise)) and np.max(np.abs(noise)) <= 1.0
    power = np.mean(noise.astype(np.float64) ** 2, axis=1)
    assert np.all(power[1:] < power[0])  # W carries the most energy in a diffuse field
    correlation = np.corrcoef(noise)
    assert np.all(np.abs(correlation[0, 1:]) < 0.9)  # channels are not copies of each other
    assert procedural.ambient_noise(np.random.default_rng(4), SR, 1.0, n_channels=1).shape == (1, SR)
    with pytest.raises(ValueError, match="n_channels"):
        procedural.ambient_noise(np.random.default_rng(4), SR, 1.0, n_channels=5)


# ------------------------------------------------------------------------------ tiny soundbank


def _hashes(root):
    out = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny_bank(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bank") / "dev_set")
    summary = build_mini_soundbank(root, seed=11, size="tiny")
    return root, summary


def test_tiny_bank_layout(tiny_bank):
    root, summary = tiny_bank
    assert not summary["skipped"] and summary["size"] == "tiny"
    assert os.path.isfile(os.path.join(root, "README.txt"))
    assert "SYNTHETIC" in open(os.path.join(root, "README.txt")).read()
    for split in ("train", "valid"):
        for name in CLASSES:
            class_dir = os.path.join(root, "sound_event", split, name)
            wavs = [os.path.join(d, f) for d, _, fs in os.walk(class_dir) for f in fs
                    if f.endswith(".wav")]
            assert len(wavs) >= 2, (split, name)
            info = sf.info(wavs[0])
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
            assert 0.5 <= info.duration <= 5.0
        for name in procedural.INTERFERENCE_GENERATORS:
            files = os.listdir(os.path.join(root, "interference", split, name))
            assert files and all(f.endswith(".wav") for f in files)
        noises = os.listdir(os.path.join(root, "noise", split))
        assert noises
        info = sf.info(os.path.join(root, "noise", split, noises[0]))
        assert (info.samplerate, info.channels) == (SR, 4) and 10 <= info.duration <= 20
        rooms = sorted(os.listdir(os.path.join(root, "room_ir", split)))
        assert rooms and all(r.endswith(".sofa") for r in rooms)
        responses = read_sofa(os.path.join(root, "room_ir", split, rooms[0]))
        assert responses.irs.shape[:2] == (responses.n_positions, 4)
        assert responses.n_positions >= 12 and responses.sample_rate == SR
        assert responses.irs.shape[2] == int(0.25 * SR)
        assert responses.direct_delay is not None
        distances = np.linalg.norm(responses.cartesian, axis=1)
        np.testing.assert_allclose(responses.direct_delay, distances / 343.0 * SR)


def test_tiny_bank_identity_subfolders(tiny_bank):
    root, _ = tiny_bank
    for name, kind in procedural.IDENTITY_FOLDERS.items():
        folders = {}
        for split in ("train", "valid"):
            class_dir = os.path.join(root, "sound_event", split, name)
            entries = sorted(os.listdir(class_dir))
            assert len(entries) >= 2 and all(e.startswith(kind + "_") for e in entries)
            for entry in entries:
                assert os.path.isdir(os.path.join(class_dir, entry))
                assert len(os.listdir(os.path.join(class_dir, entry))) >= 1
            folders[split] = set(entries)
        assert not folders["train"] & folders["valid"]  # different people in train and valid
        train_dir = os.path.join(root, "sound_event", "train", name)
        assert all(len(os.listdir(os.path.join(train_dir, e))) >= 2 for e in folders["train"])


def test_tiny_bank_is_deterministic_and_skips_rebuild(tiny_bank, tmp_path):
    root, summary = tiny_bank
    other = str(tmp_path / "again")
    build_mini_soundbank(other, seed=11, size="tiny")
    first, second = _hashes(root), _hashes(other)
    assert first.keys() == second.keys()
    assert first == second  # byte-identical, the SOFA files included
    different = str(tmp_path / "seed12")
    build_mini_soundbank(different, seed=12, size="tiny")
    third = _hashes(different)
    changed = [k for k in first if k.endswith(".wav") and first[k] != third.get(k)]
    assert len(changed) > 0.9 * sum(k.endswith(".wav") for k in first)

    again = build_mini_soundbank(root, seed=11, size="tiny")
    assert again["skipped"] and again["counts"] == summary["counts"]
    with open(os.path.join(root, MARKER_FILE)) as f:
        assert json.load(f)["settings"]["seed"] == 11
    with pytest.raises(ValueError, match="overwrite"):
        build_mini_soundbank(root, seed=3, size="tiny")


def test_bank_refuses_foreign_data_and_bad_size(tmp_path):
    root = tmp_path / "real_dev_set"
    (root / "sound_event").mkdir(parents=True)
    with pytest.raises(ValueError, match="not made by build_mini_soundbank"):
        build_mini_soundbank(str(root), size="tiny")
    with pytest.raises(ValueError, match="unknown soundbank size"):
        build_mini_soundbank(str(tmp_path / "x"), size="huge")


def test_command_line_reports_summary(tiny_bank, capsys):
    root, _ = tiny_bank
    summary = make_soundbank.main(["--out", root, "--size", "tiny", "--seed", "11"])
    assert summary["skipped"]
    printed = capsys.readouterr().out
    assert "skipped" in printed and "sound_event" in printed and "MB" in printed
