"""FOA mixture synthesis: levels, reference window, overlap, 2026 duplicates, replay, seeding."""
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch

from s5lib import constants
from s5lib.audio import AudioError, write_audio
from s5lib.data.datasets import MetadataMixtures, OnTheFlyMixtures, PremixedMixtures
from s5lib.data.synth import FoaSynthesizer, SoundBank, SynthConfig, SynthesisError, angle_between


def synth_for(bank, **kw):
    return FoaSynthesizer(bank, SynthConfig(**kw))


def full_length(bank, ev, room):
    sr = constants.SAMPLE_RATE
    _, raw, _, _ = bank.room_positions(room)
    ir_len = bank.room_ir(room, 0, sr).shape[1]
    return int(ev["event_duration"] * sr) + ir_len - 1


@pytest.mark.parametrize("year", [2025, 2026])
def test_event_power_is_ref_db_plus_snr(bank, year):
    synth = synth_for(bank, year=year, n_targets=(3, 3), n_interferers=(2, 2))
    checked = 0
    for seed in range(6):
        meta = synth.sample_metadata(np.random.default_rng(seed))
        mix = synth.render(meta)
        events = [e for e in meta["fg_events"]] + meta["int_events"]
        for ev, rendered in zip(events, mix.targets + mix.interferers):
            full = full_length(bank, ev, meta["room"])
            if rendered.onset + full > constants.N_SAMPLES:
                continue  # cut at 10 s: the level rule holds before the cut
            power = np.sum(np.square(rendered.wet, dtype=np.float64)) / (4 * full)
            expected = constants.REF_DB[year] + ev["snr"]
            assert abs(10 * math.log10(power) - expected) < 0.1
            checked += 1
    assert checked >= 5
    # background at ref_db
    noise_db = 10 * math.log10(np.mean(np.square(mix.noise, dtype=np.float64)))
    assert abs(noise_db - constants.REF_DB[year]) < 0.1


def test_mixture_is_plain_sum(bank):
    synth = synth_for(bank, n_targets=(2, 2), n_interferers=(1, 1))
    mix = synth.render(synth.sample_metadata(np.random.default_rng(1)))
    total = mix.noise + sum(e.wet for e in mix.targets + mix.interferers)
    np.testing.assert_allclose(mix.mixture, total, atol=1e-7)
    assert mix.mixture.dtype == np.float32 and mix.mixture.shape == (4, constants.N_SAMPLES)


@pytest.mark.parametrize("year,peak,expected_span", [(2025, "signed", (808, 2600)),
                                                     (2026, "abs", (808, 2601))])
def test_reference_window(bank, year, peak, expected_span):
    synth = synth_for(bank, year=year)
    ir0 = np.full(6000, 1e-3, dtype=np.float32)
    ir0[1000] = 0.9  # largest signed value
    ir0[3000] = -0.95  # largest magnitude, negative
    if year == 2026:
        ir0[3000] = 0.2
        ir0[1000] = -0.9
    window = synth._reference_window(ir0, delay=None)
    nz = np.flatnonzero(window)
    assert (nz[0], nz[-1] + 1) == expected_span  # 192 before, 1600 after (2026: inclusive)
    np.testing.assert_array_equal(window[nz], ir0[nz])


def test_reference_window_geometry_peak(bank):
    synth = synth_for(bank, year=2025, peak="geometry")
    ir0 = np.zeros(6000, dtype=np.float32)
    ir0[2000] = 1.0  # a reflection louder than the direct path
    ir0[500] = 0.5
    window = synth._reference_window(ir0 + 1e-4, delay=500.2)
    nz = np.flatnonzero(window)
    assert nz[0] == 500 - 192 and nz[-1] == 500 + 1599


def test_reference_is_direct_path_of_wet_channel0(bank):
    synth = synth_for(bank, n_targets=(1, 1), n_interferers=(0, 0))
    meta = synth.sample_metadata(np.random.default_rng(4))
    mix = synth.render(meta)
    t = mix.targets[0]
    # the reference correlates strongly with the wet W channel, and carries less energy
    w = t.wet[0]
    corr = np.dot(w, t.reference) / np.linalg.norm(w) / np.linalg.norm(t.reference)
    assert corr > 0.5
    assert np.sum(t.reference ** 2) < np.sum(w ** 2) * 1.01
    assert np.all(t.reference[:t.onset] == 0)


