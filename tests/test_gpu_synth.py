"""Device-side batched synthesis matches the CPU synthesizer (run here on CPU)."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from s5lib import constants
from s5lib.data.datasets import OnTheFlyMixtures
from s5lib.data.gpu_synth import (OnTheFlyRawMixtures, bank_ir_length, collate_raw,
                                  fast_fft_length, prepare_raw, raw_to_tensors, render_batch,
                                  synthesize_batch)
from s5lib.data.synth import FoaSynthesizer, SynthConfig, SynthesisError

TOL = 1e-5  # of full scale


def render_on_device(synth, metas, with_wet=True):
    ir_length = bank_ir_length(synth.bank, synth.cfg.sample_rate)
    batch = collate_raw([raw_to_tensors(prepare_raw(synth, m, ir_length)) for m in metas])
    return render_batch(batch, with_wet=with_wet), batch


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def test_fast_fft_length():
    assert fast_fft_length(1) == 1
    assert fast_fft_length(11) == 12
    assert fast_fft_length(320000 + 8000 - 1) == 328050  # 2 * 3^8 * 5^2
    assert fast_fft_length(1025) == 1029  # 3 * 7^3


@pytest.mark.parametrize("year", [2025, 2026])
def test_matches_cpu_synthesizer(bank, year):
    """0..3 targets x 0..2 interferers, several seeds: mixture, references, wet within 1e-5."""
    synth = FoaSynthesizer(bank, SynthConfig(year=year))
    combos = [(t, i) for t in range(4) for i in range(3)]
    metas = [synth.sample_metadata(np.random.default_rng([year, seed]), n_targets=t, n_interferers=i)
             for seed, (t, i) in enumerate(combos)]
    checked_refs = 0
    for start in range(0, len(metas), 4):  # small batches: the test machine is small
        chunk = metas[start:start + 4]
        out, batch = render_on_device(synth, chunk)
        assert out["mixture"].shape == (len(chunk), 4, constants.N_SAMPLES)
        assert out["mixture"].dtype == torch.float32
        for b, meta in enumerate(chunk):
            cpu = synth.render(meta, with_wet=True)
            assert max_abs(out["mixture"][b], cpu.mixture) <= TOL
            n_t = len(cpu.targets)
            assert int(batch["n_targets"][b]) == n_t
            for k, target in enumerate(cpu.targets):
                assert max_abs(out["references"][b, k], target.reference) <= TOL
                assert max_abs(out["wet"][b, k], target.wet) <= TOL
                # not trivially small: the reference carries real signal
                assert float(np.max(np.abs(target.reference))) > 100 * TOL
                # exact zeros before the onset, as on the CPU
                assert torch.all(out["references"][b, k, :target.onset] == 0)
                assert int(batch["onset"][b, k]) == target.onset
                assert int(batch["offset"][b, k]) == target.offset
                np.testing.assert_allclose(batch["position"][b, k].numpy(), target.position, atol=1e-6)
                checked_refs += 1
            assert torch.all(out["references"][b, n_t:] == 0)
            assert torch.all(out["wet"][b, n_t:] == 0)
            assert torch.all(batch["label_index"][b, n_t:] == constants.SILENCE_INDEX)
    assert checked_refs >= 14  # 18 drawn; 2026 may drop a duplicate it cannot place


def test_geometry_peak_and_ref_db_override(bank):
    synth = FoaSynthesizer(bank, SynthConfig(year=2025, peak="geometry", ref_db=-40.0))
    metas = [synth.sample_metadata(np.random.default_rng(s), n_targets=3, n_interferers=2)
             for s in range(2)]
    out, _ = render_on_device(synth, metas, with_wet=False)
    assert "wet" not in out
    for b, meta in enumerate(metas):
        cpu = synth.render(meta, with_wet=False)
        assert max_abs(out["mixture"][b], cpu.mixture) <= TOL
        for k, target in enumerate(cpu.targets):
            assert max_abs(out["references"][b, k], target.reference) <= TOL


def test_batch_without_events(bank):
    """Only background: no FFT at all, the mixture is the scaled background."""
    synth = FoaSynthesizer(bank, SynthConfig(year=2026))
    metas = [synth.sample_metadata(np.random.default_rng(s), n_targets=0, n_interferers=0)
             for s in range(2)]
    out, batch = render_on_device(synth, metas)
    assert batch["raw_sources"].shape[0] == 0 and batch["raw_item"].shape == (0,)
    for b, meta in enumerate(metas):
        assert max_abs(out["mixture"][b], synth.render(meta).mixture) <= TOL
    assert torch.all(out["references"] == 0) and torch.all(out["wet"] == 0)


def test_empty_slots_do_not_travel(bank):
    synth = FoaSynthesizer(bank, SynthConfig(year=2025))
    metas = [synth.sample_metadata(np.random.default_rng(s), n_targets=t, n_interferers=i)
             for s, (t, i) in enumerate([(1, 2), (3, 0), (2, 1)])]
    _, batch = render_on_device(synth, metas)
    assert batch["raw_item"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert batch["raw_slot"].tolist() == [0, 3, 4, 0, 1, 2, 0, 1, 3]
    assert batch["raw_slot_used"].shape == (3, 5)
    assert batch["raw_irs"].shape[:2] == (9, 4)


def test_detects_a_wrong_level(bank):
    """The comparison can fail: a 0.1 dB error in one SNR is well above the tolerance."""
    synth = FoaSynthesizer(bank, SynthConfig(year=2026))
    meta = synth.sample_metadata(np.random.default_rng(7), n_targets=2, n_interferers=1)
    ir_length = bank_ir_length(bank, synth.cfg.sample_rate)
    raw = prepare_raw(synth, meta, ir_length)
    raw["raw_level_db"][0] += 0.1
    out = render_batch(collate_raw([raw_to_tensors(raw)]))
    assert max_abs(out["mixture"][0], synth.render(meta).mixture) > TOL


def test_bad_metadata_gives_clear_errors(bank):
    synth = FoaSynthesizer(bank, SynthConfig(year=2025))
    ir_length = bank_ir_length(bank, synth.cfg.sample_rate)
    meta = synth.sample_metadata(np.random.default_rng(3), n_targets=1, n_interferers=2)
    with pytest.raises(SynthesisError, match="interferers"):
        prepare_raw(synth, meta, ir_length, n_events=4)
    late = dict(meta, fg_events=[dict(meta["fg_events"][0], event_time=9.99)])
    if int(late["fg_events"][0]["event_duration"] * 32000) > 320:
        with pytest.raises(SynthesisError, match="ends after the mixture end"):
            prepare_raw(synth, late, ir_length)
    two_bg = dict(meta, bg_events=meta["bg_events"] * 2)
    with pytest.raises(SynthesisError, match="background"):
        prepare_raw(synth, two_bg, ir_length)
    with pytest.raises(KeyError, match="raw_sources"):
        synthesize_batch({"mixture": torch.zeros(1, 4, 10)})


def test_dataset_matches_cpu_dataset_and_is_worker_independent(bank_root):
    cfg = SynthConfig(year=2026)
    kwargs = dict(epoch_size=4, seed=5, n_activity_frames=50, mixit_pairs=True)
    raw_ds = OnTheFlyRawMixtures(bank_root, "train", cfg, **kwargs)
    cpu_ds = OnTheFlyMixtures(bank_root, "train", cfg, return_wet=True, **kwargs)

    def collect(num_workers):
        loader = DataLoader(raw_ds, batch_size=2, num_workers=num_workers,
                            collate_fn=raw_ds.collate_fn)
        return list(loader)

    serial, parallel = collect(0), collect(2)
    assert len(serial) == len(parallel) == 2
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key

    first = synthesize_batch(serial[0], with_wet=True)
    assert not any(key.startswith("raw_") for key in first)
    expected = torch.utils.data.default_collate([cpu_ds[0], cpu_ds[1]])
    assert first.keys() == expected.keys()
    for key, value in expected.items():
        if key in ("mixture", "references", "wet", "mixture2", "references2", "wet2"):
            assert max_abs(first[key], value) <= TOL, key
        else:
            assert torch.equal(first[key], value), key

    raw_ds.set_epoch(1)
    assert not torch.equal(raw_ds[0]["raw_sources"], serial[0]["raw_sources"][0])


def test_partial_device_render_matches_cpu_rows(bank):
    """keep_channels renders only those rows (the others are never transformed back); they and
    the references match the CPU render of the same channels within 1e-5."""
    synth = FoaSynthesizer(bank, SynthConfig(year=2026))
    metas = [synth.sample_metadata(np.random.default_rng([5, seed]), n_targets=2, n_interferers=1)
             for seed in range(2)]
    ir_length = bank_ir_length(synth.bank, synth.cfg.sample_rate)
    batch = collate_raw([raw_to_tensors(prepare_raw(synth, m, ir_length)) for m in metas])
    out = render_batch(batch, with_wet=True, keep_channels=[2, 1])
    assert out["mixture"].shape == (2, 2, constants.N_SAMPLES) and out["wet"].shape[2] == 2
    for b, meta in enumerate(metas):
        cpu = synth.render(meta, channels=[2, 1])
        assert max_abs(out["mixture"][b], cpu.mixture) <= TOL
        for k, target in enumerate(cpu.targets):
            assert max_abs(out["wet"][b, k], target.wet) <= TOL
            assert max_abs(out["references"][b, k], target.reference) <= TOL
    with pytest.raises(ValueError, match="keep_channels must be distinct FOA channel indices"):
        render_batch(batch, keep_channels=[4])
