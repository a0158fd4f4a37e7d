"""M2D encoder, taggers, decoding, losses and checkpoint compatibility (s5lib.models.m2d/tagger).

Full-size models are built once per module (fixtures) and compared with the reference layouts in
shared/reference/*.tsv; checkpoints are rebuilt from those layouts with constant tensors (stride-0
views, so the files stay tiny) and pushed through the real loaders.
"""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from s5lib.constants import CLASSES, SILENCE_INDEX
from s5lib.models.checkpoints import (CheckpointError, compare_state_dict, read_reference_tsv,
                                      reference_parameter_count, unique_parameter_count)
from s5lib.models.m2d import (M2DConfig, M2DEncoder, load_m2d_pth, load_pretrained_sed,
                              mel_filterbank)
from s5lib.models.tagger import (SLOT_CLASSES, M2DTagger2025, M2DTagger2026, M2DTagger2026Spatial,
                                 SEDTagger, decode_multilabel, decode_slots, load_tagger_checkpoint,
                                 multihot_to_labels, multilabel_bce, pit_slot_ce, sed_loss,
                                 set_trainable, slot_targets, strong_targets_from_events)

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")
if not os.path.isdir(REFERENCE_DIR):
    REFERENCE_DIR = "/work/shared/reference"
needs_reference = pytest.mark.skipif(not os.path.isdir(REFERENCE_DIR),
                                     reason="shared/reference layouts not available")

TINY = dict(sample_rate=8000, n_fft=256, win_length=256, hop_length=64, n_mels=32, f_min=50.0,
            f_max=4000.0, input_frames=63, patch_size=(16, 16), embed_dim=32, depth=2, num_heads=2)
TINY_SAMPLES = 4000  # 0.5 s -> 63 frames (one chunk) -> 2 x 3 patches


def tiny_cfg(**overrides):
    values = dict(TINY)
    values.update(overrides)
    return M2DConfig(**values)


def reference(name):
    return read_reference_tsv(os.path.join(REFERENCE_DIR, name))


def constant_state(rows, prefix="", value=0.0, special=None):
    """Checkpoint dict from reference rows: a constant stride-0 tensor of the listed shape/dtype."""
    special = special or {}
    state = {}
    for key, (shape, dtype) in rows.items():
        fill = special.get(key, value)
        state[prefix + key] = torch.full((), fill, dtype=getattr(torch, dtype)).expand(shape)
    return state


# ----------------------------------------------------------------------------------------------
# Config and front end
# ----------------------------------------------------------------------------------------------
def test_config_validation_and_name_parsing():
    with pytest.raises(ValueError, match="multiple of the patch height"):
        M2DConfig(n_mels=72)
    with pytest.raises(ValueError, match="num_heads"):
        M2DConfig(embed_dim=100, num_heads=12)
    with pytest.raises(ValueError, match="unknown option"):
        M2DConfig.from_dict({"embed_dimension": 8})
    cfg = M2DConfig.from_weight_name(
        "ckpt/m2d_as_vit_base-80x1001p16x16p32k-240413_AS-FT_enconly/weights_ep69it3124-0.47998.pth")
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.f_max) == (32000, 800, 320, 16000.0)
    assert cfg.grid_size == (5, 62) and cfg.frame_feature_dim == 3840
    cfg16 = M2DConfig.from_weight_name("m2d_clap_vit_base-80x1001p16x16-240128_AS-FT_enconly")
    assert (cfg16.sample_rate, cfg16.n_fft, cfg16.hop_length, cfg16.f_max) == (16000, 400, 160, 8000.0)
    with pytest.raises(ValueError, match="geometry"):
        M2DConfig.from_weight_name("weights_without_geometry")