def test_overlap_limit(bank):
    synth = synth_for(bank, n_targets=(3, 3), n_interferers=(2, 2), max_event_overlap=2)
    for seed in range(20):
        meta = synth.sample_metadata(np.random.default_rng(seed))
        spans = [(e["event_time"], e["event_time"] + e["event_duration"])
                 for e in meta["fg_events"] + meta["int_events"]]
        for t in np.linspace(0, 10, 2001):
            assert sum(1 for s, e in spans if s <= t < e) <= 2


def test_2025_labels_unique_and_counts(bank):
    synth = synth_for(bank, year=2025)
    counts = set()
    for seed in range(40):
        meta = synth.sample_metadata(np.random.default_rng(seed))
        labels = [e["label"] for e in meta["fg_events"]]
        assert len(labels) == len(set(labels))
        assert all(lbl in constants.CLASSES for lbl in labels)
        counts.add(len(labels))
        assert all(e["role"] == "foreground" for e in meta["int_events"])
    assert counts == {1, 2, 3}


def test_2026_duplicates_angle_and_subfolder(bank):
    synth = synth_for(bank, year=2026, n_targets=(3, 3), dupse_rate=1.0)
    n_dup = 0
    for seed in range(30):
        meta = synth.sample_metadata(np.random.default_rng(seed))
        mix = synth.render(meta, with_wet=False)
        by_class = {}
        for t in mix.targets:
            by_class.setdefault(t.label, []).append(t)
        for label, events in by_class.items():
            if len(events) < 2:
                continue
            n_dup += 1
            for i in range(len(events)):
                for j in range(i + 1, len(events)):
                    assert angle_between(events[i].position, events[j].position) > 60
                    assert events[i].group != events[j].group
    assert n_dup >= 10


def test_2026_zero_target_mixture(bank):
    synth = synth_for(bank, year=2026)
    meta = synth.sample_metadata(np.random.default_rng(0), n_targets=0, n_interferers=1)
    mix = synth.render(meta)
    assert mix.labels == [] and len(mix.interferers) == 1
    assert np.any(mix.mixture != 0)


@pytest.mark.parametrize("year", [2025, 2026])
def test_metadata_round_trip_bit_exact(bank, year, tmp_path):
    synth = synth_for(bank, year=year, n_targets=(2, 3))
    meta = synth.sample_metadata(np.random.default_rng(11))
    first = synth.render(meta)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(meta))
    replay_bank = SoundBank(bank.root, "train", cache_audio=False)
    again = FoaSynthesizer(replay_bank, SynthConfig(year=year)).render(json.loads(path.read_text()))
    assert np.array_equal(first.mixture, again.mixture)
    for a, b in zip(first.targets, again.targets):
        assert np.array_equal(a.reference, b.reference)


@pytest.mark.parametrize("year", [2025, 2026])
def test_partial_render_is_the_full_render_in_part(bank, year):
    """Rendering fewer channels, no references or no wet images changes nothing that is kept."""
    synth = synth_for(bank, year=year, n_targets=(2, 3), n_interferers=(1, 2))
    for seed in range(4):
        meta = synth.sample_metadata(np.random.default_rng([seed, 7]))
        full = synth.render(meta)
        assert full.channels == (0, 1, 2, 3)
        for channels in ([0], [3, 1], [2]):
            part = synth.render(meta, with_wet=True, with_references=False, channels=channels)
            assert part.channels == tuple(channels) and part.mixture.shape[0] == len(channels)
            assert np.array_equal(part.mixture, full.mixture[channels])  # bit for bit
            assert np.array_equal(part.noise, full.noise[channels])
            for a, b in zip(part.targets + part.interferers, full.targets + full.interferers):
                assert a.reference is None and np.array_equal(a.wet, b.wet[channels])
                assert (a.onset, a.offset, a.label) == (b.onset, b.offset, b.label)
        refs = synth.render(meta, with_wet=False, channels=[0])
        for a, b in zip(refs.targets, full.targets):
            assert a.wet is None and np.array_equal(a.reference, b.reference)
    with pytest.raises(SynthesisError, match="channels must be distinct FOA channel indices"):
        synth.render(meta, channels=[0, 4])
    with pytest.raises(SynthesisError, match="channels must be distinct"):
        synth.render(meta, channels=[1, 1])


