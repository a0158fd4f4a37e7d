"""The tagger's clip-pooling switch and the quick-start tagger recipe (issue 10, tagger half).

``pooling: mean`` is the released taggers' pooling and stays the default; ``max`` and
``mean_max`` pool over time after averaging the frequency patches and add no weights, so every
choice keeps the reference layouts. The recipe tests check that ``egs/baseline/conf/tagger.yaml``
builds a tagger for both years and that its data pool keeps what the loss and the validation read.
"""
import copy
import os

import pytest
import torch
import torch.nn.functional as F
import yaml

from s5lib import constants
from s5lib.bin.common import target_labels
from s5lib.bin.common import RecipeError
from s5lib.bin.train_tagger import (apply_model_by_type, loss_keys, make_loss_step,
                                     make_valid_fn, tagger_feature_fn, tagger_loss)
from s5lib.infer.tag import check_decode, decode_outputs
from s5lib.metrics import labels_match_multiset, labels_match_set, source_label_counts
from s5lib.models.factory import build_tagger, load_model_file
from s5lib.models.tagger import (POOLINGS, M2DTagger2025, M2DTagger2026, M2DTagger2026Spatial,
                                 _pool_tokens, augment_log_mel, check_augment, slot_presence_bce)
from s5lib.models.m2d import M2DConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_TAGGER = os.path.join(REPO, "egs", "baseline", "conf", "tagger.yaml")
TINY = dict(embed_dim=16, depth=1, num_heads=2, input_frames=101)  # 1 s chunks at 32 kHz


def tiny_cfg(**overrides):
    return M2DConfig(**dict(TINY, **overrides))


def test_pool_tokens_values_on_a_hand_made_grid():
    grid = torch.zeros(1, 4, 2, 3)  # (B, T', F', D)
    grid[0, 1, 0] = torch.tensor([8.0, 0.0, -4.0])  # one short event at time step 1, band 0
    grid[0, 3, 1] = torch.tensor([0.0, 2.0, 0.0])
    mean = _pool_tokens(grid, True, "mean")
    assert torch.allclose(mean, grid.mean(dim=(1, 2)))  # the released pooling, unchanged
    frames = grid.mean(2)  # (1, 4, 3): per time step, the mean over the frequency patches
    assert torch.allclose(frames[0, 1], torch.tensor([4.0, 0.0, -2.0]))
    assert torch.allclose(_pool_tokens(grid, True, "max"), torch.tensor([[4.0, 1.0, 0.0]]))
    assert torch.allclose(_pool_tokens(grid, True, "mean_max"),
                          frames.mean(1) + torch.tensor([[4.0, 1.0, 0.0]]))
    # the short event: the max keeps its full per-frame value, the clip mean divides it by T'
    assert _pool_tokens(grid, True, "max")[0, 0] == 4 * frames.mean(1)[0, 0]
    # stacked (non-flat) features: the frame features (B, T', F'*D) pooled over time
    stacked = _pool_tokens(grid, False, "max")
    assert stacked.shape == (1, 6)
    assert torch.allclose(stacked, grid.flatten(2).amax(1))
    assert torch.allclose(_pool_tokens(grid, False, "mean"), grid.flatten(2).mean(1))


@pytest.mark.parametrize("cls", [M2DTagger2025, M2DTagger2026, M2DTagger2026Spatial])
def test_pooling_keeps_the_layout_and_mean_is_the_default(cls):
    torch.manual_seed(0)
    default = cls(tiny_cfg())
    assert default.pooling == "mean"
    layout = {k: tuple(v.shape) for k, v in default.state_dict().items()}
    for pooling in POOLINGS:
        other = cls(tiny_cfg(), pooling=pooling)
        assert {k: tuple(v.shape) for k, v in other.state_dict().items()} == layout
        other.load_state_dict(default.state_dict())  # strict: the same keys and shapes


@pytest.mark.parametrize("cls", [M2DTagger2025, M2DTagger2026, M2DTagger2026Spatial])
def test_unknown_pooling_is_refused(cls):
    with pytest.raises(ValueError, match="pooling must be one of"):
        cls(tiny_cfg(), pooling="attention")


def test_2025_forward_uses_the_chosen_pooling():
    torch.manual_seed(0)
    model = M2DTagger2025(tiny_cfg(), pooling="mean_max").eval()
    wave = torch.randn(2, 4, 32000)
    grid, _ = model.encode_waveform_grid(wave[:, 0])
    features = grid.mean(2).mean(1) + grid.mean(2).amax(1)
    assert torch.allclose(model.clip_features(wave), features, atol=1e-6)
    assert torch.allclose(model(wave), model.head(model.head_norm(features)), atol=1e-5)
    mean_model = M2DTagger2025(tiny_cfg()).eval()
    mean_model.load_state_dict(model.state_dict())
    assert not torch.allclose(mean_model.clip_features(wave), features, atol=1e-3)


