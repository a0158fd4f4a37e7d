"""Switches of ResUNet30 for short trainings: ``mask_init``, ``class_freq_bias`` and
``class_frame_gate``."""
import pytest
import torch

from s5lib.bin.train_separator import make_loss_step
from s5lib.models.resunet import ResUNet30, ResUNetConfig


def small_config(**overrides):
    settings = dict(input_channels=4, output_channels=1, num_slots=3, label_len=54,
                    condition_size=16, n_fft=128, hop_length=64, channels=(4, 4, 8, 8, 8, 8),
                    bottleneck_channels=8, momentum=0.1)
    settings.update(overrides)
    return ResUNetConfig(**settings)


def query(batch, classes):
    """(B, 54) query: slot k asks for classes[k] (None: silent slot)."""
    condition = torch.zeros(batch, 3, 18)
    for slot, cls in enumerate(classes):
        if cls is not None:
            condition[:, slot, cls] = 1.0
    return condition.flatten(1)


def relative_error(est, ref):
    return float((est - ref).pow(2).sum() / ref.pow(2).sum())


def test_switches_off_keep_the_layout():
    torch.manual_seed(0)
    plain = ResUNet30(small_config())
    torch.manual_seed(0)
    same = ResUNet30(small_config(mask_init=None, class_freq_bias=False))
    assert list(plain.state_dict()) == list(same.state_dict())
    assert plain.mask_prior is None
    torch.manual_seed(0)
    with_prior = ResUNet30(small_config(class_freq_bias=True))
    extra = set(with_prior.state_dict()) - set(plain.state_dict())
    assert extra == {"mask_prior.weight", "mask_prior.bias"}
    assert with_prior.mask_prior.weight.shape == (4 * 3 * 64, 18)


@pytest.mark.parametrize("mask_type,bound", [("mag_phase", None), ("complex", None),
                                             ("real_imag", None), ("complex", 2.0)])
def test_mask_init_starts_as_a_gain_on_channel_0(mask_type, bound):
    torch.manual_seed(1)
    model = ResUNet30(small_config(mask_type=mask_type, ratio_mask_bound=bound,
                                   input_features="magnitude", mask_init=0.3)).eval()
    mixture = torch.randn(2, 4, 4096) * 1e-3
    est = model(mixture, query(2, [3, 5, None])).detach()
    for slot in (0, 1):
        # only the Nyquist bin (always zero) separates the estimate from 0.3 x channel 0
        assert relative_error(est[:, slot], 0.3 * mixture[:, 0]) < 0.02
    assert torch.count_nonzero(est[:, 2]) == 0


def test_default_init_is_not_a_gain():
    """Without mask_init the first estimate is far from any gain on channel 0 (random phasors)."""
    torch.manual_seed(1)
    model = ResUNet30(small_config()).eval()
    mixture = torch.randn(2, 4, 4096) * 1e-3
    est = model(mixture, query(2, [3, 5, 7])).detach()
    gain = (est[:, 0] * mixture[:, 0]).sum() / mixture[:, 0].pow(2).sum()
    assert relative_error(est[:, 0], gain * mixture[:, 0]) > 0.2


def test_mask_init_passes_gradient_to_after_conv():
    torch.manual_seed(2)
    model = ResUNet30(small_config(mask_init=0.3))
    mixture = torch.randn(2, 4, 4096) * 1e-3
    est = model(mixture, query(2, [3, 5, 7]))
    est.pow(2).sum().backward()
    assert model.base.after_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("value", [0.0, 1.0, -0.5, 1.5])
def test_mask_init_outside_the_unit_interval_is_refused(value):
    with pytest.raises(ValueError, match="mask_init"):
        small_config(mask_init=value)


def test_mask_init_must_be_below_the_ratio_bound():
    with pytest.raises(ValueError, match="ratio_mask_bound"):
        small_config(mask_type="complex", ratio_mask_bound=0.25, mask_init=0.3)


def test_class_freq_bias_starts_at_zero():
    torch.manual_seed(3)
    plain = ResUNet30(small_config(mask_init=0.3)).eval()
    torch.manual_seed(3)
    prior = ResUNet30(small_config(mask_init=0.3, class_freq_bias=True)).eval()
    mixture = torch.randn(2, 4, 4096) * 1e-3
    condition = query(2, [3, 5, 7])
    assert torch.allclose(plain(mixture, condition), prior(mixture, condition), atol=1e-9)