def test_event_gain_from_spectra_is_the_wet_energy(bank):
    """The level rule's energy from |X|^2 and the cached responses' power spectrum (Parseval)
    equals the energy of the full 4-channel convolution (float64 reference) to ~1e-6, at the
    mixture's FFT length and at the shortest one that holds the convolution."""
    import scipy.fft
    import scipy.signal
    synth = synth_for(bank, n_targets=(3, 3), n_interferers=(2, 2))
    meta = synth.sample_metadata(np.random.default_rng(4))
    room = meta["room"]
    cart, raw, _, _ = bank.room_positions(room)
    sr = constants.SAMPLE_RATE
    for ev in meta["fg_events"] + meta["int_events"]:
        x = synth.dry_source(ev)
        idx = synth._position_index(room, cart, raw, ev["event_position"])
        ir = bank.room_ir(room, idx, sr)
        wet = scipy.signal.fftconvolve(x.astype(np.float64)[None], ir.astype(np.float64), axes=-1)
        power = np.mean(np.square(wet))
        for nfft in (scipy.fft.next_fast_len(x.shape[0] + ir.shape[1] - 1, real=True),
                     scipy.fft.next_fast_len(constants.N_SAMPLES + ir.shape[1] - 1, real=True) + 1):
            _, power_h = bank.room_spectra(room, idx, sr, nfft)
            gain = synth.event_gain(scipy.fft.rfft(x, nfft), x.shape[0], ir.shape[1], power_h, -20.0)
            assert abs(gain ** 2 * power / 10 ** (-20.0 / 10) - 1) < 5e-6


def test_render_equals_direct_convolution(bank):
    """Frequency-domain accumulation at one FFT length per mixture = placing each event's
    float64 time-domain convolution and cutting at the mixture end (an event running past
    the end included), to float32 precision."""
    import scipy.signal
    synth = synth_for(bank, n_targets=(2, 2), n_interferers=(1, 1))
    meta = synth.sample_metadata(np.random.default_rng(3))
    n, sr = constants.N_SAMPLES, constants.SAMPLE_RATE
    meta["fg_events"][0]["event_time"] = 10.0 - 0.3  # its tail and most of its source cut
    mix = synth.render(meta)
    room = meta["room"]
    cart, raw, delays, _ = bank.room_positions(room)
    expected = mix.noise.astype(np.float64)
    for ev, rendered in zip(meta["fg_events"] + meta["int_events"], mix.targets + mix.interferers):
        x = synth.dry_source(ev).astype(np.float64)
        idx = synth._position_index(room, cart, raw, ev["event_position"])
        ir = bank.room_ir(room, idx, sr).astype(np.float64)
        wet = scipy.signal.fftconvolve(x[None], ir, axes=-1)
        gain = math.sqrt(10 ** ((constants.REF_DB[2025] + ev["snr"]) / 10) / np.mean(np.square(wet)))
        onset = int(ev["event_time"] * sr)
        stop = min(onset + wet.shape[1], n)
        placed = np.zeros((4, n))
        placed[:, onset:stop] = gain * wet[:, :stop - onset]
        scale = np.max(np.abs(placed))
        np.testing.assert_allclose(rendered.wet, placed, atol=2e-6 * scale)
        assert np.all(rendered.wet[:, :onset] == 0) and np.all(rendered.wet[:, stop:] == 0)
        expected = expected + placed
        if rendered.reference is not None:
            direct = scipy.signal.fftconvolve(x, synth._reference_window(ir[0], float(delays[idx])))
            ref = np.zeros(n)
            ref[onset:stop] = gain * direct[:stop - onset]
            np.testing.assert_allclose(rendered.reference, ref, atol=2e-6 * np.max(np.abs(ref)))
    np.testing.assert_allclose(mix.mixture, expected, atol=2e-6 * np.max(np.abs(expected)))


def test_spectrum_cache_is_bounded_and_reused(bank_root, monkeypatch):
    """The room-spectrum cache stays within its size (a render with a cache too small for
    one entry still renders the same mixture), and its size comes from the environment."""
    meta = FoaSynthesizer(SoundBank(bank_root, "train"), SynthConfig()).sample_metadata(
        np.random.default_rng(8))
    big = SoundBank(bank_root, "train")
    first = FoaSynthesizer(big, SynthConfig()).render(meta)
    used = big._spectrum_cache_used
    assert used > 0 and len(big._spectrum_cache) >= 2
    again = FoaSynthesizer(big, SynthConfig()).render(meta)  # from the cache
    assert big._spectrum_cache_used == used and np.array_equal(again.mixture, first.mixture)
    monkeypatch.setenv("S5_SPECTRUM_CACHE_MB", "0")
    tiny = SoundBank(bank_root, "train")
    assert tiny._spectrum_cache_limit == 0
    small = FoaSynthesizer(tiny, SynthConfig()).render(meta)
    assert len(tiny._spectrum_cache) == 1 and np.array_equal(small.mixture, first.mixture)
    for a, b in zip(small.targets, first.targets):
        assert np.array_equal(a.reference, b.reference)
    monkeypatch.setenv("S5_SPECTRUM_CACHE_MB", "lots")
    with pytest.raises(SynthesisError, match="S5_SPECTRUM_CACHE_MB='lots' is not a number"):
        SoundBank(bank_root, "train")