def test_spatial_pooling_concatenates_channels_per_time_step():
    torch.manual_seed(0)
    model = M2DTagger2026Spatial(tiny_cfg(), pooling="max").eval()
    wave = torch.randn(2, 4, 32000)
    grids = [model.m2d.encode_waveform_grid(wave[:, c])[0] for c in range(4)]  # (B, T', F', D)
    frames = torch.cat([g.mean(2) for g in grids], dim=-1)  # (B, T', 4*D), channel-major
    assert torch.allclose(model(wave), model.head(frames.amax(1)), atol=1e-5)
    stacked = M2DTagger2026Spatial(tiny_cfg(), pooling="max", flat_features=False).eval()
    grids = [stacked.m2d.encode_waveform_grid(wave[:, c])[0].flatten(2) for c in range(4)]
    assert torch.allclose(stacked(wave), stacked.head(torch.cat(grids, -1).amax(1)), atol=1e-5)


def test_a_saved_pooled_tagger_reloads_with_its_pooling(tmp_path):
    torch.manual_seed(0)
    cfg = {"type": "m2d_2025", "m2d": dict(TINY, patch_size=[80, 8]), "pooling": "max"}
    model = build_tagger(cfg).eval()
    path = tmp_path / "tagger.pt"
    torch.save(model.state_dict(), path)
    loaded, _, _ = load_model_file(str(path), "tagger", model_cfg=cfg)
    assert loaded.pooling == "max"
    wave = torch.randn(1, 4, 32000)
    assert torch.allclose(loaded(wave), model(wave))


def recipe_config():
    with open(RECIPE_TAGGER) as handle:
        return yaml.safe_load(handle)


def fake_batch(year, batch=2, seconds=10):
    """Items with what the pool keeps: 2025 two and one targets; 2026 an empty mixture and a
    same-class duplicate (slot indices padded with silence)."""
    rows = [[], [3, 3]] if year == 2026 else [[0, 5], [7]]
    label_index = torch.full((batch, constants.MAX_TARGETS), constants.SILENCE_INDEX)
    label_vector = torch.zeros(batch, constants.N_CLASSES)
    for b, row in enumerate(rows):
        label_index[b, :len(row)] = torch.tensor(row, dtype=torch.long)
        label_vector[b, row] = 1.0
    return {"mixture": torch.randn(batch, 1, seconds * constants.SAMPLE_RATE) * 0.01,
            "label_vector": label_vector, "label_index": label_index,
            "n_targets": torch.tensor([len(row) for row in rows])}


def test_recipe_pool_keeps_what_the_losses_and_validation_read():
    cfg = recipe_config()
    pool = cfg["pool"]
    assert pool["channels"] == [0]  # the 1-channel taggers read channel 0 only
    assert {"mixture", "label_vector", "label_index", "n_targets"} <= set(pool["keys"])
    # the pool serves len = epoch_size items per epoch; the updates are capped by max_steps
    assert (cfg["train"]["epochs"] * cfg["epoch_size"]
            >= cfg["train"]["max_steps"] * cfg["train"]["batch_size"])
    # a new pool every refresh_epochs epochs: each rendered mixture is served a few times only
    if pool.get("refresh_epochs"):
        assert cfg["train"]["epochs"] >= 2 * pool["refresh_epochs"]