def test_class_freq_bias_acts_on_its_class_and_bins_only():
    """A large negative magnitude bias for class 5 at bins 10..19 silences exactly those bins of
    the slot that asks for class 5, and leaves the other slots as they were."""
    torch.manual_seed(4)
    model = ResUNet30(small_config(mask_init=0.3, class_freq_bias=True)).eval()
    mixture = torch.randn(1, 4, 8192) * 1e-3
    condition = query(1, [3, 5, 7])
    before = model(mixture, condition).detach()
    with torch.no_grad():
        # rows: (channel, map, bin) of one slot; map 0 is the magnitude logit
        rows = model.mask_prior.weight.view(4, 3, 64, 18)
        rows[:, 0, 10:20, 5] = -30.0
    after = model(mixture, condition).detach()
    assert torch.allclose(after[:, 0], before[:, 0]) and torch.allclose(after[:, 2], before[:, 2])
    spec_before = torch.stft(before[0, 1], 128, 64, window=torch.hann_window(128),
                             return_complex=True).abs()
    spec_after = torch.stft(after[0, 1], 128, 64, window=torch.hann_window(128),
                            return_complex=True).abs()
    inside = spec_after[12:18].pow(2).sum() / spec_before[12:18].pow(2).sum()
    outside = spec_after[30:60].pow(2).sum() / spec_before[30:60].pow(2).sum()
    assert inside < 1e-2
    assert 0.9 < outside < 1.1


def test_class_frame_gate_starts_as_the_model_without_it():
    torch.manual_seed(6)
    plain = ResUNet30(small_config(mask_init=0.3, class_freq_bias=True))
    gated = ResUNet30(small_config(mask_init=0.3, class_freq_bias=True, class_frame_gate=True))
    extra = set(gated.state_dict()) - set(plain.state_dict())
    assert extra and all(key.startswith("frame_gate.") for key in extra)
    gated.load_state_dict({**gated.state_dict(), **plain.state_dict()})
    mixture = torch.randn(2, 4, 4096) * 1e-3
    condition = query(2, [3, 5, 7])
    plain.eval(), gated.eval()
    assert torch.equal(plain(mixture, condition), gated(mixture, condition))