def test_on_the_fly_is_seeded_per_mixture_not_per_worker(bank_root):
    ds = OnTheFlyMixtures(bank_root, "train", SynthConfig(year=2025), epoch_size=6, seed=5)

    def collect(num_workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=num_workers)
        return torch.cat([b["mixture"] for b in loader])

    a, b = collect(0), collect(2)
    assert torch.equal(a, b)
    ds.set_epoch(1)
    assert not torch.equal(collect(0), a)


def test_item_fields(bank_root):
    ds = OnTheFlyMixtures(bank_root, "train", SynthConfig(year=2026), epoch_size=4, seed=1,
                          return_wet=True, n_activity_frames=250, mixit_pairs=True)
    item = ds[0]
    n = int(item["n_targets"])
    assert item["mixture"].shape == (4, constants.N_SAMPLES)
    assert item["references"].shape == (3, constants.N_SAMPLES)
    assert item["wet"].shape == (3, 4, constants.N_SAMPLES)
    assert item["activity"].shape == (18, 250)
    assert int(item["active"].sum()) == n
    assert torch.all(item["label_index"][n:] == constants.SILENCE_INDEX)
    assert torch.all(item["references"][n:] == 0)
    assert "mixture2" in item and item["mixture2"].shape == (4, constants.N_SAMPLES)
    if n:
        assert torch.allclose(item["doa"][:n].norm(dim=1), torch.ones(n), atol=1e-5)
        assert item["activity"].sum() > 0


def test_prep_data_and_datasets(tmp_path):
    from s5lib.bin.prep_data import main
    out = tmp_path / "data"
    main(["--year", "2026", "--out_dir", str(out), "--size", "tiny", "--n_valid", "3",
          "--n_test", "4", "--nj", "1", "--seed", "2"])
    info = json.loads((out / "dataset.json").read_text())
    assert info["test_dir"].endswith(os.path.join("synthesized", "test"))
    valid = MetadataMixtures(info["valid_list"], info["bank_root"], "valid")
    assert len(valid) == 3 and valid[0]["mixture"].shape == (4, constants.N_SAMPLES)
    test = PremixedMixtures(info["test_dir"], year=2026)
    assert len(test) == 4
    # the written 16-bit mixture matches the replayed metadata within quantisation
    meta = json.loads((tmp_path / "data/dev_set/synthesized/test/metadata/soundscape_0001.json").read_text())
    synth = FoaSynthesizer(SoundBank(info["bank_root"], "valid"), SynthConfig(year=2026))
    replay = synth.render(meta)
    assert torch.allclose(test[1]["mixture"], torch.from_numpy(replay.mixture), atol=2 / 32768)
    assert int(test[1]["n_targets"]) == len(replay.targets)


def test_bad_audio_is_reported(bank_root, tmp_path):
    root = tmp_path / "dev_set"
    shutil.copytree(bank_root, root)
    clip_dir = root / "sound_event" / "train" / "Doorbell"
    bad = clip_dir / "zz_wrong_rate.wav"
    write_audio(str(bad), np.ones(16000, dtype=np.float32) * 0.1, 16000)
    bank = SoundBank(str(root), "train")
    clip = [c for c in bank.targets["Doorbell"] if c.path.endswith("zz_wrong_rate.wav")][0]
    synth = FoaSynthesizer(bank, SynthConfig())
    with pytest.raises(AudioError, match="zz_wrong_rate.wav.*16000"):
        synth._draw_event(np.random.default_rng(0), clip, "foreground", (5, 20), [1, 0, 0], [])
    nan = clip_dir / "zz_nan.wav"
    write_audio(str(bad), np.ones(16000, dtype=np.float32) * 0.1, 32000)
    data = np.ones(32000, dtype=np.float32) * 0.1
    import soundfile as sf
    data[5] = np.nan
    sf.write(str(nan), data, 32000, subtype="FLOAT")
    bank = SoundBank(str(root), "train")
    synth = FoaSynthesizer(bank, SynthConfig())
    meta = synth.sample_metadata(np.random.default_rng(0), n_targets=1)
    meta["fg_events"][0]["source_file"] = os.path.relpath(str(nan), str(root))
    meta["fg_events"][0]["source_time"] = 0.0
    meta["fg_events"][0]["event_duration"] = 0.5
    with pytest.raises(AudioError, match="zz_nan.wav.*NaN"):
        synth.render(meta)
    garbage = clip_dir / "zz_garbage.wav"
    garbage.write_bytes(b"not a wav file at all")
    with pytest.raises(AudioError, match="zz_garbage.wav.*unreadable"):
        SoundBank(str(root), "train")
    garbage.unlink()
    meta["fg_events"][0]["source_file"] = "sound_event/train/Doorbell/missing.wav"
    with pytest.raises(SynthesisError, match="missing.wav.*not found"):
        synth.render(meta)


