"""S5 measures (SPEC §4) on hand-computed cases: SNR, SI-SDR, CA-SDRi, CAPI-SDRi, accuracies."""
import json
import math

import numpy as np
import pytest
import torch

from s5lib.metrics import (EPS, NamingError, S5Scorer, best_pairing, ca_sdri, capi_sdri,
                           labels_match_multiset, labels_match_set, parse_source_filename,
                           read_probabilities, score_mixture, sdri, si_sdr, snr,
                           source_accuracy, source_filename, source_label_counts)


def db(num, den):
    """The SPEC formula with energies given by hand."""
    return 10 * math.log10((num + EPS) / (den + EPS))


def vec(*values):
    return np.array(values, dtype=np.float32)


# ----------------------------------------------------------------------------- signal level

def test_snr_hand_values_and_no_mean_removal():
    ref = vec(1, 1, 1, 1)
    assert snr(ref + vec(1, 0, 0, 0), ref) == pytest.approx(db(4, 1), abs=1e-9)
    # a constant offset is an error of energy 4 * 0.5² = 1 (no mean removal)
    assert snr(ref + 0.5, ref) == pytest.approx(db(4, 1), abs=1e-9)
    # not scale-invariant: 2·s has error energy 4
    assert snr(2 * ref, ref) == pytest.approx(db(4, 4), abs=1e-9)


def test_perfect_estimate_is_finite():
    ref = vec(1, -2, 3, 0)
    value = snr(ref, ref)
    assert math.isfinite(value)
    assert value == pytest.approx(db(14, 0), abs=1e-9)
    assert math.isfinite(si_sdr(ref, ref))
    silent = np.zeros(4, np.float32)
    assert snr(silent, silent) == pytest.approx(0.0)


