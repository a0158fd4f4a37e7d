"""CP-JKU's AudioSep-SED separator: Time-FiLM, embedding injection, trainable/frozen S2-SED, DPRNN,
iterative refinement, full-size layouts and parameter counts (SPEC §7.2)."""
import os

import pytest
import torch

from s5lib import constants
from s5lib.bin.train_separator import SeparatorLossStep, refinement_depth
from s5lib.models.audiosep_sed import AudioSepSED, GuidanceConfig, audiosep_sed_resunet_config
from s5lib.models.checkpoints import read_reference_tsv
from s5lib.models.blocks import DualPathRNN, EmbeddingInjection, standardise
from s5lib.models.factory import build_separator, build_tagger
from s5lib.models.resunet import ResUNet30, init_from_audiosep
from s5lib.models.tagger import SEDTagger

TINY_SED = {"m2d": {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": [80, 8]},
            "seq_len": 20}
TINY_UNET = {"channels": [4, 4, 8, 8, 8, 8], "bottleneck_channels": 8, "condition_size": 16,
             "n_fft": 256, "hop_length": 128}
SAMPLES = 16000  # 0.5 s at 32 kHz
REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")
if not os.path.isdir(REFERENCE_DIR):
    REFERENCE_DIR = "/work/shared/reference"
needs_reference = pytest.mark.skipif(not os.path.isdir(REFERENCE_DIR),
                                     reason="shared/reference layouts not available")


def tiny(**guidance):
    torch.manual_seed(0)
    return build_separator(dict(TINY_UNET, type="audiosep_sed", sed=TINY_SED, dprnn_hidden=4,
                                **guidance))


def batch(n=2):
    gen = torch.Generator().manual_seed(1)
    mixture = 0.05 * torch.randn(n, 4, SAMPLES, generator=gen)
    query = torch.zeros(n, constants.N_CLASSES)
    for b in range(n):
        query[b, (3 * b + 2) % constants.N_CLASSES] = 1.0
    return mixture, query


def test_forward_shapes_and_silent_query():
    model = tiny(dprnn=True, refine_iterations=3).eval()
    mixture, query = batch()
    query[1] = 0.0
    with torch.no_grad():
        out = model(mixture, query)
        steps = model(mixture, query, n_iter=4, return_steps=True)
    assert out.shape == (2, 1, SAMPLES)
    assert len(steps) == 4 and all(s.shape == (2, 1, SAMPLES) for s in steps)
    assert torch.count_nonzero(out[1]) == 0 and torch.count_nonzero(out[0]) > 0
    assert torch.allclose(steps[2], out)  # eval: refine_iterations steps by default


def test_time_film_with_constant_activity_is_plain_film_plus_a_constant(monkeypatch):
    model = tiny(embedding_injection=False).eval()
    mixture, query = batch()
    value = 1.7
    real_forward = model.sed.forward

    def constant_logits(waveform, return_hidden=False):
        out = real_forward(waveform, return_hidden)
        out["strong_logits"] = torch.full_like(out["strong_logits"], value)
        return out

    monkeypatch.setattr(model.sed, "forward", constant_logits)
    with torch.no_grad():
        guided = model(mixture, query)
        # the same U-Net with the label FiLM plus one constant bias per BN (no time axis)
        frames = model.time_embedding(torch.full((2, 1, 1), value))[:, 0]
        constant = {name: getattr(model.film, name)(frames)[:, :, None, None]
                    for name in model.film.names}
        plain = ResUNet30.forward(model, mixture, query, extra_film=constant)[:, :1]
        without = ResUNet30.forward(model, mixture, query)[:, :1]
    assert torch.allclose(guided, plain, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(guided, without, atol=1e-4)  # the constant does act


def test_time_film_follows_the_queried_class_activity():
    model = tiny(embedding_injection=False).eval()
    mixture, query = batch(1)
    other = torch.zeros_like(query)
    other[0, 0] = 1.0
    with torch.no_grad():
        film_q, _ = model.sed_guidance(mixture, query)
        film_o, _ = model.sed_guidance(mixture, other)
        logits = model.sed(mixture)["strong_logits"]
    name = model.film.names[0]
    assert film_q[name].shape[-1] == TINY_SED["seq_len"]  # per frame, resampled per block later
    assert not torch.allclose(film_q[name], film_o[name])
    expected = model.time_embedding(logits[0, :, query[0].argmax()][None, :, None])
    assert torch.allclose(film_q[name], getattr(model.film, name)(expected).transpose(1, 2), atol=1e-6)


def test_refinement_with_zero_feedback_kernel_equals_one_step():
    model = tiny(refine_iterations=3).eval()
    mixture, query = batch()
    features = model.config.input_channels  # magnitude features: one per channel
    assert torch.count_nonzero(model.base.pre_conv.weight[:, features:]) == 0  # starts at zero
    with torch.no_grad():
        steps = model(mixture, query, n_iter=3, return_steps=True)
        assert torch.allclose(steps[0], steps[1], atol=1e-7) and torch.allclose(steps[0], steps[2], atol=1e-7)
        model.base.pre_conv.weight[:, features:] = 0.5
        moved = model(mixture, query, n_iter=2, return_steps=True)
    # with a trained kernel the feedback acts (the silent first feedback is not zero after
    # feedback_bn's running statistics either, as in CP-JKU's code)
    assert not torch.allclose(moved[1], moved[0], atol=1e-6)


def test_refinement_trains_through_the_last_step_only():
    model = tiny(refine_iterations=3).train()
    mixture, query = batch()
    calls = []
    real_unet = model.base.unet

    def recording(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return real_unet(*args, **kwargs)

    model.base.unet = recording
    out = model(mixture, query, n_iter=3)
    assert calls == [False, False, True]
    out.pow(2).mean().backward()
    assert model.base.pre_conv.weight.grad is not None
    with pytest.raises(ValueError, match="no refinement feedback"):
        tiny()(mixture, query, n_iter=2)


def test_frozen_sed_gets_no_gradient_and_trainable_sed_backbone_does():
    mixture, query = batch()
    frozen = tiny(sed_trainable=False).train()
    assert not frozen.sed.training  # a frozen SED keeps its statistics
    frozen(mixture, query).pow(2).mean().backward()
    assert all(p.grad is None for p in frozen.sed.parameters())
    assert frozen.injection.proj.weight.grad is not None and frozen.time_embedding[0].weight.grad is not None

    trainable = tiny(sed_trainable=True).train()
    assert trainable.sed.training
    trainable(mixture, query).pow(2).mean().backward()
    backbone = trainable.sed.encoder.backbone
    assert backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert trainable.sed.strong_head.weight.grad is None  # the heads never train here
    assert not trainable.sed.weak_head.weight.requires_grad


def test_embedding_injection_replaces_the_bottleneck_with_the_standardised_sum():
    torch.manual_seed(0)
    injection = EmbeddingInjection(3, 6, 5).eval()
    hidden = [torch.randn(2, 7, 3, 6) for _ in range(3)]
    mixed = injection.mix(hidden)
    assert torch.allclose(mixed, sum(hidden) / 3, atol=1e-6)  # equal weights at start
    bottleneck = torch.randn(2, 5, 4, 2) * 3 + 1
    merged = injection.merge(bottleneck, injection.features(mixed, (4, 2)))
    assert merged.shape == bottleneck.shape
    x = standardise(bottleneck)
    assert torch.allclose(x.mean((-2, -1)), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(x.flatten(-2).std(-1), torch.ones(2, 5), atol=1e-4)
    with torch.no_grad():
        injection.scale_injected.zero_()
    assert torch.allclose(injection.merge(bottleneck, injection.features(mixed, (4, 2))), x)


def test_model_uses_injection_after_the_bottleneck_block():
    model = tiny(time_film=False).eval()
    mixture, query = batch()
    seen = {}
    real = model.injection.merge

    def spy(x, f):
        seen["shape"] = tuple(x.shape)
        return real(x, f)

    model.injection.merge = spy
    with torch.no_grad():
        model(mixture, query)
    # bottleneck: width 8, time (frames padded to 32) / 32, freq (n_fft/2) / 64
    frames = SAMPLES // TINY_UNET["hop_length"] + 1
    assert seen["shape"] == (2, 8, -(-frames // 32), TINY_UNET["n_fft"] // 2 // 64)


def test_dprnn_paths_run_along_time_then_frequency():
    torch.manual_seed(0)
    net = DualPathRNN(6, hidden=4, num_blocks=2, num_layers=2, dropout=0.0).eval()
    x = torch.randn(2, 6, 5, 3)
    assert net(x).shape == x.shape
    leg = net.blocks[0].time_path
    # along time: frequency rows are independent sequences, so changing row 0 leaves row 2 alone
    y = x.clone()
    y[:, :, :, 0] += 1.0
    out_x, out_y = leg.rnn(x[:, :, :, 2].transpose(1, 2))[0], leg.rnn(y[:, :, :, 2].transpose(1, 2))[0]
    assert torch.allclose(out_x, out_y)
    assert net.blocks[0].time_path.norm.eps == 1e-8


def test_guidance_config_errors():
    with pytest.raises(ValueError, match="unknown option"):
        GuidanceConfig.from_dict({"time_flim": True})
    with pytest.raises(ValueError, match="refine_iterations"):
        GuidanceConfig(refine_iterations=0)
    with pytest.raises(ValueError, match="need an SED"):
        AudioSepSED(audiosep_sed_resunet_config(**TINY_UNET), GuidanceConfig())
    with pytest.raises(ValueError, match="model.sed"):
        build_separator(dict(TINY_UNET, type="audiosep_sed"))


def test_refinement_depth_is_uniform_and_reproducible():
    draws = [refinement_depth(step, 0, 3) for step in range(600)]
    assert set(draws) == {1, 2, 3}
    assert all(abs(draws.count(n) / 600 - 1 / 3) < 0.07 for n in (1, 2, 3))
    assert draws == [refinement_depth(step, 0, 3) for step in range(600)]
    assert refinement_depth(5, 0, 1) == 1
    step = SeparatorLossStep("audiosep_sed", "neg_snr", {}, None, refine_iterations=4, seed=3)
    step.set_step(17)
    assert step.n_iter == refinement_depth(17, 3, 4)
    with pytest.raises(ValueError, match="single-source loss"):
        SeparatorLossStep("audiosep_sed", "masked_multislot_neg_snr", {}, None)


def test_loss_step_runs_the_drawn_number_of_steps():
    model = tiny(refine_iterations=3).train()
    mixture, query = batch()
    seen = []
    real = model.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("n_iter"))
        return real(*args, **kwargs)

    model.forward = spy
    refs = torch.randn(2, 3, SAMPLES) * 0.01
    data = {"mixture": mixture, "references": refs, "active": torch.tensor([[1, 0, 0], [1, 1, 0]]).bool(),
            "slot_onehot": torch.zeros(2, 3, 18), "index": torch.tensor([0, 1])}
    data["slot_onehot"][0, 0, 2] = data["slot_onehot"][1, 0, 4] = data["slot_onehot"][1, 1, 7] = 1
    step = SeparatorLossStep("audiosep_sed", "neg_snr", {}, None, refine_iterations=3)
    for update in range(6):
        step.set_step(update)
        loss, logs = step(model, data)
        assert torch.isfinite(loss) and logs["n_iter"] == step.n_iter
    assert seen == [refinement_depth(u, 0, 3) for u in range(6)]


# ----------------------------------------------------------------------------------------------
# Full size: layouts and parameter counts (SPEC §7.2; CP-JKU's code counts one unused FiLM more)
# ----------------------------------------------------------------------------------------------
def full_size(**guidance):
    sed = {"use_head_norm": True}
    return build_separator(dict(type="audiosep_sed", sed=sed, **guidance))


def count(model, skip=("sed.",)):
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(skip))


@pytest.fixture(scope="module")
def full_noniter():
    torch.manual_seed(0)
    return full_size()


def test_full_size_counts_match_cpjku_minus_the_unused_time_film(full_noniter):
    model = full_noniter
    unused_time_film = sum(p.numel() for p in model.film.parameters())
    assert unused_time_film == 5_056_128
    assert count(model) + unused_time_film == 44_928_482
    frozen = sum(p.numel() for n, p in model.named_parameters()
                 if not n.startswith("sed.") and not p.requires_grad)
    assert frozen == 12_587_008  # the DFT kernels
    assert count(model.sed, skip=()) == 85_631_270  # the SED tagger (reference tsv)
    assert tuple(model.base.pre_conv.weight.shape) == (32, 4, 1, 1)
    assert tuple(model.base.after_conv.weight.shape) == (12, 32, 1, 1)
    assert tuple(model.injection.proj.weight.shape) == (384, 768, 1, 1)
    assert model.injection.layer_weights.shape == (13,)


def test_full_size_iterative_dprnn_count():
    torch.manual_seed(0)
    model = full_size(dprnn=True, refine_iterations=2, sed_trainable=False)
    assert count(model) + 5_056_128 == 54_544_773
    assert count(model.dprnn, skip=()) == 9_614_209
    assert tuple(model.base.pre_conv.weight.shape) == (32, 5, 1, 1)
    assert tuple(model.feedback_bn.weight.shape) == (1025,)


def test_audiosep_checkpoint_initialises_the_separator(tmp_path):
    """AudioSep's ResUNet30 keys load into the (iterative) separator: pre-conv tiled over the 4
    channels / 4 with a zero feedback kernel, mask head repeated per channel."""
    from s5lib.models.resunet import ResUNetConfig
    torch.manual_seed(0)
    audiosep = ResUNet30(ResUNetConfig.audiosep())
    weights = {f"ss_model.{k}": v.clone() for k, v in audiosep.state_dict().items()}
    weights["query_encoder.model.logit_scale_a"] = torch.zeros(())   # dropped by the key rules
    path = tmp_path / "audiosep_base_4M_steps.ckpt"
    torch.save({"state_dict": weights}, path)
    model = audiosep_sed_resunet_config(2, label_len=18)
    sep = AudioSepSED(model, GuidanceConfig(time_film=False, embedding_injection=False,
                                            refine_iterations=2))
    report = init_from_audiosep(sep, str(path))
    assert "base.pre_conv.weight" in report["adapted"]
    pre = sep.base.pre_conv.weight
    source = audiosep.base.pre_conv.weight
    assert torch.allclose(pre[:, :4], source.repeat(1, 4, 1, 1) / 4)
    assert torch.count_nonzero(pre[:, 4:]) == 0
    after = sep.base.after_conv.weight
    assert torch.equal(after[3:6], audiosep.base.after_conv.weight)  # channel 1's (mag, re, im)
    assert torch.equal(sep.base.encoder_block3.conv_block1.conv1.weight,
                       audiosep.base.encoder_block3.conv_block1.conv1.weight)
    assert "feedback_bn.weight" in report["not_in_checkpoint"]


@needs_reference
def test_sed_tagger_from_factory_matches_the_reference_layout():
    model = build_tagger({"type": "sed"})
    assert isinstance(model, SEDTagger) and model.kind == "sed"
    assert model.cfg.sample_rate == 16000 and model.attention_over == "classes"
    reference, _ = read_reference_tsv(os.path.join(REFERENCE_DIR, "cpjku_m2d_sed_wrapper.tsv"))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(shape) for k, (shape, _) in reference.items()}


def test_inference_cache_reuses_shared_labels_and_gives_the_same_estimates():
    from s5lib.bin.infer import EstimateCache, separate_cached, separate_rows
    model = tiny(refine_iterations=2).eval()
    calls = []
    real = model.forward

    def counting(mixture, condition, **kwargs):
        calls.append(condition.shape[0])
        return real(mixture, condition, **kwargs)

    model.forward = counting
    mixture, _ = batch(2)
    cfg = {"procedure": "iterative"}
    oracle = [["BicycleBell", "Speech"], ["Doorbell"]]
    tagged = [["Speech"], ["Doorbell", "Buzzer"]]
    cache = EstimateCache(64)
    with torch.no_grad():
        first = separate_cached(model, mixture, [0, 1], oracle, cfg, 2, cache)
        second = separate_cached(model, mixture, [0, 1], tagged, cfg, 2, cache)
        direct = separate_rows(model, mixture, tagged, cfg, 2)
    assert calls[:2] == [3, 1]  # only Buzzer of the second list was new (then the direct call)
    for k in range(2):
        for b in range(2):
            for (la, wa), (lb, wb) in zip(second[k][b], direct[k][b]):
                assert la == lb and torch.allclose(wa, wb, atol=1e-6)
    assert [label for label, _ in first[1][0]] == ["BicycleBell", "Speech"]
    full = EstimateCache(0)  # no room: nothing kept, still correct
    with torch.no_grad():
        again = separate_cached(model, mixture, [0, 1], tagged, cfg, 2, full)
    assert not full.entries and torch.allclose(again[1][1][1][1], direct[1][1][1][1], atol=1e-6)
