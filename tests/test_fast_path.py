"""Fast training path on CPU: device-synthesis hook, speed switches, persistent workers, bench_train."""
import logging

import pytest
import torch
from torch import nn

from s5lib.bin.common import RecipeError
from s5lib.bin.train_separator import make_loss_step, make_train_data
from s5lib.data.synth import SynthConfig
from s5lib.models.factory import build_separator
from s5lib.train import TrainConfigError, Trainer
from s5lib.train.distributed import init_distributed
from s5lib.train.optim import build_optimizer
from s5lib.train.trainer import (EpochIndexedDataset, fused_step_unless_nonfinite,
                                 resolve_switch)

# a very small ResUNetK: cheap on 2 CPU cores, same code path as the full one
MICRO_SEPARATOR = {"type": "resunetk", "channels": [4, 4, 8, 8, 8, 8], "bottleneck_channels": 8,
                   "condition_size": 16, "n_fft": 128, "hop_length": 64}


@pytest.fixture(scope="module")
def bank_root(tmp_path_factory):
    from s5lib.data.soundbank import build_mini_soundbank
    root = str(tmp_path_factory.mktemp("bank") / "dev_set")
    build_mini_soundbank(root, seed=3, size="tiny")
    return root


def cpu_dist():
    return init_distributed("cpu")


def train_config(**overrides):
    config = dict(batch_size=2, max_steps=2, optimizer="sgd", lr=1e-2, device="cpu",
                  progress=False, resume=False, log_every=1, seed=0)
    config.update(overrides)
    return config


def train_separator_with(synthesis, bank_root, exp_dir):
    dataset, collate_fn, transform = make_train_data(
        synthesis, torch.device("cpu"), bank_root, "train", SynthConfig(year=2025),
        epoch_size=4, seed=5)
    torch.manual_seed(0)
    model = build_separator(MICRO_SEPARATOR)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, dataset, None,
                      make_loss_step("resunetk", "masked_multislot_neg_snr", {}, 1.0),
                      train_config(), str(exp_dir), collate_fn=collate_fn,
                      batch_transform=transform, dist_info=cpu_dist())
    summary = trainer.train()
    assert summary["step"] == 2
    return initial, trainer.model.state_dict()


def test_device_synthesis_transform_trains_like_cpu_synthesis(bank_root, tmp_path):
    """Raw items + synthesize_batch as batch_transform give the weights of CPU-synthesized items."""
    initial, cpu_weights = train_separator_with("cpu", bank_root, tmp_path / "cpu")
    _, device_weights = train_separator_with("device", bank_root, tmp_path / "device")
    changed = 0
    for name, value in cpu_weights.items():
        if value.is_floating_point():
            torch.testing.assert_close(device_weights[name], value, rtol=1e-4, atol=1e-6,
                                       msg=lambda m: f"{name}: {m}")
            changed += int(not torch.equal(value, initial[name]))
    assert changed > 10  # training really moved the weights (and BatchNorm statistics)


def test_make_train_data_choices(bank_root):
    dataset, collate_fn, transform = make_train_data(
        "auto", torch.device("cpu"), bank_root, "train", SynthConfig(), epoch_size=2, seed=0)
    assert collate_fn is None and transform is None  # auto on CPU: CPU synthesis
    with pytest.raises(RecipeError, match="synthesis must be one of"):
        make_train_data("gpu", torch.device("cpu"), bank_root, "train", SynthConfig(), 2, 0)


class IndexedData(torch.utils.data.Dataset):
    """Items drawn from (epoch, index), like the on-the-fly mixtures."""

    def __init__(self, size=8):
        self.size, self.epoch = size, 0

    def __len__(self):
        return self.size

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(1000 * self.epoch + int(index))
        x = torch.randn(2, 4, 16, generator=generator)
        return {"x": x, "y": x.flip(-1).tanh()}


def make_conv_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 3, padding=1))


def mse_step(model, batch):
    loss = nn.functional.mse_loss(model(batch["x"]), batch["y"])
    return loss, {}


def test_switches_fall_back_on_cpu(tmp_path, caplog):
    config = train_config(compile=True, fused_optimizer=True, pin_memory=True,
                          channels_last=True, optimizer="adamw", max_steps=1)
    with caplog.at_level(logging.WARNING, logger="s5lib.train.trainer"):
        trainer = Trainer(make_conv_model(), IndexedData(), None, mse_step, config, str(tmp_path),
                          dist_info=cpu_dist())
    for name in ("compile", "fused_optimizer", "pin_memory"):
        assert any(record.getMessage().startswith(f"{name}: true") for record in caplog.records), name
    assert not trainer.use_compile and not trainer.use_fused_optimizer and not trainer.pin_memory
    assert trainer.train_model is trainer.model
    assert not trainer.optimizer.param_groups[0].get("fused")
    assert trainer.data_loader().pin_memory is False
    # channels_last works on CPU
    assert trainer.use_channels_last
    weight = trainer.model[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    trainer.train()
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=False)
    assert all(value.is_contiguous() for value in state["model"].values())
    plain = make_conv_model()
    plain.load_state_dict(state["model"])
    torch.testing.assert_close(plain[0].weight, trainer.model[0].weight)