def test_snr_batch_shapes_and_torch_agree():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 3, 50)).astype(np.float32)
    est = ref + 0.3 * rng.standard_normal((2, 3, 50)).astype(np.float32)
    values = snr(est, ref)
    assert values.shape == (2, 3)
    assert values[1, 2] == pytest.approx(snr(est[1, 2], ref[1, 2]))
    torch_values = snr(torch.from_numpy(est), torch.from_numpy(ref))
    assert isinstance(torch_values, torch.Tensor) and torch_values.shape == (2, 3)
    np.testing.assert_allclose(torch_values.numpy(), values, atol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        snr(est[0], ref)


def test_snr_torch_is_differentiable():
    ref = torch.tensor([1.0, 2.0, 3.0])
    est = torch.tensor([1.5, 2.0, 2.0], requires_grad=True)
    snr(est, ref).backward()
    assert est.grad is not None and torch.all(torch.isfinite(est.grad))


def test_si_sdr_hand_values():
    ref = vec(1, 1, -1, -1)  # zero mean, energy 4
    orth = vec(1, -1, 0, 0)  # orthogonal to ref, energy 2
    assert si_sdr(ref + orth, ref) == pytest.approx(db(4, 2), abs=1e-6)
    # scale invariance: 3·(s + n) scores the same
    assert si_sdr(3 * (ref + orth), ref) == pytest.approx(db(4, 2), abs=1e-5)
    # a constant offset is orthogonal to a zero-mean ref: removed only with zero_mean=True
    offset = ref + 0.5
    assert si_sdr(offset, ref) == pytest.approx(db(4, 1), abs=1e-6)
    assert si_sdr(offset, ref, zero_mean=True) > 60


def test_sdri_is_snr_difference():
    ref = vec(1, 1, 1, 1)
    est = ref + vec(1, 0, 0, 0)
    mix0 = ref + vec(2, 0, 0, 0)
    assert sdri(est, ref, mix0) == pytest.approx(db(4, 1) - db(4, 4), abs=1e-9)


# ----------------------------------------------------------------------------- CA-SDRi (2025)

def basis(i, scale=2.0, n=6):
    out = np.zeros(n, np.float32)
    out[i] = scale
    return out


def test_ca_sdri_tp_fp_fn_mix():
    ref_a, ref_b = basis(0), basis(1)          # energies 4
    est_a = ref_a + basis(2, 1.0)              # error energy 1
    est_c = basis(3)
    mix0 = ref_a + ref_b                       # SNR(y0, a) = db(4, 4)
    score, details = ca_sdri({"Speech": est_a, "Cough": est_c},
                             {"Speech": ref_a, "Dishes": ref_b}, mix0)
    tp_value = db(4, 1) - db(4, 4)
    # |C ∪ Ĉ| = 3: the FP (Cough) and the FN (Dishes) count 0 and enlarge the denominator
    assert score == pytest.approx(tp_value / 3, abs=1e-9)
    kinds = {d.label: d.kind for d in details}
    assert kinds == {"Speech": "TP", "Cough": "FP", "Dishes": "FN"}
    tp = [d for d in details if d.kind == "TP"][0]
    assert tp.snr == pytest.approx(db(4, 1), abs=1e-9)
    assert all(d.snri == 0 for d in details if d.kind != "TP")


def test_ca_sdri_all_correct_and_empty():
    ref_a = basis(0)
    mix0 = ref_a + basis(1)
    score, _ = ca_sdri({"Speech": ref_a + basis(2, 1.0)}, {"Speech": ref_a}, mix0)
    assert score == pytest.approx(db(4, 1) - db(4, 4), abs=1e-9)
    score, details = ca_sdri({}, {}, mix0)
    assert score is None and details == []


def test_ca_sdri_silence_removed():
    ref_a = basis(0)
    mix0 = ref_a + basis(1)
    junk = basis(4, 5.0)
    with_silence, _ = ca_sdri({"Speech": ref_a + basis(2, 1.0), "silence": junk},
                              {"Speech": ref_a, "silence": np.zeros(6, np.float32)}, mix0)
    without, _ = ca_sdri({"Speech": ref_a + basis(2, 1.0)}, {"Speech": ref_a}, mix0)
    assert with_silence == pytest.approx(without)


# ----------------------------------------------------------------------------- CAPI-SDRi (2026)

def test_capi_duplicates_swapped_estimates_paired_right():
    r0, r1 = basis(0), basis(1)
    mix0 = r0 + r1 + basis(2, 1.0)
    e_for_r1 = r1 + basis(3, 1.0)   # error energy 1 against r1
    e_for_r0 = r0 + basis(4, 0.5)   # error energy 0.25 against r0
    score, details = capi_sdri([("Speech", e_for_r1), ("Speech", e_for_r0)],
                               [("Speech", r0), ("Speech", r1)], mix0)
    # SNR(y0, r0) = SNR(y0, r1) = db(4, 4 + 1)
    expected = ((db(4, 0.25) - db(4, 5)) + (db(4, 1) - db(4, 5))) / 2
    assert score == pytest.approx(expected, abs=1e-9)
    pairs = sorted((d.est_index, d.ref_index) for d in details)
    assert pairs == [(0, 1), (1, 0)]


def test_capi_pairing_by_snr_but_reports_snri():
    # one estimate, two references of its class: pick the reference of larger SNR (r0),
    # even though r1 would give the larger SNRi; report the SNRi and a 0 for the FN
    r0, r1 = basis(0, 2.0, 4), basis(1, 2.0, 4)
    mix0 = vec(2, 0, 1, 0)                     # close to r0: SNR(y0,r0)=db(4,1), (y0,r1)=db(4,9)
    est = vec(1.1, 0.9, 0, 0)                  # err vs r0: 1.62, vs r1: 2.42
    snr0, snr1 = db(4, 0.9 ** 2 * 2), db(4, 1.1 ** 2 * 2)
    assert snr0 > snr1 and snr1 - db(4, 9) > snr0 - db(4, 1)
    score, details = capi_sdri([("Dishes", est)], [("Dishes", r0), ("Dishes", r1)], mix0)
    assert score == pytest.approx((snr0 - db(4, 1) + 0.0) / 2, abs=1e-5)
    tp = [d for d in details if d.kind == "TP"][0]
    fn = [d for d in details if d.kind == "FN"][0]
    assert (tp.est_index, tp.ref_index, fn.ref_index) == (0, 0, 1)


def test_capi_more_estimates_than_references():
    r0 = basis(0)
    mix0 = r0 + basis(1)
    good, bad = r0 + basis(2, 1.0), basis(3)
    score, details = capi_sdri([("Speech", bad), ("Speech", good)], [("Speech", r0)], mix0)
    assert score == pytest.approx((db(4, 1) - db(4, 4)) / 2, abs=1e-9)
    assert [(d.kind, d.est_index) for d in details] == [("TP", 1), ("FP", 0)]


def test_capi_zero_target_mixtures():
    mix0 = basis(0)
    assert capi_sdri([], [], mix0) == (None, [])                      # skipped
    assert capi_sdri([("silence", basis(1))], [("silence", basis(2))], mix0)[0] is None
    score, details = capi_sdri([("Speech", basis(1))], [], mix0)      # false alarm: counted 0
    assert score == 0.0 and [d.kind for d in details] == ["FP"]
    score, details = capi_sdri([], [("Speech", basis(1))], mix0)      # miss: counted 0
    assert score == 0.0 and [d.kind for d in details] == ["FN"]


def test_capi_identical_estimates_finite():
    r0, r1 = basis(0), basis(1, 3.0)
    mix0 = r0 + r1
    score, _ = capi_sdri([("Speech", r0), ("Cough", r1)], [("Speech", r0), ("Cough", r1)], mix0)
    expected = ((db(4, 0) - db(4, 9)) + (db(9, 0) - db(9, 4))) / 2
    assert math.isfinite(score)
    assert score == pytest.approx(expected, rel=1e-9)


def test_capi_equals_ca_without_duplicates():
    rng = np.random.default_rng(1)
    refs = {c: rng.standard_normal(64).astype(np.float32) for c in ("Speech", "Dishes", "Pour")}
    ests = {"Speech": refs["Speech"] + 0.3 * rng.standard_normal(64).astype(np.float32),
            "Pour": refs["Pour"] * 0.5, "Buzzer": rng.standard_normal(64).astype(np.float32)}
    mix0 = sum(refs.values())
    ca, _ = ca_sdri(ests, refs, mix0)
    capi, _ = capi_sdri(list(ests.items()), list(refs.items()), mix0)
    assert capi == pytest.approx(ca, abs=1e-12)


def test_best_pairing_ties_take_first():
    assert best_pairing(np.zeros((2, 2))) == [(0, 0), (1, 1)]
    assert best_pairing(np.array([[1.0, 5.0], [5.0, 1.0]])) == [(1, 0), (0, 1)]


# ----------------------------------------------------------------------------- accuracies

def test_label_accuracies():
    assert labels_match_set(["Speech", "Speech"], ["Speech"])
    assert not labels_match_multiset(["Speech", "Speech"], ["Speech"])
    assert labels_match_multiset(["Cough", "Speech", "silence"], ["Speech", "Cough"])
    assert labels_match_multiset([], ["silence"])             # empty on empty is correct
    assert not labels_match_set(["Speech"], ["Speech", "Cough"])
    assert source_label_counts(["Speech", "Speech", "Pour"], ["Speech", "Cough"]) == (1, 2, 1)
    assert source_label_counts(["silence"], []) == (0, 0, 0)
    assert source_accuracy(3, 1, 0) == 75.0
    assert source_accuracy(0, 0, 0) is None


# ----------------------------------------------------------------------------- accumulator

def test_scorer_2026_summary_by_hand():
    n = 6
    r0, r1 = basis(0, 2.0, n), basis(1, 2.0, n)
    mix0 = r0 + r1
    scorer = S5Scorer(2026)
    m1 = scorer.add("m1", mix0, [("Speech", r0 + basis(2, 1.0, n), 0.9)], [("Speech", r0)])
    scorer.add("m2", mix0, [("Speech", r0, 0.8), ("Cough", r1, 0.3)],
               [("Speech", r0), ("Speech", r1)])
    scorer.add("m3", mix0, [], [])                                   # skipped, label-correct
    scorer.add("m4", mix0, [("Pour", r1, 0.5)], [])                 # false alarm: 0
    s1 = db(4, 1) - db(4, 4)
    s2 = ((db(4, 0) - db(4, 4)) + 0 + 0) / 3                         # TP Speech, FN Speech, FP Cough
    summary = scorer.summary()
    assert m1.score == pytest.approx(s1)
    assert summary["CAPI-SDRi"] == pytest.approx((s1 + s2 + 0.0) / 3)
    assert summary["n_mixtures"] == 4 and summary["n_skipped"] == 1 and summary["n_scored"] == 3
    assert summary["accuracy_mixture"] == pytest.approx(100 * 2 / 4)     # m1, m3
    assert (summary["tp"], summary["fp"], summary["fn"]) == (2, 2, 1)
    assert summary["accuracy_source"] == pytest.approx(100 * 2 / 5)
    assert summary["SDRi_tp"] == pytest.approx((s1 + db(4, 0) - db(4, 4)) / 2)
    per_class = {row["label"]: row for row in scorer.per_class()}
    assert (per_class["Speech"]["n_tp"], per_class["Speech"]["n_fn"]) == (2, 1)
    assert per_class["Cough"]["n_fp"] == 1 and per_class["Pour"]["n_fp"] == 1
    assert per_class["AlarmClock"]["snri_tp"] is None
    rows = scorer.per_mixture_rows()
    assert rows[2]["skipped"] == 1 and rows[2]["score"] == ""
    assert "p=0.900" in rows[0]["sources"]
    sources = scorer.per_source_rows()
    assert {(r["mixture"], r["kind"], r["probability"]) for r in sources} >= {
        ("m2", "FP", 0.3), ("m4", "FP", 0.5)}


def test_scorer_2025_and_input_errors():
    r0 = basis(0)
    mix0 = r0 + basis(1)
    scorer = S5Scorer(2025)
    scorer.add("a", mix0, [("Speech", r0 + basis(2, 1.0))], [("Speech", r0), ("Cough", basis(3))])
    summary = scorer.summary()
    assert summary["CA-SDRi"] == pytest.approx((db(4, 1) - db(4, 4)) / 2)
    assert summary["label_accuracy"] == 0.0 and "accuracy_mixture" not in summary
    with pytest.raises(ValueError, match="added twice"):
        scorer.add("a", mix0, [], [("Speech", r0)])
    with pytest.raises(ValueError, match="distinct classes"):
        scorer.add("b", mix0, [("Speech", r0), ("Speech", r0)], [("Speech", r0)])
    with pytest.raises(ValueError, match="shape"):
        scorer.add("c", mix0, [("Speech", r0[:3])], [("Speech", r0)])
    with pytest.raises(ValueError, match="unknown estimate label"):
        scorer.add("d", mix0, [("speech", r0)], [("Speech", r0)])
    with pytest.raises(ValueError, match="year"):
        S5Scorer(2024)


def test_score_mixture_accepts_torch():
    r0 = basis(0)
    mix0 = r0 + basis(1)
    result = score_mixture(2026, "t", torch.from_numpy(mix0),
                           [("Speech", torch.from_numpy(r0 + basis(2, 1.0)))],
                           [("Speech", torch.from_numpy(r0))])
    assert result.score == pytest.approx(db(4, 1) - db(4, 4), abs=1e-9)


# ----------------------------------------------------------------------------- file names

def test_parse_source_filename():
    ids = {"room_a_mix_1", "room_a_mix_10", "soundscape_0001"}
    p = parse_source_filename("room_a_mix_10_Speech.wav", ids)
    assert (p.mixture, p.slot, p.label) == ("room_a_mix_10", None, "Speech")
    p = parse_source_filename("room_a_mix_1_2_Cough.wav", ids)
    assert (p.mixture, p.slot, p.label) == ("room_a_mix_1", 2, "Cough")
    p = parse_source_filename("soundscape_0001_0_CupboardOpenClose.wav", ids)
    assert (p.mixture, p.slot, p.label) == ("soundscape_0001", 0, "CupboardOpenClose")
    assert parse_source_filename(source_filename("room_a_mix_1", "Pour", 3), ids).slot == 3
    with pytest.raises(NamingError, match="unknown label 'Speach'"):
        parse_source_filename("room_a_mix_1_0_Speach.wav", ids)
    with pytest.raises(NamingError, match="any mixture"):
        parse_source_filename("other_Speech.wav", ids)
    with pytest.raises(NamingError, match="ambiguous"):
        parse_source_filename("m_1_Speech.wav", {"m", "m_1"})
    with pytest.raises(NamingError, match="not a .wav"):
        parse_source_filename("room_a_mix_1_Speech.flac", ids)


def test_read_probabilities(tmp_path):
    official = {"nparams": 1, "probabilities": [
        {"soundscape": "m", "estimate": [{"filename": "m_0_Speech.wav", "label": "Speech",
                                          "probability": 0.75}]}]}
    path = tmp_path / "eval_results.json"
    path.write_text(json.dumps(official))
    assert read_probabilities(str(path)) == {"m_0_Speech.wav": 0.75}
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"m_Speech.wav": 1}))
    assert read_probabilities(str(flat)) == {"m_Speech.wav": 1.0}
    official["probabilities"].append(official["probabilities"][0])
    path.write_text(json.dumps(official))
    with pytest.raises(ValueError, match="more than once"):
        read_probabilities(str(path))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"m_Speech.wav": "high"}))
    with pytest.raises(ValueError, match="not a number"):
        read_probabilities(str(bad))
