"""Losses against values computed by hand from simple signals."""
import math

import pytest
import torch

from s5lib.losses import (PITWrapper, class_aware_pit, class_aware_pit_neg_snr, get_loss,
                          l1_wave, masked_multislot_neg_snr, mixit, neg_si_sdr, neg_snr, pairwise,
                          reorder_sources, si_sdr, snr, weighted_sdr_sisdr)

ONES = torch.tensor([1.0, 1.0, 1.0, 1.0])        # energy 4
ALTERNATING = torch.tensor([1.0, -1.0, 1.0, -1.0])  # energy 4, orthogonal to ONES


def test_snr_of_known_noise():
    est = ONES + 0.1 * ALTERNATING                # noise energy 0.04 -> SNR = 10 log10(100) = 20 dB
    assert snr(est, ONES).item() == pytest.approx(20.0, abs=1e-4)
    assert neg_snr(est, ONES).item() == pytest.approx(-20.0, abs=1e-4)


def test_snr_shapes_and_eps():
    est = torch.randn(3, 2, 16)
    assert neg_snr(est, est.clone() + 1).shape == (3, 2)
    assert neg_snr(est[:, 0], est[:, 0]).shape == (3,)
    # zero estimate of a zero reference: (0 + eps) / (0 + eps) -> 0 dB, finite
    zeros = torch.zeros(2, 8)
    assert torch.equal(snr(zeros, zeros), torch.zeros(2))
    # no mean removal: a DC offset on the estimate is an error. ref energy 4, error energy 4*0.25
    assert snr(ONES + 0.5, ONES).item() == pytest.approx(10 * math.log10(4.0), abs=1e-4)


def test_si_sdr_and_weighted_loss_by_hand():
    est = 2 * ONES + ALTERNATING
    # alpha = <est, ref>/||ref||^2 = 8/4 = 2; ||2 ref||^2 = 16; residual = ALTERNATING, energy 4
    assert si_sdr(est, ONES).item() == pytest.approx(10 * math.log10(4.0), abs=1e-4)
    assert neg_si_sdr(est, ONES).item() == pytest.approx(-6.0206, abs=1e-3)
    # SNR: error = ONES + ALTERNATING, energy 8 -> 10 log10(4/8)
    sdr_value = 10 * math.log10(0.5)
    expected = -(0.9 * sdr_value + 0.1 * 10 * math.log10(4.0))
    assert weighted_sdr_sisdr(est, ONES).item() == pytest.approx(expected, abs=1e-4)
    assert weighted_sdr_sisdr(est, ONES, sdr_weight=1.0).item() == pytest.approx(-sdr_value, abs=1e-4)
    # scale invariance, and zero-mean changes the answer for a DC offset
    assert si_sdr(5 * est, ONES).item() == pytest.approx(si_sdr(est, ONES).item(), abs=1e-4)
    ref = torch.tensor([1.0, 2.0, 3.0, 4.0])
    shifted = ref + 10.0
    assert si_sdr(shifted, ref, zero_mean=True).item() > 60  # identical after mean removal
    assert si_sdr(shifted, ref).item() < 10


def test_l1_wave():
    est = 2 * ONES + ALTERNATING  # est - ref = [2, 0, 2, 0]
    assert l1_wave(est, ONES).item() == pytest.approx(1.0)
    assert l1_wave(torch.zeros(3, 2, 5), torch.ones(3, 2, 5)).shape == (3, 2)


def test_losses_reject_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        neg_snr(torch.zeros(2, 5), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="sdr_weight"):
        weighted_sdr_sisdr(ONES, ONES, sdr_weight=1.5)


