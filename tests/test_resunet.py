"""ResUNet30 separator: checkpoint layouts, loaders, STFT equivalence and tiny functional checks."""
import os

import pytest
import torch

from s5lib.models.checkpoints import (CheckpointError, audiosep_key_map, compare_state_dict,
                                      extract_state_dict, load_checkpoint_file, load_strict,
                                      read_reference_tsv, reference_parameter_count,
                                      unique_parameter_count)
from s5lib.models.resunet import (ResUNet30, ResUNetConfig, init_from_audiosep,
                                  load_resunet_checkpoint)
from s5lib.models.stft import ISTFT, STFT

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")
if not os.path.isdir(REFERENCE_DIR):
    REFERENCE_DIR = "/work/shared/reference"
needs_reference = pytest.mark.skipif(not os.path.isdir(REFERENCE_DIR),
                                     reason="shared/reference layouts not available")

FULL_SIZE = {
    "dcase2025_resunet.tsv": (ResUNetConfig.dcase2025_resunet, 29_869_523, 26_721_747),
    "dcase2025_resunetk.tsv": (ResUNetConfig.dcase2025_resunetk, 29_888_747, 26_740_971),
    "audiosep_resunet30.tsv": (ResUNetConfig.audiosep, 39_034_949, 26_447_941),
}


def tiny_config(**overrides):
    settings = dict(input_channels=2, output_channels=1, num_slots=1, label_len=5, condition_size=16,
                    n_fft=128, hop_length=32, channels=(4, 4, 8, 8, 8, 8), bottleneck_channels=8)
    settings.update(overrides)
    return ResUNetConfig(**settings)


def one_hot(batch, label_len, index):
    condition = torch.zeros(batch, label_len)
    condition[:, index] = 1.0
    return condition


def zero_checkpoint(rows, prefix):
    """A Lightning-style checkpoint holding zero tensors of the reference shapes and dtypes."""
    return {"state_dict": {prefix + key: torch.zeros(shape, dtype=getattr(torch, dtype))
                           for key, (shape, dtype) in rows.items()},
            "epoch": 3, "global_step": 1000}


# ----------------------------------------------------------------------------------------------
# Checkpoint compatibility with the reference layouts
# ----------------------------------------------------------------------------------------------
@needs_reference
@pytest.mark.parametrize("tsv_name", sorted(FULL_SIZE))
def test_state_dict_matches_reference(tsv_name):
    make_config, params, trainable = FULL_SIZE[tsv_name]
    rows, meta = read_reference_tsv(os.path.join(REFERENCE_DIR, tsv_name))
    model = ResUNet30(make_config())
    missing, unexpected, mismatched = compare_state_dict(model.state_dict(), rows)
    assert missing == [] and unexpected == [] and mismatched == []
    assert unique_parameter_count(model) == reference_parameter_count(meta) == params
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    assert sum(1 for key in rows if key.startswith("film.")) == 76


@needs_reference
@pytest.mark.parametrize("tsv_name", ["dcase2025_resunet.tsv", "dcase2025_resunetk.tsv"])
def test_lightning_checkpoint_loads_strictly(tsv_name, tmp_path):
    make_config, _, _ = FULL_SIZE[tsv_name]
    rows, _ = read_reference_tsv(os.path.join(REFERENCE_DIR, tsv_name))
    path = tmp_path / "resunet.ckpt"
    torch.save(zero_checkpoint(rows, "model."), path)
    model = ResUNet30(make_config())
    load_resunet_checkpoint(model, str(path))
    assert torch.count_nonzero(model.base.encoder_block3.conv_block1.conv1.weight) == 0
    assert torch.count_nonzero(model.film.get_submodule("decoder_block3->conv_block2->beta1").weight) == 0
    assert torch.count_nonzero(model.label_embedding[0].weight) == 0


@needs_reference
def test_corrupted_checkpoint_names_keys_and_file(tmp_path):
    rows, _ = read_reference_tsv(os.path.join(REFERENCE_DIR, "dcase2025_resunet.tsv"))
    checkpoint = zero_checkpoint(rows, "model.")
    del checkpoint["state_dict"]["model.base.bn0.running_var"]
    checkpoint["state_dict"]["model.base.extra_layer.weight"] = torch.zeros(3)
    checkpoint["state_dict"]["model.label_embedding.0.weight"] = torch.zeros(512, 54)
    path = tmp_path / "broken.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as error:
        load_resunet_checkpoint(ResUNet30(ResUNetConfig.dcase2025_resunet()), str(path))
    message = str(error.value)
    assert "broken.ckpt" in message
    assert "base.bn0.running_var" in message and "missing" in message
    assert "base.extra_layer.weight" in message and "unexpected" in message
    assert "label_embedding.0.weight" in message and "[512, 54]" in message