@pytest.mark.parametrize("year,kind", [(2025, "m2d_2025"), (2026, "m2d_2026")])
def test_recipe_tagger_builds_and_trains_a_step_for_both_years(year, kind):
    cfg = recipe_config()
    assert cfg["model"]["type"] is None  # the year picks the head
    cfg["model"]["type"] = kind
    apply_model_by_type(cfg)  # as train_tagger does once the year is known
    model_cfg = cfg["model"]
    torch.manual_seed(0)
    model = build_tagger(model_cfg)
    assert model.kind == kind and model.pooling == cfg["model"]["pooling"]
    assert model.cfg.patch_size == tuple(cfg["model"]["m2d"]["patch_size"])
    batch = fake_batch(year)
    expected = [[], [constants.CLASSES[3]] * 2] if year == 2026 else [
        [constants.CLASSES[0], constants.CLASSES[5]], [constants.CLASSES[7]]]
    assert target_labels(batch) == expected  # what the validation compares with
    loss, _ = make_loss_step(kind)(model, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grad = model.backbone.patch_embed.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_model_by_type_merges_for_its_type_only():
    base = {"model": {"type": "m2d_2026", "pooling": "mean", "m2d": {"depth": 3}},
            "model_by_type": {"m2d_2026": {"track_input_dim": 64, "m2d": {"embed_dim": 48}},
                              "m2d_2025": {"pooling": "max"}}}
    cfg = copy.deepcopy(base)
    apply_model_by_type(cfg)
    assert cfg["model"] == {"type": "m2d_2026", "pooling": "mean", "track_input_dim": 64,
                            "m2d": {"depth": 3, "embed_dim": 48}}
    model = build_tagger(dict(cfg["model"], m2d=dict(TINY, patch_size=[80, 8])))
    assert model.head.track_input_dim == 64
    cfg = copy.deepcopy(base)
    cfg["model"]["type"] = "m2d_2025"
    apply_model_by_type(cfg)
    assert cfg["model"]["pooling"] == "max" and "track_input_dim" not in cfg["model"]
    with pytest.raises(RecipeError, match="m2d_2027"):
        apply_model_by_type(dict(copy.deepcopy(base), model_by_type={"m2d_2027": {}}))


@pytest.mark.parametrize("year,kind", [(2025, "m2d_2025"), (2026, "m2d_2026")])
def test_validation_reports_accuracies_and_the_training_loss(year, kind):
    torch.manual_seed(0)
    extra = {"track_input_dim": 32} if kind == "m2d_2026" else {}
    model = build_tagger({"type": kind, "m2d": dict(TINY, patch_size=[80, 8]), **extra}).eval()
    batch = fake_batch(year, seconds=1)
    items = [{key: value[b] for key, value in batch.items()} for b in range(2)]
    decode = check_decode(kind, {})
    with torch.no_grad():
        metrics = make_valid_fn(items, 2, 10, year, decode)(model)
        logits = model(batch["mixture"])
        loss = tagger_loss(kind, logits, batch)
        predicted = [[label for label, _ in row] for row in decode_outputs(model, logits, **decode)]
    assert metrics["valid_loss"] == pytest.approx(float(loss.mean()), rel=1e-6)
    counts = [source_label_counts(p, r) for p, r in zip(predicted, target_labels(batch))]
    tp, fp, fn = (sum(c[i] for c in counts) for i in range(3))
    assert tp + fp + fn > 0
    assert metrics["valid_source_accuracy"] == pytest.approx(100.0 * tp / (tp + fp + fn))
    match = labels_match_set if year == 2025 else labels_match_multiset
    hits = [match(p, r) for p, r in zip(predicted, target_labels(batch))]
    assert metrics["valid_accuracy"] == pytest.approx(100.0 * sum(hits) / 2)
    # without the labels the loss reads, there is no valid_loss (the accuracies remain)
    key = "label_vector" if year == 2025 else "label_index"
    if year == 2025:  # (2026's accuracies read label_index themselves)
        stripped = [{k: v for k, v in item.items() if k != key} for item in items]
        with torch.no_grad():
            assert "valid_loss" not in make_valid_fn(stripped, 2, 10, year, decode)(model)


@pytest.mark.parametrize("kind", ["m2d_2025", "m2d_2026"])
def test_a_tagger_fed_its_log_mel_gives_its_waveform_outputs_and_loss(kind):
    """What a feature pool serves (``features``) trains the tagger exactly as the mixture."""
    torch.manual_seed(0)
    extra = {"track_input_dim": 32} if kind == "m2d_2026" else {}
    model = build_tagger({"type": kind, "m2d": dict(TINY, patch_size=[80, 8]), **extra})
    batch = fake_batch(2026 if kind == "m2d_2026" else 2025, seconds=1)
    features = tagger_feature_fn(model)(batch["mixture"])
    assert features.shape[:3] == (2, 1, model.cfg.n_mels)
    assert torch.equal(features, model.normalized_log_mel(batch["mixture"][:, 0]))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(log_mel=features), model(batch["mixture"]))
    model.train()
    step = make_loss_step(kind)
    from_wave, _ = step(model, batch)
    from_features, _ = step(model, {**{k: v for k, v in batch.items() if k != "mixture"},
                                    "features": features})
    assert torch.equal(from_wave, from_features)
    with pytest.raises(ValueError, match="not both"):
        model(batch["mixture"], log_mel=features)
    with pytest.raises(ValueError, match="neither"):
        model()
    # a tagger that reads the waveform itself has no features for a pool to keep
    assert tagger_feature_fn(M2DTagger2026Spatial(tiny_cfg())) is None