def test_class_frame_gate_closes_its_class_in_its_frames_only():
    """A gate logit of -30 for class 5 in the second half of the frames silences exactly that part
    of the slot asking for class 5; the other slots are unchanged."""
    torch.manual_seed(7)
    model = ResUNet30(small_config(mask_init=0.3, class_frame_gate=True)).eval()
    mixture = torch.randn(1, 4, 8192) * 1e-3
    condition = query(1, [3, 5, 7])
    before = model(mixture, condition).detach()
    frames = 8192 // 64 + 1
    half = torch.zeros(18, frames)
    half[5, frames // 2:] = -30.0
    model.frame_logits = lambda spec: half[None].expand(spec.shape[0], -1, -1)
    after = model(mixture, condition).detach()
    assert torch.equal(after[:, 0], before[:, 0]) and torch.equal(after[:, 2], before[:, 2])
    first, second = slice(0, 8192 // 2 - 256), slice(8192 // 2 + 256, None)
    assert relative_error(after[0, 1, first], before[0, 1, first]) < 1e-6
    assert after[0, 1, second].pow(2).sum() < 1e-6 * before[0, 1, second].pow(2).sum()


def test_class_frame_gate_learns_and_needs_magnitude_masks():
    torch.manual_seed(8)
    model = ResUNet30(small_config(mask_init=0.3, class_frame_gate=True))
    est = model(torch.randn(2, 4, 4096) * 1e-3, query(2, [3, 5, 7]))
    est.pow(2).sum().backward()
    assert model.frame_gate.out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="class_frame_gate needs mag_phase"):
        small_config(mask_type="complex", class_frame_gate=True)


@pytest.mark.parametrize("layers", [1, 2, 4])
def test_frame_gate_sees_exactly_its_dilated_context(layers):
    """L layers of kernel 5 dilated 1, 2, 4, ...: a change of one input frame moves the logits of
    the frames within 2 (2^L - 1) of it and of no other frame."""
    from s5lib.models.resunet import FrameGate
    torch.manual_seed(9)
    gate = FrameGate(33, 18, 8, 0.1, layers).eval()
    torch.nn.init.normal_(gate.out.weight)
    spec = torch.complex(torch.randn(1, 200, 33), torch.randn(1, 200, 33))
    changed = spec.clone()
    changed[0, 100] *= 10.0
    moved = (gate(changed) - gate(spec)).detach().abs().amax(dim=(0, 1)) > 0
    reach = 2 * (2 ** layers - 1)
    assert moved.nonzero().flatten().tolist() == list(range(100 - reach, 100 + reach + 1))
    with pytest.raises(ValueError, match="frame_gate_layers must be >= 1"):
        small_config(class_frame_gate=True, frame_gate_layers=0)


def test_band_interpolation_is_a_partition_of_unity_on_mel_centres():
    from s5lib.models.resunet import band_interpolation
    weights = band_interpolation(8, 256)
    assert weights.shape == (8, 256) and (weights >= 0).all()
    assert torch.allclose(weights.sum(0), torch.ones(256), atol=1e-6)
    peaks = weights.argmax(dim=1)
    assert peaks[0] == 0 and peaks[-1] == 255 and (peaks.diff() > 0).all()
    assert (peaks.diff()[1:] >= peaks.diff()[:-1]).all()     # mel: wider bands up the spectrum
    assert torch.equal(band_interpolation(1, 64), torch.ones(1, 64))
    with pytest.raises(ValueError, match="frame_gate_bands must be in"):
        small_config(class_frame_gate=True, frame_gate_bands=0)


def test_band_gate_starts_at_zero_and_closes_its_class_in_one_band():
    """A band-resolved gate starts as no gate; a logit of -30 for class 5 in its lowest band only
    silences the low bins of the slot asking for class 5 and leaves the high bins and the other
    slots unchanged."""
    torch.manual_seed(10)
    plain = ResUNet30(small_config(mask_init=0.3, class_frame_gate=True)).eval()
    model = ResUNet30(small_config(mask_init=0.3, class_frame_gate=True, frame_gate_bands=4)).eval()
    assert model.frame_gate.out.weight.shape[0] == 18 * 4
    assert "gate_bands" not in model.state_dict()
    shared = {k: v for k, v in plain.state_dict().items() if not k.startswith("frame_gate.out")}
    model.load_state_dict({**model.state_dict(), **shared})
    mixture = torch.randn(1, 4, 8192) * 1e-3
    condition = query(1, [3, 5, 7])
    before = model(mixture, condition).detach()
    assert torch.allclose(before, plain(mixture, condition).detach(), atol=1e-9, rtol=1e-6)
    frames = 8192 // 64 + 1
    logits = torch.zeros(18, 4, frames)
    logits[5, 0] = -30.0
    model.frame_logits = lambda spec: logits[None].expand(spec.shape[0], -1, -1, -1)
    after = model(mixture, condition).detach()
    assert torch.equal(after[:, 0], before[:, 0]) and torch.equal(after[:, 2], before[:, 2])
    spec_before = torch.stft(before[0, 1], 128, 64, window=torch.hann_window(128),
                             return_complex=True).abs().square().sum(1)
    spec_after = torch.stft(after[0, 1], 128, 64, window=torch.hann_window(128),
                            return_complex=True).abs().square().sum(1)
    assert spec_after[:3].sum() < 1e-2 * spec_before[:3].sum()   # the lowest band (STFT leakage)
    assert torch.allclose(spec_after[40:], spec_before[40:], rtol=1e-3)  # the top band's bins


def test_reference_band_activity_marks_the_bands_of_each_class():
    from s5lib.bin.train_separator import reference_band_activity
    from s5lib.models.resunet import band_interpolation
    from s5lib.models.stft import STFT
    t = torch.arange(64 * 40) / 32000.0
    refs = torch.zeros(1, 3, 64 * 40)
    refs[0, 0, 64 * 10:64 * 20] = torch.sin(2 * torch.pi * 15000.0 * t[64 * 10:64 * 20])
    onehot = torch.zeros(1, 3, 18)
    onehot[0, 0, 4] = 1.0
    bands = band_interpolation(4, 64)
    act = reference_band_activity(refs, onehot, STFT(n_fft=128, hop_length=64), bands)
    assert act.shape == (1, 18, 4, 41)
    assert act[0, 4, 3, 11:20].all() and act[0, 4, :2].sum() == 0      # a 15 kHz tone: top band
    frames = act[0, 4, 3].nonzero().flatten()
    assert frames.min() >= 9 and frames.max() <= 21
    assert act[0, [c for c in range(18) if c != 4]].sum() == 0


def test_band_gate_loss_reaches_the_gate():
    torch.manual_seed(11)
    model = ResUNet30(small_config(mask_init=0.3, class_frame_gate=True, frame_gate_bands=5))
    gated = make_loss_step("resunetk", "masked_multislot_neg_snr", {}, None, frame_gate_weight=0.5)
    loss, logs = gated(model, synthetic_batch(0))
    assert abs(logs["frame_gate_bce"] - 0.6931) < 1e-3
    loss.backward()
    assert model.frame_gate.out.weight.grad.abs().sum() > 0


def synthetic_batch(seed, batch=4, length=8192):
    """Mixtures of two band-limited 'classes' (0: bins 5..15, 1: bins 35..50) in noise."""
    gen = torch.Generator().manual_seed(seed)
    spec = torch.zeros(batch, 2, length // 64 + 1, 65, dtype=torch.complex64)
    phase = torch.rand(spec.shape, generator=gen) * 6.2832
    spec[:, 0, :, 5:16] = torch.polar(torch.ones(1), phase[:, 0, :, 5:16])
    spec[:, 1, :, 35:51] = torch.polar(torch.ones(1), phase[:, 1, :, 35:51])
    window = torch.hann_window(128)
    sources = torch.istft(spec.flatten(0, 1).transpose(1, 2), 128, 64, window=window,
                          length=length).view(batch, 2, length) * 1e-3
    noise = torch.randn(batch, 4, length, generator=gen) * 3e-4
    mixture = sources.sum(1, keepdim=True).expand(batch, 4, length) + noise
    references = torch.zeros(batch, 3, length)
    references[:, :2] = sources
    onehot = torch.zeros(batch, 3, 18)
    onehot[:, 0, 0] = 1.0
    onehot[:, 1, 1] = 1.0
    label_index = torch.tensor([[0, 1, 18]] * batch)
    return {"mixture": mixture, "references": references, "slot_onehot": onehot,
            "active": torch.tensor([[True, True, False]] * batch), "label_index": label_index,
            "index": torch.arange(batch)}


@pytest.mark.parametrize("loss_name", ["masked_multislot_neg_snr", "class_aware_pit_neg_snr"])
def test_class_freq_bias_learns_a_spectral_envelope_fast(loss_name):
    """With both switches, 40 Adam updates on class-specific bands beat the silence anchor
    (loss 0); the upstream init, after the same updates, is still worse than silence."""
    def train(**switches):
        torch.manual_seed(5)
        model = ResUNet30(small_config(**switches))
        step = make_loss_step("resunetk", loss_name, {}, None)
        groups = [{"params": [p for n, p in model.named_parameters()
                              if not n.startswith("mask_prior.") and p.requires_grad]}]
        if model.mask_prior is not None:
            groups.append({"params": list(model.mask_prior.parameters()), "lr": 2e-2})
        opt = torch.optim.Adam(groups, lr=2e-3)
        for update in range(40):
            loss, _ = step(model, synthetic_batch(update))
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            return float(step(model, synthetic_batch(1000))[0])

    fast = train(mask_init=0.3, class_freq_bias=True)
    upstream = train()
    # loss = -(sum of the active slots' SNR) / 3; silence scores 0. Measured: fast -0.75
    # (~1.1 dB per active slot), upstream +2.2 (worse than silence)
    assert fast < -0.5
    assert upstream > fast + 2.0


def test_reference_frame_activity_marks_the_frames_of_each_class():
    from s5lib.bin.train_separator import reference_frame_activity
    refs = torch.zeros(1, 3, 64 * 40)
    refs[0, 0, 64 * 10:64 * 20] = torch.randn(640)
    refs[0, 1] = 1e-3 * torch.randn(64 * 40)          # quiet but active everywhere
    onehot = torch.zeros(1, 3, 18)
    onehot[0, 0, 4] = 1.0
    onehot[0, 1, 9] = 1.0                              # slot 2 is silent
    act = reference_frame_activity(refs, onehot, 128, 64)
    assert act.shape == (1, 18, 41)
    frames = act[0, 4].nonzero().flatten()
    assert frames.min() >= 9 and frames.max() <= 21 and act[0, 4, 11:20].all()
    assert act[0, 9].all()
    others = [c for c in range(18) if c not in (4, 9)]
    assert act[0, others].sum() == 0


def test_frame_gate_loss_is_added_and_reaches_the_gate():
    torch.manual_seed(9)
    model = ResUNet30(small_config(mask_init=0.3, class_frame_gate=True))
    batch = synthetic_batch(0)
    plain = make_loss_step("resunetk", "masked_multislot_neg_snr", {}, None)
    gated = make_loss_step("resunetk", "masked_multislot_neg_snr", {}, None, frame_gate_weight=0.5)
    base_loss, logs = plain(model, batch)
    loss, logs = gated(model, batch)
    # a fresh gate gives logits 0: BCE log 2 whatever the targets
    assert abs(logs["frame_gate_bce"] - 0.6931) < 1e-3
    assert torch.allclose(loss, base_loss + 0.5 * logs["frame_gate_bce"], atol=1e-5)
    loss.backward()
    assert model.frame_gate.out.weight.grad.abs().sum() > 0