def test_missing_and_corrupt_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint_file(tmp_path / "nowhere.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.ckpt"):
        load_checkpoint_file(corrupt)
    with pytest.raises(CheckpointError, match="not a ResUNet30 checkpoint"):
        torch.save({"state_dict": {"model.foo": torch.zeros(1)}}, tmp_path / "other.ckpt")
        load_resunet_checkpoint(ResUNet30(tiny_config()), str(tmp_path / "other.ckpt"))


def test_extract_state_dict_prefix_rules():
    tensor = torch.zeros(1)
    lightning = {"state_dict": {"model.a": tensor, "model.b": tensor}, "epoch": 1}
    assert set(extract_state_dict(lightning)) == {"a", "b"}
    evar = {"model": {"module.x": tensor, "other": tensor}}
    assert set(extract_state_dict(evar, prefixes=("module.",))) == {"x"}
    assert set(extract_state_dict(evar, prefixes=("module.",), keep_unprefixed=True)) == {"x", "other"}
    assert set(extract_state_dict({"w": tensor}, prefixes=("model.",))) == {"w"}
    with pytest.raises(CheckpointError):
        extract_state_dict({"epoch": 3})


@needs_reference
def test_audiosep_checkpoint_layout_loads(tmp_path):
    rows, _ = read_reference_tsv(os.path.join(REFERENCE_DIR, "audiosep_resunet30.tsv"))
    checkpoint = zero_checkpoint(rows, "ss_model.")
    checkpoint["state_dict"]["query_encoder.model.text_branch.pooler.dense.weight"] = torch.zeros(4, 4)
    path = tmp_path / "audiosep_base_4M_steps.ckpt"
    torch.save(checkpoint, path)
    model = ResUNet30(ResUNetConfig.audiosep())
    weights = extract_state_dict(load_checkpoint_file(path), prefixes=(), source=path)
    load_strict(model, weights, source=path, rename=audiosep_key_map)
    assert torch.count_nonzero(model.base.bn0.weight) == 0
    assert model.label_embedding is None and model.base.out_conv is None


@needs_reference
def test_init_from_audiosep_adapts_channels(tmp_path):
    rows, _ = read_reference_tsv(os.path.join(REFERENCE_DIR, "audiosep_resunet30.tsv"))
    generator = torch.Generator().manual_seed(0)
    weights = {"ss_model." + key: (torch.randn(shape, generator=generator) if dtype == "float32"
                                   else torch.zeros(shape, dtype=torch.int64))
               for key, (shape, dtype) in rows.items()}
    weights["query_encoder.model.audio_branch.x"] = torch.zeros(2)
    path = tmp_path / "audiosep.ckpt"
    torch.save({"state_dict": weights}, path)
    # CP-JKU separator: 4 channels, 3 slots, STFT 2048/160 (same kernels as AudioSep's 2048/320).
    model = ResUNet30(ResUNetConfig.dcase2025_resunetk(n_fft=2048, hop_length=160))
    embedding_before = model.label_embedding[0].weight.clone()
    report = init_from_audiosep(model, str(path))
    assert set(report["adapted"]) == {"base.pre_conv.weight", "base.after_conv.weight",
                                      "base.after_conv.bias"}
    source_pre = weights["ss_model.base.pre_conv.weight"]
    assert torch.allclose(model.base.pre_conv.weight, source_pre.repeat(1, 4, 1, 1) / 4)
    assert torch.equal(model.base.after_conv.bias, weights["ss_model.base.after_conv.bias"].repeat(12))
    film_key = "film.decoder_block3->conv_block2->beta1.weight"
    assert torch.equal(model.state_dict()[film_key], weights["ss_model." + film_key])
    assert torch.equal(model.label_embedding[0].weight, embedding_before)
    assert "label_embedding.0.weight" in report["not_in_checkpoint"]
    assert "base.out_conv.weight" in report["not_in_checkpoint"]
    with pytest.raises(CheckpointError, match="shape mismatches"):
        init_from_audiosep(ResUNet30(ResUNetConfig.dcase2025_resunet()), str(path))  # n_fft 1024