def test_mel_filterbank_matches_torchaudio_slaney():
    torchaudio = pytest.importorskip("torchaudio")
    ours = mel_filterbank(32000, 800, 80, 50.0, 16000.0)
    theirs = torchaudio.functional.melscale_fbanks(401, 50.0, 16000.0, 80, 32000, norm="slaney",
                                                   mel_scale="slaney").T
    assert ours.shape == (80, 401)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_front_end_equals_conv_with_stored_fourier_kernels():
    """The carried nnAudio kernels (wsin/wcos) give the same power spectrum as our FFT path."""
    encoder = M2DEncoder(tiny_cfg())
    spec = encoder.to_spec
    wave = torch.randn(2, TINY_SAMPLES)
    padded = F.pad(wave.unsqueeze(1), (128, 128), mode="reflect")
    real = F.conv1d(padded, spec.stft.wcos, stride=64)
    imag = F.conv1d(padded, spec.stft.wsin, stride=64)
    expected = spec.mel_basis @ (real.square() + imag.square())
    ours = spec(wave)
    assert ours.shape == (2, 32, TINY_SAMPLES // 64 + 1)
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_front_end_frames_log_and_normalisation():
    encoder = M2DEncoder(tiny_cfg())
    wave = torch.randn(1, TINY_SAMPLES)
    lms = encoder.normalized_log_mel(wave)
    expected = (torch.log(encoder.to_spec(wave) + torch.finfo(torch.float32).eps) + 7.1) / 4.2
    assert lms.shape == (1, 1, 32, 63)
    assert torch.allclose(lms[:, 0], expected, atol=1e-5)
    with torch.no_grad():
        encoder.backbone.norm_stats.copy_(torch.tensor([0.0, 1.0]))
    assert torch.allclose(encoder.normalized_log_mel(wave)[:, 0],
                          torch.log(encoder.to_spec(wave) + torch.finfo(torch.float32).eps), atol=1e-5)
    with pytest.raises(ValueError, match="too short"):
        encoder(torch.randn(1, 100))


def test_full_size_front_end_frame_count():
    encoder_cfg = M2DConfig(embed_dim=16, depth=1, num_heads=1)  # 32 kHz front end, tiny ViT
    encoder = M2DEncoder(encoder_cfg)
    frames = encoder(torch.randn(1, 320000))
    assert encoder.to_spec(torch.randn(1, 320000)).shape == (1, 80, 1001)
    assert frames.shape == (1, 62, 5 * 16)


# ----------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------
def test_encoder_shapes_hidden_states_and_stacking():
    torch.manual_seed(0)
    encoder = M2DEncoder(tiny_cfg()).eval()
    wave = torch.randn(2, TINY_SAMPLES)
    frames, hidden = encoder(wave, return_hidden=True)
    assert frames.shape == (2, 3, 2 * 32)  # 63 frames -> 3 time patches, 32 mels -> 2 freq patches
    assert len(hidden) == 3 and all(h.shape == (2, 3, 2, 32) for h in hidden)
    grid, _ = encoder.encode_waveform_grid(wave)
    # frame feature = the frequency patches of one time step stacked, lowest frequency first
    assert torch.equal(frames[..., :32], grid[:, :, 0]) and torch.equal(frames[..., 32:], grid[:, :, 1])
    # the last hidden state is the last block output before the final norm
    assert torch.allclose(encoder.backbone.norm(hidden[-1]), grid, atol=1e-5)
    # hidden[0] is the patch embedding without position embedding
    lms = encoder.normalized_log_mel(wave)
    patches = encoder.backbone.patch_embed(lms[..., :48])  # (B, D, F', T')
    assert torch.allclose(hidden[0], patches.permute(0, 3, 2, 1), atol=1e-5)


def test_long_input_is_encoded_in_chunks():
    torch.manual_seed(0)
    encoder = M2DEncoder(tiny_cfg()).eval()
    lms = torch.randn(1, 1, 32, 63 * 2 + 20)  # two full chunks + 20 frames
    grid, hidden = encoder.encode_grid(lms, return_hidden=True)
    # a full chunk of 63 frames gives 3 patches (the last 15 frames fill no patch), the
    # zero-padded 20-frame tail gives 2
    assert grid.shape[1] == 3 + 3 + 2 and len(hidden) == 3 and hidden[1].shape[1] == 8
    first, _ = encoder.encode_grid(lms[..., :63])
    second, _ = encoder.encode_grid(lms[..., 63:126])
    third, _ = encoder.encode_grid(lms[..., 126:])
    assert torch.allclose(grid, torch.cat([first, second, third], dim=1), atol=1e-5)
    # a short chunk uses the first columns of the position embedding
    assert third.shape[1] == 2
    with pytest.raises(ValueError, match="expected log-mel"):
        encoder.encode_grid(torch.randn(1, 1, 31, 64))


def test_key_names_fit_the_trainers_layer_decay():
    """s5lib.train.optim owns layer-wise lr decay; it finds our blocks and embeddings by name."""
    from s5lib.train.optim import layer_decay_scale
    model = SEDTagger(tiny_cfg(depth=3))
    names = [name for name, _ in model.named_parameters()]
    assert "model.m2d.backbone.blocks.2.attn.qkv.weight" in names
    assert layer_decay_scale("model.m2d.backbone.blocks.2.attn.qkv.weight", 0.5, 3) == 0.5
    assert layer_decay_scale("model.m2d.backbone.blocks.0.mlp.fc1.weight", 0.5, 3) == 0.125
    assert layer_decay_scale("model.m2d.backbone.pos_embed", 0.5, 3) == 0.0625
    assert layer_decay_scale("model.m2d.backbone.patch_embed.proj.weight", 0.5, 3) == 0.0625


# ----------------------------------------------------------------------------------------------
# Full-size layouts and checkpoint loaders (built once per module)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tagger2025():
    return M2DTagger2025()


@pytest.fixture(scope="module")
def tagger2026_1c():
    return M2DTagger2026()


@pytest.fixture(scope="module")
def tagger2026_4c():
    return M2DTagger2026Spatial()


@pytest.fixture(scope="module")
def sed_tagger():
    return SEDTagger()


def assert_matches_reference(module, name, state_dict=None):
    rows, meta = reference(name)
    missing, unexpected, mismatched = compare_state_dict(
        state_dict if state_dict is not None else module.state_dict(), rows)
    assert missing == [], f"missing: {missing[:10]}"
    assert unexpected == [], f"unexpected: {unexpected[:10]}"
    assert mismatched == [], f"shape/dtype mismatches: {mismatched[:10]}"
    assert unique_parameter_count(module) == reference_parameter_count(meta)
    return rows


@needs_reference
def test_layout_encoder(tagger2025):
    assert_matches_reference(tagger2025.backbone, "m2d_vit_base_encoder.tsv")
    assert tagger2025.backbone.pos_embed.shape == (1, 1 + 5 * 62, 768)


@needs_reference
def test_layout_2025_and_trainable_counts(tagger2025):
    assert_matches_reference(tagger2025, "m2dat_2025_tagger.tsv")
    set_trainable(tagger2025, "head")
    assert sum(p.numel() for p in tagger2025.parameters() if p.requires_grad) == 13_842
    set_trainable(tagger2025, "2_blocks")
    assert sum(p.numel() for p in tagger2025.parameters() if p.requires_grad) == 14_191_122
    set_trainable(tagger2025, "all")
    assert not tagger2025.backbone.norm_stats.requires_grad


@needs_reference
def test_layout_2026_1c(tagger2026_1c):
    assert_matches_reference(tagger2026_1c, "m2dat_2026_1c_tagger.tsv")
    set_trainable(tagger2026_1c, "head")
    assert sum(p.numel() for p in tagger2026_1c.parameters() if p.requires_grad) == 3_975_225


@needs_reference
def test_layout_2026_4c(tagger2026_4c):
    assert_matches_reference(tagger2026_4c, "m2dat_2026_4c_tagger.tsv")
    set_trainable(tagger2026_4c, "head")
    assert sum(p.numel() for p in tagger2026_4c.parameters() if p.requires_grad) == 11_053_113


@needs_reference
def test_layout_cpjku_sed(sed_tagger):
    assert_matches_reference(sed_tagger, "cpjku_m2d_sed_wrapper.tsv")
    assert sed_tagger.encoder.to_spec.mel_basis.shape == (80, 201)


@needs_reference
def test_load_raw_m2d_pth(tmp_path, tagger2025):
    rows, _ = reference("m2d_vit_base_raw_checkpoint_derived.tsv")
    prefix = "module.ar.runtime.backbone."
    special = {prefix + "pos_embed": 0.25, prefix + "norm_stats": -3.0,
               "module.head.norm.running_mean": 0.5, "module.head.norm.running_var": 2.0}
    raw = constant_state(rows, special=special)
    path = tmp_path / "m2d_as_vit_base-80x1001p16x16p32k-240413_AS-FT_enconly" / "weights_ep69.pth"
    path.parent.mkdir()
    torch.save(raw, path)
    dropped = load_m2d_pth(tagger2025, str(path))
    assert len(dropped) == 9 and all(k.startswith(("module.ar.runtime.to_spec.", "module.head."))
                                     for k in dropped)
    backbone = tagger2025.backbone
    assert torch.all(backbone.pos_embed == 0.25) and torch.all(backbone.norm_stats == -3.0)
    assert torch.all(backbone.blocks[11].mlp.fc2.weight == 0.0)
    assert torch.all(tagger2025.head_norm.running_mean == 0.5)
    assert torch.all(tagger2025.head_norm.running_var == 2.0)
    assert M2DConfig.from_weight_name(str(path)).grid_size == (5, 62)

    # wrapped in {'model': ...} and without norm_stats: the default statistics are filled in
    del raw[prefix + "norm_stats"]
    torch.save({"model": raw}, path)
    load_m2d_pth(tagger2025.backbone, str(path))
    assert torch.allclose(backbone.norm_stats, torch.tensor([-7.1, 4.2]))

    # a file with a wrong key name: clear error naming the file and the key
    raw[prefix + "blocks.3.attn.qkv.weights"] = raw.pop(prefix + "blocks.3.attn.qkv.weight")
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as error:
        load_m2d_pth(tagger2025, str(path))
    assert str(path) in str(error.value) and "blocks.3.attn.qkv.weight" in str(error.value)


@needs_reference
def test_load_m2d_pth_wrong_geometry(tmp_path, tagger2025):
    """A 16x16-patch, 80x608 file does not fit the 80x1001 encoder: shape mismatch is reported."""
    rows, _ = reference("m2d_vit_base_encoder.tsv")
    rows = dict(rows)
    rows["pos_embed"] = ((1, 1 + 5 * 38, 768), "float32")
    path = tmp_path / "weights.pth"
    torch.save(constant_state(rows, prefix="module.ar.runtime.backbone."), path)
    with pytest.raises(CheckpointError, match="pos_embed") as error:
        load_m2d_pth(tagger2025, str(path))
    assert str(path) in str(error.value)


@needs_reference
@pytest.mark.parametrize("fixture_name, reference_name", [
    ("tagger2025", "m2dat_2025_tagger.tsv"),
    ("tagger2026_1c", "m2dat_2026_1c_tagger.tsv"),
    ("tagger2026_4c", "m2dat_2026_4c_tagger.tsv"),
    ("sed_tagger", "cpjku_m2d_sed_wrapper.tsv"),
])
def test_load_lightning_tagger_checkpoint(tmp_path, request, fixture_name, reference_name):
    model = request.getfixturevalue(fixture_name)
    rows, _ = reference(reference_name)
    first_key = next(iter(rows))
    state = constant_state(rows, prefix="model.", value=0.0, special={first_key: 0.125})
    path = tmp_path / "tagger.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    load_tagger_checkpoint(model, str(path))
    assert torch.all(model.state_dict()[first_key] == 0.125)

    some_key = "model." + [k for k in rows if k.endswith("blocks.5.attn.proj.weight")][0]
    del state[some_key]
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as error:
        load_tagger_checkpoint(model, str(path))
    assert str(path) in str(error.value) and some_key[len("model."):] in str(error.value)

    torch.save({"state_dict": {"model.something.else": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of"):
        load_tagger_checkpoint(model, str(path))


@needs_reference
def test_load_pretrained_sed_file(tmp_path, sed_tagger):
    rows, _ = reference("cpjku_m2d_sed_wrapper.tsv")
    file_state = {}
    for key, value in constant_state(rows, special={"model.m2d.backbone.pos_embed": 0.75}).items():
        if key.startswith("model.m2d."):
            file_state["model." + key[len("model.m2d."):]] = value  # the file's own naming
    for head in ("strong_head", "weak_head"):  # 447 AudioSet-strong classes, dropped
        file_state[f"{head}.weight"] = torch.zeros(447, 3840)
        file_state[f"{head}.bias"] = torch.zeros(447)
    path = tmp_path / "M2D_strong_1.pt"
    torch.save(file_state, path)
    left = load_pretrained_sed(sed_tagger, str(path))
    assert set(left) == {"strong_head.weight", "strong_head.bias", "weak_head.weight",
                         "weak_head.bias", "head_norm.running_mean", "head_norm.running_var",
                         "head_norm.num_batches_tracked"}
    assert torch.all(sed_tagger.encoder.backbone.pos_embed == 0.75)

    file_state["model.extra_layer.weight"] = torch.zeros(3)
    torch.save(file_state, path)
    with pytest.raises(CheckpointError, match="unexpected keys") as error:
        load_pretrained_sed(sed_tagger, str(path))
    assert str(path) in str(error.value) and "model.m2d.extra_layer.weight" in str(error.value)


# ----------------------------------------------------------------------------------------------
# Tiny taggers: shapes, gradients, training from scratch
# ----------------------------------------------------------------------------------------------
def test_tiny_2025_tagger_trains_from_scratch():
    torch.manual_seed(0)
    model = M2DTagger2025(tiny_cfg(), n_classes=4)
    wave = torch.randn(4, 2, TINY_SAMPLES)  # multi-channel input: channel 0 is used
    targets = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 1, 0]], dtype=torch.float)
    logits = model(wave)
    assert logits.shape == (4, 4) and model.feature_dim == 32
    loss = multilabel_bce(logits, targets)
    assert loss.shape == (4,)
    loss.mean().backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.backbone.patch_embed.proj.weight.grad is not None
    assert model.backbone.norm_stats.grad is None
    # channel 1 does not matter
    with torch.no_grad():
        model.eval()
        changed = wave.clone()
        changed[:, 1] = torch.randn_like(changed[:, 1])
        assert torch.allclose(model(wave), model(changed))
        model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        optimizer.zero_grad()
        loss = multilabel_bce(model(wave), targets).mean()
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first


def test_tiny_2025_stacked_features_variant():
    model = M2DTagger2025(tiny_cfg(), n_classes=3, flat_features=False)
    assert model.head.in_features == 64
    assert model(torch.randn(2, TINY_SAMPLES)).shape == (2, 3)


def test_set_trainable_head_freezes_encoder():
    model = M2DTagger2026(tiny_cfg(), track_input_dim=16, track_hidden_dim=8)
    set_trainable(model, "head")
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    set_trainable(model, "1_blocks")
    assert all(p.requires_grad for p in model.backbone.blocks[1].parameters())
    assert not any(p.requires_grad for p in model.backbone.blocks[0].parameters())
    with pytest.raises(ValueError, match="unknown mode"):
        set_trainable(model, "some")


def test_tiny_2026_taggers_shapes_and_gradients():
    torch.manual_seed(0)
    wave = torch.randn(2, 4, TINY_SAMPLES)
    targets = torch.tensor([[3, SILENCE_INDEX, SILENCE_INDEX], [5, 5, 1]])
    one = M2DTagger2026(tiny_cfg(), track_input_dim=16, track_hidden_dim=8)
    four = M2DTagger2026Spatial(tiny_cfg(), n_channels=4, track_input_dim=16, track_hidden_dim=None)
    assert four.head.m2d_out_norm.num_features == 4 * 32
    for model in (one, four):
        logits = model(wave)
        assert logits.shape == (2, 3, 19)
        loss = pit_slot_ce(logits, targets)
        assert loss.shape == (2,)
        loss.mean().backward()
        assert model.encoder.backbone.blocks[1].mlp.fc1.weight.grad.abs().sum() > 0
        decoded = model.eval().predict(wave)
        assert len(decoded) == 2 and all(len(row) <= 3 for row in decoded)
    with pytest.raises(ValueError, match=r"expected \(B, 4, L\)"):
        four(torch.randn(2, 3, TINY_SAMPLES))


def test_spatial_tagger_concatenates_channels_per_token():
    """Channel order matters and each channel goes through the same encoder."""
    torch.manual_seed(0)
    model = M2DTagger2026Spatial(tiny_cfg(), n_channels=2, track_input_dim=8, track_hidden_dim=8).eval()
    wave = torch.randn(1, 2, TINY_SAMPLES)
    captured = {}
    model.head.register_forward_pre_hook(lambda module, args: captured.update(x=args[0]))
    model(wave)
    grid0, _ = model.m2d.encode_waveform_grid(wave[:, 0])
    grid1, _ = model.m2d.encode_waveform_grid(wave[:, 1])
    tokens = captured["x"]
    assert tokens.shape == (1, 6, 64)
    assert torch.allclose(tokens[..., :32], grid0.flatten(1, 2), atol=1e-6)
    assert torch.allclose(tokens[..., 32:], grid1.flatten(1, 2), atol=1e-6)


def test_tiny_sed_tagger_convex_clip_score_and_loss():
    torch.manual_seed(0)
    for attention_over in ("time", "classes"):
        model = SEDTagger(tiny_cfg(), n_classes=5, input_sample_rate=16000, seq_len=10,
                          attention_over=attention_over)
        wave = torch.randn(2, 2 * TINY_SAMPLES)  # 16 kHz input, resampled to 8 kHz
        out = model(wave, return_hidden=True)
        assert out["strong_logits"].shape == (2, 10, 5) and out["frame_features"].shape == (2, 10, 64)
        assert len(out["hidden"]) == 3 and out["hidden"][0].shape == (2, 3, 2, 32)
        attention, strong, weak = out["attention"], out["strong_probs"], out["weak_probs"]
        assert torch.all(attention >= 0)
        assert torch.allclose(attention.sum(1), torch.ones(2, 5), atol=1e-5)
        assert torch.allclose(weak, (attention * strong).sum(1))
        assert torch.all(weak <= strong.max(1).values + 1e-6)
        assert torch.all(weak >= strong.min(1).values - 1e-6)
        strong_targets = torch.zeros(2, 10, 5)
        strong_targets[0, 2:5, 1] = 1
        weak_targets = strong_targets.amax(1)
        loss = sed_loss(out, strong_targets, weak_targets, strong_weight=0.5)
        assert loss.shape == (2,)
        loss.sum().backward()
        assert model.weak_head.weight.grad.abs().sum() > 0
        assert model.strong_head.weight.grad.abs().sum() > 0
        assert model.encoder.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    # lambda = 1 is the strong BCE only
    out = {k: v.detach() for k, v in out.items() if k != "hidden"}
    strong_only = sed_loss(out, strong_targets, weak_targets, strong_weight=1.0)
    expected = F.binary_cross_entropy_with_logits(out["strong_logits"], strong_targets,
                                                  reduction="none").mean(dim=(1, 2))
    assert torch.allclose(strong_only, expected)


def test_sed_attention_is_softmax_over_time_per_class():
    torch.manual_seed(0)
    model = SEDTagger(tiny_cfg(), n_classes=3, input_sample_rate=8000, seq_len=6,
                      use_head_norm=False, attention_over="time").eval()
    with torch.no_grad():
        out = model(torch.randn(2, TINY_SAMPLES))
        attention_logits = model.weak_head(out["frame_features"])
    assert torch.allclose(out["attention"], torch.softmax(attention_logits, dim=1), atol=1e-6)
    assert not torch.allclose(out["attention"].sum(-1), torch.ones(2, 6))  # not over classes


def test_sed_attention_default_is_the_public_codes_softmax_over_classes():
    torch.manual_seed(0)
    model = SEDTagger(tiny_cfg(), n_classes=3, input_sample_rate=8000, seq_len=6,
                      use_head_norm=False).eval()
    assert model.attention_over == "classes"
    with torch.no_grad():
        out = model(torch.randn(2, TINY_SAMPLES))
        per_frame = torch.softmax(model.weak_head(out["frame_features"]), dim=-1).clamp(1e-7, 1.0)
    assert torch.allclose(out["attention"], per_frame / per_frame.sum(1, keepdim=True), atol=1e-6)


def test_strong_targets_from_events():
    targets = strong_targets_from_events([(2, 1.0, 2.0), (0, 9.99, 10.0)], n_frames=10,
                                         duration_s=10.0, n_classes=3)
    assert targets[:, 2].tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert targets[:, 0].tolist() == [0] * 9 + [1]
    with pytest.raises(ValueError):
        strong_targets_from_events([(5, 0.0, 1.0)], n_classes=3)


# ----------------------------------------------------------------------------------------------
# Decoding and losses
# ----------------------------------------------------------------------------------------------
def test_decode_multilabel_threshold_min_and_max():
    probs = torch.tensor([
        [0.9, 0.1, 0.6, 0.2, 0.1],   # two above threshold
        [0.2, 0.4, 0.1, 0.3, 0.0],   # none above: the single best
        [0.7, 0.95, 0.8, 0.55, 0.6],  # five above: the three best
        [0.5, 0.1, 0.1, 0.1, 0.1],   # exactly at threshold counts
    ])
    multihot = decode_multilabel(probs)
    assert multihot.tolist() == [[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
    names = ("a", "b", "c", "d", "e")
    assert multihot_to_labels(multihot, names) == [["a", "c"], ["b"], ["a", "b", "c"], ["a"]]
    assert decode_multilabel(probs, min_labels=2)[1].tolist() == [0, 1, 0, 1, 0]
    assert decode_multilabel(probs, threshold=0.3, max_labels=1)[0].tolist() == [1, 0, 0, 0, 0]


def test_decode_slots_drops_silence_keeps_duplicates():
    logits = torch.full((2, 3, 19), -10.0)
    logits[0, 0, 15] = 5.0
    logits[0, 1, SILENCE_INDEX] = 5.0
    logits[0, 2, 15] = 5.0
    logits[1, :, SILENCE_INDEX] = 5.0
    decoded = decode_slots(logits)
    assert [label for label, _ in decoded[0]] == ["Speech", "Speech"]
    assert decoded[1] == []
    assert all(0.99 < confidence <= 1.0 for _, confidence in decoded[0])
    assert SLOT_CLASSES[SILENCE_INDEX] == "silence"
    assert slot_targets([["Speech"], ["Cough", "Cough", "Pour"]]).tolist() == [
        [15, SILENCE_INDEX, SILENCE_INDEX], [5, 5, 14]]
    with pytest.raises(ValueError, match="unknown label"):
        slot_targets([["Dog"]])


def test_pit_slot_ce_picks_the_right_order():
    targets = torch.tensor([[1, 2, 0]])
    logits = torch.full((1, 3, 4), -4.0)
    # output slot 0 predicts class 2, slot 1 class 0, slot 2 class 1 -> a permutation of targets
    logits[0, 0, 2] = logits[0, 1, 0] = logits[0, 2, 1] = 4.0
    loss, perm = pit_slot_ce(logits, targets, return_perm=True)
    assert perm.tolist() == [[2, 0, 1]]  # target slot j is matched with output slot perm[j]
    expected = torch.stack([F.cross_entropy(logits[0, perm[0, j]][None], targets[0, j][None])
                            for j in range(3)]).mean()
    assert torch.allclose(loss, expected.reshape(1))
    identity = F.cross_entropy(logits[0], targets[0])
    assert loss.item() < identity.item()
    one_hot = F.one_hot(targets, 4).float()
    assert torch.allclose(pit_slot_ce(logits, one_hot), loss)
    logits.requires_grad_(True)
    pit_slot_ce(logits, targets).sum().backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="class indices"):
        pit_slot_ce(logits, torch.tensor([[1, 2, 7]]))
    assert math.isfinite(loss.item())


def test_clear_errors_for_bad_input():
    model = M2DTagger2025(tiny_cfg(), n_classes=2)
    with pytest.raises(ValueError, match="ref_channel"):
        M2DTagger2025(tiny_cfg(), n_classes=2, ref_channel=3)(torch.randn(1, 2, TINY_SAMPLES))
    with pytest.raises(ValueError, match=r"\(B, L\) or \(B, C, L\)"):
        model(torch.randn(TINY_SAMPLES))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_m2d_pth(model, "/nonexistent/weights.pth")
    assert len(CLASSES) == 18