def test_auto_switches_are_off_on_cpu_without_warnings(tmp_path, caplog):
    config = train_config(compile="auto", fused_optimizer="auto", pin_memory="auto",
                          channels_last="auto")
    with caplog.at_level(logging.WARNING, logger="s5lib.train.trainer"):
        trainer = Trainer(make_conv_model(), IndexedData(), None, mse_step, config, str(tmp_path),
                          dist_info=cpu_dist())
    assert not caplog.records
    assert not (trainer.use_compile or trainer.use_channels_last or trainer.use_fused_optimizer
                or trainer.pin_memory)
    assert resolve_switch("compile", "auto", "cuda") and resolve_switch("channels_last", True, "cpu")
    with pytest.raises(TrainConfigError, match="compile must be true, false or auto"):
        train_config_obj = train_config(compile="yes")
        Trainer(make_conv_model(), IndexedData(), None, mse_step, train_config_obj, str(tmp_path),
                dist_info=cpu_dist())


def test_fused_step_skips_non_finite_updates_on_the_device():
    """The found_inf protocol: a non-finite norm leaves weights and state as they were."""
    def optimizer_for(param):
        return build_optimizer([{"params": [param]}], "adamw", lr=0.1, amsgrad=True, fused=True)

    param = nn.Parameter(torch.ones(3))
    optimizer = optimizer_for(param)
    param.grad = torch.full((3,), 2.0)
    skipped = fused_step_unless_nonfinite(optimizer, torch.tensor(float("nan")))
    assert float(skipped) == 1.0
    assert torch.equal(param.detach(), torch.ones(3))
    assert float(optimizer.state[param]["step"]) == 0.0
    assert not hasattr(optimizer, "found_inf")
    skipped = fused_step_unless_nonfinite(optimizer, torch.tensor(3.0))
    assert float(skipped) == 0.0
    reference = nn.Parameter(torch.ones(3))
    plain = build_optimizer([{"params": [reference]}], "adamw", lr=0.1, amsgrad=True)
    reference.grad = torch.full((3,), 2.0)
    plain.step()
    torch.testing.assert_close(param.detach(), reference.detach())
    with pytest.raises(TypeError, match="fused"):
        fused_step_unless_nonfinite(plain, torch.tensor(1.0))


def test_persistent_workers_see_every_epoch(tmp_path):
    """One loader for the whole run, workers kept: same weights as a loader per epoch."""
    def run(persistent, exp_dir):
        config = train_config(epochs=3, max_steps=None, num_workers=1, batch_size=2,
                              persistent_workers=persistent, prefetch_factor=1)
        trainer = Trainer(make_conv_model(), IndexedData(size=4), None, mse_step, config,
                          str(exp_dir), dist_info=cpu_dist())
        assert trainer.persistent_workers == persistent
        trainer.train()
        return trainer.model.state_dict()

    plain = run(False, tmp_path / "plain")
    persistent = run(True, tmp_path / "persistent")
    for name, value in plain.items():
        torch.testing.assert_close(persistent[name], value, rtol=0, atol=0)
    wrapped = EpochIndexedDataset(IndexedData())
    assert not torch.equal(wrapped[(2, 1)]["x"], IndexedData()[1]["x"])
    reference = IndexedData()
    reference.set_epoch(2)
    assert torch.equal(wrapped[(2, 1)]["x"], reference[1]["x"])


@pytest.mark.parametrize("synthesis", ["cpu", "device"])
def test_bench_train_prints_every_part(bank_root, tmp_path, capsys, synthesis):
    from s5lib.bin import bench_train
    bench_train.main(["--size", "tiny", "--steps", "1", "--warmup", "0", "--batch_size", "1",
                      "--segment_seconds", "0.5", "--num_workers", "0", "--parts", "a,b,c",
                      "--synthesis", synthesis, "--device", "cpu", "--bank_root", bank_root,
                      "--work_dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    expected = ["[setup] device cpu", "[a] train, model alone", "[b] data only",
                "[b] train, end to end", "[c] inference"]
    for prefix in expected:
        found = [line for line in lines if line.startswith(prefix)]
        assert len(found) == 1, (prefix, lines)
        if prefix.startswith("[setup]"):
            assert f"synthesis {synthesis}" in found[0] and "tiny ResUNetK" in found[0]
        elif prefix.startswith("[c]"):
            assert "RTF" in found[0] and "peak RSS" in found[0]
        else:
            assert "mixtures/s" in found[0] and "peak RSS" in found[0]
            assert float(found[0].split(": ", 1)[1].split()[0]) > 0


def test_bench_train_gpu_preset_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the preset would run")
    from s5lib.bin import bench_train
    with pytest.raises(RecipeError, match="CUDA is not available"):
        bench_train.main(["--preset", "gpu", "--work_dir", str(tmp_path)])
    with pytest.raises(RecipeError, match="parts"):
        bench_train.main(["--parts", "a,x", "--work_dir", str(tmp_path)])