def test_slot_presence_bce_is_the_bce_of_the_implied_class_presence():
    torch.manual_seed(0)
    logits = torch.randn(3, 3, constants.N_CLASSES + 1, requires_grad=True)
    labels = torch.zeros(3, constants.N_CLASSES)
    labels[0, [2, 5]] = 1.0
    labels[2, 7] = 1.0  # row 1: an empty mixture
    probs = torch.softmax(logits, -1)[..., :constants.N_CLASSES]
    presence = 1 - (1 - probs).prod(1)
    expected = F.binary_cross_entropy(presence, labels, reduction="none").mean(-1)
    loss = slot_presence_bce(logits, labels)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.sum().backward()
    assert logits.grad.abs().sum() > 0
    # the loss falls when the slots name the present classes
    confident = torch.full((1, 3, constants.N_CLASSES + 1), -8.0)
    confident[0, 0, 2] = confident[0, 1, 5] = confident[0, 2, constants.SILENCE_INDEX] = 8.0
    wrong = confident.clone()
    wrong[0, 0, 2], wrong[0, 0, 9] = -8.0, 8.0
    assert slot_presence_bce(confident, labels[:1]) < 0.01 < slot_presence_bce(wrong, labels[:1])


def test_presence_weight_adds_the_presence_bce_and_needs_the_label_vector():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, constants.N_CLASSES + 1)
    batch = fake_batch(2026, seconds=1)
    plain = tagger_loss("m2d_2026", logits, batch)
    both = tagger_loss("m2d_2026", logits, batch, presence_weight=0.5)
    assert torch.allclose(both, plain + 0.5 * slot_presence_bce(logits, batch["label_vector"]))
    assert loss_keys("m2d_2026") == ("label_index",)
    assert set(loss_keys("m2d_2026", 0.5)) == {"label_index", "label_vector"}


def test_log_mel_augmentation_shifts_and_masks_each_row():
    ramp = torch.arange(80.0).reshape(1, 1, 80, 1).repeat(64, 1, 1, 30)
    torch.manual_seed(0)
    shifted = augment_log_mel(ramp, freq_shift=3)
    moves = shifted[:, 0, 40, 0] - 40  # the band that holds 40 after a shift of s holds 40 - s
    assert set(moves.tolist()) <= {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0} and len(set(moves.tolist())) > 3
    for row, move in zip(shifted[:, 0, :, 0], moves.tolist()):
        shift = -int(move)
        assert torch.equal(row, (torch.arange(80.0) - shift).clamp(0, 79))  # edges repeated
        assert torch.equal(shifted[0, 0, :, 0], shifted[0, 0, :, 29])      # same in every frame
    masked = augment_log_mel(torch.ones(64, 1, 80, 100), n_freq_masks=2, freq_mask=8,
                             n_time_masks=1, time_mask=20)
    zero_bands = (masked[:, 0] == 0).all(dim=2).sum(dim=1)
    zero_frames = (masked[:, 0] == 0).all(dim=1).sum(dim=1)
    assert zero_bands.max() <= 16 and zero_frames.max() <= 20 and zero_bands.float().mean() > 2
    assert set(masked.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(augment_log_mel(ramp), ramp)  # nothing asked, nothing changed
    assert check_augment({"freq_shift": 2})["time_mask"] == 0
    with pytest.raises(ValueError, match="unknown key"):
        check_augment({"pitch": 2})
    with pytest.raises(ValueError, match="non-negative integer"):
        check_augment({"time_mask": -1})


def test_the_augmented_loss_step_reads_the_features_or_computes_them():
    torch.manual_seed(0)
    model = build_tagger({"type": "m2d_2026", "track_input_dim": 32,
                          "m2d": dict(TINY, patch_size=[80, 8])}).eval()
    batch = fake_batch(2026, seconds=1)
    features = model.input_features(batch["mixture"])
    augment = check_augment({"freq_shift": 2, "n_time_masks": 1, "time_mask": 10})
    step = make_loss_step("m2d_2026", augment=augment)
    torch.manual_seed(3)
    from_wave, _ = step(model, batch)
    torch.manual_seed(3)
    from_features, _ = step(model, {**batch, "features": features})
    torch.manual_seed(3)
    by_hand = tagger_loss("m2d_2026", model(log_mel=augment_log_mel(features, **augment)),
                          batch).mean()
    assert torch.equal(from_wave, from_features) and torch.equal(from_wave, by_hand)
    assert not torch.equal(from_wave, make_loss_step("m2d_2026")(model, batch)[0])