def test_masked_multislot_neg_snr_matches_baseline_formula():
    ref = torch.stack([ONES, ONES, ONES]).unsqueeze(0)                 # (1, 3, 4)
    est = torch.stack([ONES + 0.1 * ALTERNATING,                       # 20 dB
                       ONES + math.sqrt(0.1) * ALTERNATING,            # 10 dB
                       torch.zeros(4)]).unsqueeze(0)                   # inactive: ignored
    active = torch.tensor([[True, True, False]])
    loss = masked_multislot_neg_snr(est, ref, active)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(-30.0 / 3, abs=1e-3)           # baseline: / K
    active_mean = masked_multislot_neg_snr(est, ref, active, normalize="active_slots")
    assert active_mean.item() == pytest.approx(-15.0, abs=1e-3)
    # the baseline's mean(-SNR * mask) over all B x K slots
    est2, ref2 = torch.randn(4, 3, 32), torch.randn(4, 3, 32)
    mask = torch.rand(4, 3) > 0.5
    baseline = (neg_snr(est2, ref2) * mask).mean()
    assert masked_multislot_neg_snr(est2, ref2, mask).mean().item() == pytest.approx(baseline.item(),
                                                                                     abs=1e-5)
    # inactive slots get no gradient
    est2.requires_grad_(True)
    masked_multislot_neg_snr(est2, ref2, mask).sum().backward()
    assert torch.all(est2.grad[~mask] == 0)
    with pytest.raises(ValueError, match="active"):
        masked_multislot_neg_snr(est2, ref2, mask[:, :2])


def _distinct_sources(batch, n, length=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, length, generator=generator)


def test_pairwise_shape_and_orientation():
    est, ref = _distinct_sources(2, 3), _distinct_sources(2, 3, seed=1)
    pw = pairwise(neg_snr)(est, ref)
    assert pw.shape == (2, 3, 3)
    assert pw[1, 0, 2].item() == pytest.approx(neg_snr(est[1, 0], ref[1, 2]).item(), abs=1e-5)


@pytest.mark.parametrize("n", [3, 9])  # 9 sources use the Hungarian algorithm
def test_pit_picks_the_right_order(n):
    ref = _distinct_sources(2, n)
    order = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(b))
                         for b in range(2)])                            # est[:, i] = ref[:, order[i]]
    est = torch.stack([ref[b, order[b]] for b in range(2)]) + 0.01 * _distinct_sources(2, n, seed=3)
    est.requires_grad_(True)
    loss, perm = PITWrapper(pairwise(neg_snr))(est, ref)
    assert loss.shape == (2,) and perm.shape == (2, n)
    for b in range(2):
        for j in range(n):
            assert order[b, perm[b, j]] == j                            # estimate perm[j] holds ref j
    assert torch.allclose(reorder_sources(est, perm), ref, atol=0.1)
    expected = neg_snr(reorder_sources(est, perm), ref).mean(1)
    assert torch.allclose(loss, expected, atol=1e-4)
    loss.sum().backward()
    assert torch.isfinite(est.grad).all()


def test_class_aware_pit_permutes_only_within_a_class():
    ref = _distinct_sources(1, 3)
    ref[:, 2] = 0                                                       # slot 2 is silence
    est = torch.stack([ref[0, 1], ref[0, 0], torch.zeros(64)]).unsqueeze(0)  # slots 0, 1 swapped
    # same class in slots 0 and 1: the swap is found, silence contributes 0, / K = 3
    loss, perm = class_aware_pit_neg_snr(est, ref, None, torch.tensor([[4, 4, 18]]))
    assert perm.tolist() == [[1, 0, 2]]
    perfect = (neg_snr(ref[0, 0], ref[0, 0]) + neg_snr(ref[0, 1], ref[0, 1])).item()
    assert loss.item() == pytest.approx(perfect / 3, rel=1e-4)
    # different classes: the swap is not allowed even though it would be better
    loss, perm = class_aware_pit_neg_snr(est, ref, None, torch.tensor([[4, 7, 18]]))
    assert perm.tolist() == [[0, 1, 2]]
    by_hand = (neg_snr(est[0, 0], ref[0, 0]) + neg_snr(est[0, 1], ref[0, 1])).item() / 3
    assert loss.item() == pytest.approx(by_hand, rel=1e-4)
    # estimates queried in another order: the labels decide the pairing
    loss, perm = class_aware_pit_neg_snr(est, ref, torch.tensor([[7, 4, 18]]),
                                         torch.tensor([[4, 7, 18]]))
    assert perm.tolist() == [[1, 0, 2]]
    # label vectors (all-zero = silence) give the same answer as indices
    vectors = torch.zeros(1, 3, 18)
    vectors[0, 0, 4] = vectors[0, 1, 4] = 1
    loss_vec, perm_vec = class_aware_pit(est, ref, vectors)
    assert perm_vec.tolist() == [[1, 0, 2]]
    assert loss_vec.item() == pytest.approx(perfect / 3, rel=1e-4)