def test_missing_class_folder_is_reported(bank_root, tmp_path):
    root = tmp_path / "dev_set"
    shutil.copytree(bank_root, root)
    shutil.rmtree(root / "sound_event" / "train" / "Typing")
    with pytest.raises(SynthesisError, match="Typing"):
        SoundBank(str(root), "train")


def test_bench_synth_prints_cold_and_warm_figures(tmp_path, capsys):
    from s5lib.bin import bench_synth
    bench_synth.main(["--n_mix", "2", "--size", "tiny", "--work_dir", str(tmp_path),
                      "--skip_long", "true"])
    lines = capsys.readouterr().out.splitlines()
    for render in ("full render", "4-channel tagger render", "1-channel tagger render",
                   "device-synthesis worker"):
        for state in ("cold", "warm"):
            assert any(f"tiny bank, {render}" in ln and f", {state}" in ln and "mixtures/s" in ln
                       for ln in lines), (render, state)
    caches = [float(ln.split("spectrum cache")[1].split()[0]) for ln in lines if "spectrum cache" in ln]
    assert len(caches) == 4 and caches[0] > 0


def test_bench_synth_spaudsyn_inputs(bank_root, tmp_path):
    """The SpAudSyn comparison of bench_synth: a float32 copy of a room holds the same
    responses, the converted metadata names our clips and the positions our render uses, and a
    wrong --spaudsyn folder is a clear error (SpAudSyn itself is not installed here)."""
    from s5lib.bin import bench_synth
    bank, synth, metadata = bench_synth._metadata(bank_root, 2025, 2, 0)
    meta = metadata[0]
    room = meta["room"]
    copy = str(tmp_path / "rooms" / room)
    bench_synth.copy_sofa(bank.resolve(room), copy, "float32")
    import netCDF4
    with netCDF4.Dataset(bank.resolve(room)) as a, netCDF4.Dataset(copy) as b:
        assert b["Data.IR"].dtype == np.float32 and a["Data.IR"].dtype == np.float64
        np.testing.assert_array_equal(b["Data.IR"][...], a["Data.IR"][...].astype(np.float32))
        assert set(b.variables) == set(a.variables) and b.ncattrs() == a.ncattrs()
    cart, raw, _, _ = bank.room_positions(room)
    converted = bench_synth.spaudsyn_metadata(bank, synth, meta, copy, raw, (raw.shape[0], 4, 100),
                                              constants.SAMPLE_RATE)
    mix = synth.render(meta)
    events = converted["fg_events"] + converted["int_events"]
    assert len(events) == len(mix.targets) + len(mix.interferers)
    for ev, rendered in zip(events, mix.targets + mix.interferers):
        assert os.path.isabs(ev["source_file"]) and os.path.isfile(ev["source_file"])
        idx = int(np.flatnonzero(np.all(raw == np.asarray(ev["event_position"][0]), axis=1))[0])
        np.testing.assert_array_equal(cart[idx], rendered.position)
    assert [e["role"] for e in converted["fg_events"]] == ["foreground"] * len(mix.targets)
    assert converted["room"]["args"]["metadata"]["sofa_path"] == copy
    with pytest.raises(SystemExit, match="spatial_audio_synthesizer.py"):
        bench_synth.main(["--n_mix", "1", "--size", "tiny", "--work_dir", str(tmp_path),
                          "--skip_long", "true", "--spaudsyn", str(tmp_path / "nowhere")])