def test_init_from_audiosep_rejects_other_files(tmp_path):
    path = tmp_path / "m2d.ckpt"
    torch.save({"state_dict": {"model.encoder.weight": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not an AudioSep checkpoint"):
        init_from_audiosep(ResUNet30(tiny_config()), str(path))


# ----------------------------------------------------------------------------------------------
# STFT / iSTFT
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_fft,hop,win", [(128, 32, None), (256, 40, 200)])
def test_stft_matches_kernel_formulation(n_fft, hop, win):
    torch.manual_seed(0)
    stft, istft = STFT(n_fft, hop, win), ISTFT(n_fft, hop, win)
    waveform = torch.randn(3, 2, 1001)
    real, imag = stft(waveform)
    real_k, imag_k = stft.forward_with_kernels(waveform)
    assert real.shape == (3, 2, 1001 // hop + 1, n_fft // 2 + 1)
    scale = real.abs().max()
    assert torch.allclose(real, real_k, atol=1e-5 * scale) and torch.allclose(imag, imag_k, atol=1e-5 * scale)
    # Any spectrum (not only a consistent one) must give the same inverse.
    spec_real, spec_imag = torch.randn_like(real), torch.randn_like(imag)
    inverse = istft(spec_real, spec_imag, 1001)
    inverse_k = istft.forward_with_kernels(spec_real, spec_imag, 1001)
    assert inverse.shape == (3, 2, 1001)
    assert torch.allclose(inverse, inverse_k, atol=1e-5)
    assert torch.allclose(istft(real, imag, 1001), waveform, atol=1e-4)


def test_stft_kernels_are_frozen_parameters():
    stft, istft = STFT(128, 32), ISTFT(128, 32)
    assert [name for name, _ in stft.named_parameters()] == ["conv_real.weight", "conv_imag.weight"]
    assert not any(p.requires_grad for p in list(stft.parameters()) + list(istft.parameters()))
    assert set(istft.state_dict()) == {"ola_window", "conv_real.weight", "conv_imag.weight"}
    assert torch.allclose(istft.ola_window, torch.hann_window(128) ** 2)


# ----------------------------------------------------------------------------------------------
# Functional checks on tiny models
# ----------------------------------------------------------------------------------------------
def set_identity_masks(model):
    """Force every mask to pass the mixture through and out_conv to pick channel 0."""
    cfg = model.config
    per_map = {"mag_phase": [30.0, 1.0, 0.0], "real_imag": [1.0, 1.0], "complex": [1.0, 0.0]}
    bias = torch.tensor(per_map[cfg.mask_type]).repeat(cfg.num_slots * model.base.mask_channels)
    with torch.no_grad():
        model.base.after_conv.weight.zero_()
        model.base.after_conv.bias.copy_(bias)
        if model.base.out_conv is not None:
            model.base.out_conv.weight.zero_()
            model.base.out_conv.weight[0, 0] = 1.0
            model.base.out_conv.bias.zero_()


@pytest.mark.parametrize("mask_type", ["mag_phase", "real_imag", "complex"])
def test_identity_mask_reproduces_channel_zero(mask_type):
    torch.manual_seed(0)
    model = ResUNet30(tiny_config(mask_type=mask_type, num_slots=2, label_len=10))
    set_identity_masks(model)
    mixture = torch.randn(3, 2, 900)
    condition = one_hot(3, 10, [1, 7])
    with torch.no_grad():
        output = model(mixture, condition)
    assert output.shape == (3, 2, 900)
    # The U-Net never sees the Nyquist bin (as upstream): its mask maps are zero-padded, so the
    # output lacks it. Reference: channel 0 with the Nyquist bin removed, via torch's own STFT.
    window = torch.hann_window(128)
    spec = torch.stft(mixture[:, 0], 128, 32, window=window, return_complex=True)
    spec[:, -1, :] = 0
    reference = torch.istft(spec, 128, 32, window=window, length=900)
    assert (reference - mixture[:, 0]).abs().max() > 1e-2   # the Nyquist bin does matter here
    for slot in range(2):
        assert torch.allclose(output[:, slot], reference, atol=1e-4)


def test_output_shapes_and_variants():
    torch.manual_seed(0)
    mixture = torch.randn(2, 2, 700)
    for config in (tiny_config(), tiny_config(num_slots=3, label_len=15),
                   tiny_config(output_channels=2, label_len=5),
                   tiny_config(input_channels=1, channel_mix=False, use_label_embedding=False,
                               label_len=16, zero_silent_slots=False),
                   tiny_config(mask_type="complex", ratio_mask_bound=2.0),
                   tiny_config(width=2.0)):
        model = ResUNet30(config)
        batch_mixture = mixture[:, :config.input_channels]
        condition = torch.rand(2, config.label_len) + 0.1
        output = model(batch_mixture, condition)
        expected = (2, config.num_slots, 700) if config.output_channels == 1 else (2, config.num_slots, 2, 700)
        assert output.shape == expected
        assert torch.isfinite(output).all()
    assert ResUNet30(tiny_config(width=2.0)).base.pre_conv.out_channels == 8


def test_gradients_flow_to_trainable_parts_only():
    torch.manual_seed(0)
    model = ResUNet30(tiny_config(num_slots=2, label_len=10))
    output = model(torch.randn(2, 2, 640), one_hot(2, 10, [0, 6]))
    output.square().mean().backward()
    for name in ("base.pre_conv.weight", "base.encoder_block6.conv_block1.conv1.weight",
                 "base.decoder_block6.conv_block2.conv2.weight", "base.after_conv.weight",
                 "base.out_conv.weight", "label_embedding.0.weight",
                 "film.encoder_block1->conv_block1->beta1.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.base.stft.conv_real.weight.grad is None
    assert model.base.decoder_block1.bn2.weight.grad is None   # the unused upstream BatchNorm


def test_condition_changes_output_and_silent_slots_are_zero():
    torch.manual_seed(0)
    model = ResUNet30(tiny_config(num_slots=2, label_len=10)).eval()
    mixture = torch.randn(1, 2, 640)
    with torch.no_grad():
        first = model(mixture, one_hot(1, 10, [0, 6]))
        second = model(mixture, one_hot(1, 10, [2, 9]))
        silent = model(mixture, one_hot(1, 10, [3]))
    assert (first - second).abs().max() > 1e-4
    assert silent[0, 1].abs().max() == 0 and silent[0, 0].abs().max() > 0


def test_extra_film_bias_is_added_and_resampled():
    torch.manual_seed(0)
    model = ResUNet30(tiny_config()).eval()
    mixture, condition = torch.randn(2, 2, 640), one_hot(2, 5, [1])
    name = "encoder_block2->conv_block1->beta2"
    width = model.film.get_submodule(name).out_features
    with torch.no_grad():
        plain = model(mixture, condition)
        zero = model(mixture, condition, extra_film={name: torch.zeros(2, width, 7, 1)})
        shifted = model(mixture, condition, extra_film={name: torch.randn(2, width, 7)})
    assert torch.allclose(plain, zero)
    assert (plain - shifted).abs().max() > 1e-5
    assert name in model.film_names() and len(model.film_names()) == 38


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    model = ResUNet30(tiny_config()).eval()
    mixture, condition = torch.randn(2, 2, 640), one_hot(2, 5, [4])
    with torch.no_grad():
        reference = model(mixture, condition)
        model_cl = ResUNet30(tiny_config(channels_last=True)).eval()
        model_cl.load_state_dict(model.state_dict())
        assert model_cl.base.pre_conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(model_cl(mixture, condition), reference, atol=1e-5)


def test_bad_inputs_and_configs_raise_clear_errors():
    model = ResUNet30(tiny_config())
    with pytest.raises(ValueError, match="mixture must be"):
        model(torch.randn(2, 3, 640), one_hot(2, 5, [0]))
    with pytest.raises(ValueError, match="condition must be"):
        model(torch.randn(2, 2, 640), one_hot(2, 4, [0]))
    with pytest.raises(ValueError, match="mask_type"):
        tiny_config(mask_type="phase_only")
    with pytest.raises(ValueError, match="n_fft"):
        tiny_config(n_fft=100)
    with pytest.raises(ValueError, match="multiple of num_slots"):
        tiny_config(num_slots=2, label_len=5)