def test_class_aware_pit_unmatched_labels_contribute_zero():
    ref, est = _distinct_sources(1, 3), _distinct_sources(1, 3, seed=5)
    loss, perm = class_aware_pit_neg_snr(est, ref, torch.tensor([[1, 2, 3]]),
                                         torch.tensor([[1, 2, 9]]))
    assert perm.tolist() == [[0, 1, 2]]
    by_hand = (neg_snr(est[0, 0], ref[0, 0]) + neg_snr(est[0, 1], ref[0, 1])).item() / 3
    assert loss.item() == pytest.approx(by_hand, rel=1e-4)


def test_mixit_picks_the_right_split():
    s = _distinct_sources(1, 4)[0]
    mix1, mix2 = (s[0] + s[1]).unsqueeze(0), s[2].unsqueeze(0)
    est = torch.stack([s[2], s[0], s[1]]).unsqueeze(0).requires_grad_(True)
    loss, assignment = mixit(est, mix1, mix2)
    assert loss.shape == (1,) and assignment.tolist() == [[1, 0, 0]]
    by_hand = neg_snr(est[0, 1] + est[0, 2], mix1[0]) + neg_snr(est[0, 0], mix2[0])
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    loss.sum().backward()
    assert torch.isfinite(est.grad).all()


def test_mixit_allows_an_empty_group():
    s = _distinct_sources(1, 4)[0]
    # nothing in est resembles mix1 = s3: every estimate goes to mix2, mix1 gets silence
    mix1, mix2 = s[3].unsqueeze(0), (s[0] + s[1] + s[2]).unsqueeze(0)
    est = torch.stack([s[0], s[1], s[2]]).unsqueeze(0)
    loss, assignment = mixit(est, mix1, mix2)
    assert assignment.tolist() == [[1, 1, 1]]
    # empty estimate of mix1: -SNR(0, s3) = -10 log10((E + eps)/(E + eps)) = 0
    assert loss.item() == pytest.approx(neg_snr(mix2[0], mix2[0]).item(), rel=1e-4)
    # chunked search gives the same answer
    loss_chunked, assignment_chunked = mixit(est, mix1, mix2, chunk_size=3)
    assert assignment_chunked.tolist() == [[1, 1, 1]]


def test_mixit_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mix1"):
        mixit(torch.zeros(2, 3, 10), torch.zeros(2, 10), torch.zeros(2, 9))


def test_registry():
    est = 2 * ONES + ALTERNATING
    half = get_loss("weighted_sdr_sisdr", sdr_weight=0.5)
    expected = -(0.5 * 10 * math.log10(0.5) + 0.5 * 10 * math.log10(4.0))
    assert half(est, ONES).item() == pytest.approx(expected, abs=1e-4)
    assert get_loss("neg_snr") is neg_snr
    pit = get_loss("pit", loss="neg_si_sdr")
    loss, perm = pit(_distinct_sources(2, 2), _distinct_sources(2, 2, seed=2))
    assert loss.shape == (2,) and perm.shape == (2, 2)
    mixit_l1 = get_loss("mixit", loss="l1_wave")
    assert mixit_l1(torch.zeros(1, 2, 8), torch.zeros(1, 8), torch.zeros(1, 8))[0].item() == 0
    assert get_loss("class_aware_pit", loss="neg_snr") is not None
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("no_such_loss")
    with pytest.raises(TypeError, match="no option"):
        get_loss("neg_snr", lambda_=0.3)
