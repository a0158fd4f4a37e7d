"""Trainer: DDP equivalence, exact resume, atomic checkpoints, schedules and parameter groups.

Run as a script (``torchrun --nproc_per_node 2 tests/test_trainer.py EXP_DIR``) it is the worker
of the 2-process DDP test.
"""
import logging
import math
import os
import random
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from s5lib.train import (CheckpointError, LrFactor, StepBatchSampler, TrainConfig,
                         TrainConfigError, Trainer, build_param_groups, build_scheduler,
                         load_latest, load_model_weights, read_checkpoint)
from s5lib.train import checkpoint as ckpt
from s5lib.train.trainer import (RESUME_IGNORED_KEYS, convert_sync_batchnorm,
                                 resolve_sync_batchnorm)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class IndexedRandomData(torch.utils.data.Dataset):
    """Item i of epoch e is drawn from a generator seeded by (e, i) alone (like on-the-fly mixes)."""

    def __init__(self, size=24, length=32):
        self.size, self.length, self.epoch = size, length, 0
        self.kernel = torch.tensor([[[0.5, -1.0, 0.25]]])

    def __len__(self):
        return self.size

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(1000 * self.epoch + int(index))
        x = torch.randn(1, self.length, generator=generator)
        y = torch.nn.functional.conv1d(x.unsqueeze(0), self.kernel, padding=1)[0]
        return {"x": x, "y": torch.tanh(y)}


def make_model(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.Tanh(), nn.Dropout(dropout),
                         nn.Conv1d(4, 1, 3, padding=1))


def mse_step(model, batch):
    loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
    return loss, {"mse": loss}


def make_valid_fn(history=None):
    data = IndexedRandomData(size=4)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])

    def valid_fn(model):
        value = -torch.nn.functional.mse_loss(model(batch["x"]), batch["y"]).item()
        if history is not None:
            history.append(value)
        return {"neg_mse": value}
    return valid_fn


def base_config(**overrides):
    config = dict(batch_size=4, max_steps=8, steps_per_epoch=3, lr=1e-2, scheduler="warmup_cosine",
                  warmup_steps=2, grad_clip=0.5, amsgrad=True, log_every=2, progress=False,
                  valid_every_epochs=None, device="cpu", seed=3)
    config.update(overrides)
    return config


# ---------------------------------------------------------------------------- DDP equivalence
def make_bn_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.Tanh(),
                         nn.Conv1d(4, 1, 3, padding=1))


def _ddp_worker(exp_dir, mode="plain"):
    torch.set_num_threads(1)
    from s5lib.train import cleanup_distributed, init_distributed
    dist_info = init_distributed("cpu")
    assert dist_info.world_size == 2
    if mode == "syncbn":  # sync_batchnorm asked for on CPU / gloo: plain BatchNorm, a warning
        trainer = Trainer(make_bn_model(), IndexedRandomData(), None, mse_step,
                          base_config(batch_size=2, max_steps=3, sync_batchnorm=True), exp_dir,
                          dist_info=dist_info)
        assert not trainer.use_sync_batchnorm
        assert not any(isinstance(m, nn.SyncBatchNorm) for m in trainer.model.modules())
    else:
        trainer = Trainer(make_model(), IndexedRandomData(), None, mse_step,
                          base_config(batch_size=2), exp_dir, dist_info=dist_info)
    trainer.train()
    cleanup_distributed()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_two_processes(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), os.path.abspath(__file__), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_two_process_ddp_matches_one_process(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    Trainer(make_model(), IndexedRandomData(), None, mse_step, base_config(batch_size=4),
            one).train()
    _run_two_processes(two)
    state_one = read_checkpoint(os.path.join(one, "checkpoint_last.pt"))
    state_two = read_checkpoint(os.path.join(two, "checkpoint_last.pt"))
    assert state_one["step"] == state_two["step"] == 8
    assert state_two["world_size"] == 2 and state_two["global_batch_size"] == 4
    assert len(state_two["rng_states"]) == 2
    initial = make_model().state_dict()
    for name, value in state_one["model"].items():
        assert not torch.allclose(value, initial[name])  # training moved every tensor
        assert torch.allclose(value, state_two["model"][name], atol=1e-6), name


# ---------------------------------------------------------------------------- resume
def _weights(exp_dir, name="checkpoint_last.pt"):
    return read_checkpoint(os.path.join(exp_dir, name))["model"]


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    config = base_config(max_steps=10, steps_per_epoch=4, save_every_steps=3, valid_every_epochs=1,
                         best_metric="neg_mse")
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    history = []
    summary = Trainer(make_model(dropout=0.3), IndexedRandomData(), make_valid_fn(history),
                      mse_step, config, full).train()
    assert summary["step"] == 10 and not summary["interrupted"]

    # a run "killed" right after update 7: the last checkpoint is from update 6
    summary = Trainer(make_model(dropout=0.3), IndexedRandomData(), make_valid_fn(), mse_step,
                      dict(config, stop_after=7), killed).train()
    assert summary["interrupted"] and summary["step"] == 7
    assert read_checkpoint(os.path.join(killed, "checkpoint_last.pt"))["step"] == 6
    assert read_checkpoint(os.path.join(killed, "checkpoint_prev.pt"))["step"] == 4

    # restart with differently initialised weights: everything comes from the checkpoint
    resumed = Trainer(make_model(dropout=0.3, seed=99), IndexedRandomData(), make_valid_fn(),
                      mse_step, config, killed)
    assert resumed.step == 6 and resumed.epoch == 1 and resumed.step_in_epoch == 2
    summary = resumed.train()
    assert summary["step"] == 10
    reference = _weights(full)
    for name, value in _weights(killed).items():
        assert torch.equal(value, reference[name]), name  # bit-exact on CPU

    # the best checkpoint holds the best validation value
    best = read_checkpoint(os.path.join(full, "checkpoint_best.pt"))
    assert best["best_value"] == max(history)
    assert not [f for f in os.listdir(full) if f.endswith(".tmp")]


def test_corrupt_last_checkpoint_falls_back_to_previous(tmp_path):
    config = base_config(max_steps=6, steps_per_epoch=4, save_every_steps=2)
    full, broken = str(tmp_path / "full"), str(tmp_path / "broken")
    Trainer(make_model(), IndexedRandomData(), None, mse_step, config, full).train()
    Trainer(make_model(), IndexedRandomData(), None, mse_step, dict(config, stop_after=5),
            broken).train()
    with open(os.path.join(broken, "checkpoint_last.pt"), "wb") as f:
        f.write(b"not a checkpoint")  # the step-4 file is damaged; step 2 is the previous one
    with pytest.warns(RuntimeWarning, match="checkpoint_last.pt"):
        state, path = load_latest(broken)
    assert path.endswith("checkpoint_prev.pt") and state["step"] == 2
    with pytest.warns(RuntimeWarning):
        trainer = Trainer(make_model(), IndexedRandomData(), None, mse_step, config, broken)
    assert trainer.step == 2
    trainer.train()
    reference = _weights(full)
    for name, value in _weights(broken).items():
        assert torch.equal(value, reference[name]), name
    # when no checkpoint can be read, training refuses to start over them
    for name in ("checkpoint_last.pt", "checkpoint_prev.pt"):
        with open(os.path.join(broken, name), "wb") as f:
            f.write(b"garbage")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        load_latest(broken)


# ---------------------------------------------------------------------------- data order
def test_sampler_global_batches_do_not_depend_on_world_size():
    def step_sets(world_size, epoch=0, start_step=0):
        per_rank = [list(StepBatchSampler(10, 12 // world_size, 5, epoch, seed=1,
                                          rank=rank, world_size=world_size, start_step=start_step))
                    for rank in range(world_size)]
        steps = []
        for step in zip(*per_rank):
            flat = [i for batch in step for i in batch]
            steps.append(flat)
        return steps

    one = step_sets(1)
    for world_size in (2, 3, 4):
        many = step_sets(world_size)
        assert many == one  # rank slices, concatenated, give the same global batch
    for step in step_sets(4):
        assert len(step) == 12
    assert step_sets(1, epoch=1) != one                    # new order each epoch
    assert step_sets(2, start_step=3) == one[3:]          # a resumed epoch skips done steps
    # 5 steps x 12 samples from 10 items: every item appears at least 5 times
    counts = torch.bincount(torch.tensor([i for s in one for i in s]), minlength=10)
    assert counts.min() >= 5 and counts.sum() == 60


def test_too_small_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(TrainConfigError, match="fewer than one global batch"):
        Trainer(make_model(), IndexedRandomData(size=3), None, mse_step,
                base_config(steps_per_epoch=None), str(tmp_path))
    with pytest.raises(TrainConfigError, match="unknown training option"):
        TrainConfig.from_dict({"batch_size": 2, "max_steps": 1, "lerning_rate": 1})


# ---------------------------------------------------------------------------- schedules, groups
def test_warmup_cosine_values():
    factor = LrFactor("warmup_cosine", warmup_steps=4, total_steps=12, min_lr_ratio=0.1)
    assert [factor(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert factor(8) == pytest.approx(0.1 + 0.9 * 0.5)           # half way through the cosine
    assert factor(12) == pytest.approx(0.1) and factor(20) == pytest.approx(0.1)
    assert factor(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    constant = LrFactor("warmup_constant", warmup_steps=2)
    assert [constant(s) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert LrFactor("constant")(123) == 1.0
    with pytest.raises(ValueError, match="total_steps"):
        LrFactor("warmup_cosine", warmup_steps=4)


def test_scheduler_scales_every_group():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=1.0)
    scheduler = build_scheduler(optimizer, "warmup_cosine", warmup_steps=2, total_steps=6)
    seen = []
    for _ in range(6):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    expected = [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                0.5 * (1 + math.cos(3 * math.pi / 4))]
    for lrs, factor in zip(seen, expected):
        assert lrs == pytest.approx([factor, 0.1 * factor])


class TinyViT(nn.Module):
    def __init__(self, depth=3):
        super().__init__()
        self.patch_embed = nn.Linear(2, 2)
        self.pos_embed = nn.Parameter(torch.zeros(1, 2))
        self.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(depth))
        self.norm = nn.LayerNorm(2)


class TinySystem(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = TinyViT()
        self.decoder = nn.Linear(2, 2)
        self.film = nn.Linear(2, 2)


def _lr_by_name(groups):
    return {name: (group["lr"], group["weight_decay"])
            for group in groups for name in group["param_names"]}


def test_param_groups_and_layer_decay():
    groups = build_param_groups(TinySystem(), lr=1e-3, weight_decay=0.01, group_specs=[
        {"match": r"encoder\.", "lr": 1.6e-2, "layer_decay": 0.5},
        {"match": "decoder.", "lr": 5e-4, "weight_decay": 0.0},
    ])
    lrs = _lr_by_name(groups)
    assert lrs["encoder.norm.weight"][0] == pytest.approx(1.6e-2)      # top: undecayed
    assert lrs["encoder.blocks.2.weight"][0] == pytest.approx(8e-3)     # last block: x 0.5
    assert lrs["encoder.blocks.1.bias"][0] == pytest.approx(4e-3)
    assert lrs["encoder.blocks.0.weight"][0] == pytest.approx(2e-3)     # first block: x 0.5^3
    assert lrs["encoder.patch_embed.weight"][0] == pytest.approx(1e-3)  # embeddings: x 0.5^4
    assert lrs["encoder.pos_embed"][0] == pytest.approx(1e-3)
    assert lrs["decoder.weight"] == pytest.approx((5e-4, 0.0))
    assert lrs["film.bias"] == pytest.approx((1e-3, 0.01))              # no group: base values
    assert len(lrs) == len(list(TinySystem().parameters()))


def test_param_group_freeze_and_errors():
    model = TinySystem()
    groups = build_param_groups(model, lr=1e-3, weight_decay=0.0, group_specs=[
        {"match": r"encoder\.", "freeze": True}])
    names = [n for g in groups for n in g["param_names"]]
    assert names and not any(n.startswith("encoder.") for n in names)
    assert not model.encoder.blocks[0].weight.requires_grad
    with pytest.raises(ValueError, match="unknown key"):
        build_param_groups(TinySystem(), 1e-3, 0.0, [{"match": "decoder", "learning_rate": 1}])
    with pytest.raises(ValueError, match="matches no parameter"):
        build_param_groups(TinySystem(), 1e-3, 0.0, [{"match": "nothing_like_this"}])


def test_trainer_applies_schedule_and_groups(tmp_path):
    config = base_config(max_steps=2, scheduler="warmup_constant", warmup_steps=4, lr=1e-2,
                         param_groups=[{"match": "3\\.", "lr": 1e-3}])
    trainer = Trainer(make_model(), IndexedRandomData(), None, mse_step, config, str(tmp_path))
    trainer.train()
    lrs = {group["name"]: group["lr"] for group in trainer.optimizer.param_groups}
    # updates 0 and 1 used factors 1/4 and 2/4; the next one will use 3/4
    assert lrs["default"] == pytest.approx(1e-2 * 0.75)
    assert lrs["0:3\\."] == pytest.approx(1e-3 * 0.75)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_gpu_autocast_precisions(tmp_path, precision):
    seen = []

    def step(model, batch):
        seen.append((batch["x"].device.type, torch.is_autocast_enabled("cuda")))
        return mse_step(model, batch)

    config = base_config(max_steps=3, device="cuda", precision=precision)
    trainer = Trainer(make_model(), IndexedRandomData(), None, step, config, str(tmp_path))
    summary = trainer.train()
    assert summary["skipped_updates"] == 0
    assert seen == [("cuda", precision != "fp32")] * 3
    weights = _weights(str(tmp_path))
    initial = make_model().state_dict()
    assert all(torch.isfinite(v).all() and not torch.equal(v, initial[k]) for k, v in weights.items())

# ---------------------------------------------------------------------------- weights-only files
class CreatesFileWhenUnpickled:
    """Unpickling this runs ``open(path, "w")``: the file appearing shows code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_trainer_checkpoints_load_weights_only_with_exact_rng_states(tmp_path):
    exp_dir = str(tmp_path / "exp")
    Trainer(make_model(), IndexedRandomData(), None, mse_step, base_config(max_steps=3),
            exp_dir, run_config={"model": {"channels": 4}, "data": "data"}).train()
    state = torch.load(os.path.join(exp_dir, "checkpoint_last.pt"), weights_only=True)
    assert state["step"] == 3 and state["run_config"] == {"model": {"channels": 4}, "data": "data"}

    # python's (with a cached gauss) and numpy's (with a cached gaussian) states round-trip
    random.seed(5)
    random.gauss(0, 1)
    np.random.seed(7)
    np.random.standard_normal()
    path = str(tmp_path / "rng.pt")
    ckpt.save_atomic({"rng": ckpt.capture_rng_state()}, path)
    expected = ([random.gauss(0, 1), random.random()], np.random.standard_normal(3).tolist(),
                torch.rand(3).tolist())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    ckpt.restore_rng_state(torch.load(path, weights_only=True)["rng"])
    drawn = ([random.gauss(0, 1), random.random()], np.random.standard_normal(3).tolist(),
             torch.rand(3).tolist())
    assert drawn == expected
    # a state that could not be read back weights-only is not written
    with pytest.raises(CheckpointError, match=r"bad\.pt.*numpy"):
        ckpt.save_atomic({"rng": np.random.get_state()}, str(tmp_path / "bad.pt"))
    assert not os.path.exists(tmp_path / "bad.pt")


def test_checkpoint_that_would_run_code_is_refused(tmp_path, caplog):
    marker = str(tmp_path / "code_ran")
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    path = str(exp_dir / "checkpoint_last.pt")
    torch.save({"model": {}, "optimizer": {}, "step": 0, "epoch": 0, "step_in_epoch": 0,
                "payload": CreatesFileWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match=r"checkpoint_last\.pt: refused.*io\.open"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="io.open"):
        load_model_weights(path)
    with pytest.raises(CheckpointError, match="io.open"):
        Trainer(make_model(), IndexedRandomData(), None, mse_step, base_config(), str(exp_dir))
    assert not os.path.exists(marker)
    assert os.path.exists(path)  # left as it was, not trained over
    # a caller that trusts the file may unpickle it fully; it is logged
    with caplog.at_level(logging.WARNING, logger="s5lib.train.checkpoint"):
        read_checkpoint(path, trust=True)
    assert os.path.exists(marker)
    assert any("checkpoint_last.pt" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


def test_older_checkpoint_is_refused_until_upgraded(tmp_path):
    exp_dir = str(tmp_path / "exp")
    Trainer(make_model(), IndexedRandomData(), None, mse_step, base_config(max_steps=3),
            exp_dir).train()
    path = os.path.join(exp_dir, "checkpoint_last.pt")
    state = torch.load(path, weights_only=True)
    # what older versions stored: random.getstate() and np.random.get_state() as they are
    random.seed(11)
    np.random.seed(12)
    old_rng = dict(state["rng_states"][0], python=random.getstate(), numpy=np.random.get_state())
    torch.save(dict(state, rng_states=[old_rng]), path)
    with pytest.raises(CheckpointError, match="numpy"):
        read_checkpoint(path)
    ckpt.upgrade_checkpoint(path)
    upgraded = read_checkpoint(path)["rng_states"][0]
    ckpt.restore_rng_state(upgraded)
    after = (random.random(), np.random.random())
    random.seed(11)
    np.random.seed(12)
    assert after == (random.random(), np.random.random())


# ---------------------------------------------------------------------------- resume settings
RUN_CONFIG = {"model": {"type": "tiny", "channels": 4}, "data": "data", "exp_dir": "exp/a",
              "synth": {}, "train": {"lr": 1e-2}}


def _killed_run(exp_dir, config, run_config=RUN_CONFIG):
    summary = Trainer(make_model(), IndexedRandomData(), None, mse_step,
                      dict(config, stop_after=5), exp_dir, run_config=run_config).train()
    assert summary["interrupted"] and read_checkpoint(
        os.path.join(exp_dir, "checkpoint_last.pt"))["step"] == 4


def test_resume_refuses_changed_settings(tmp_path):
    config = base_config(max_steps=8, steps_per_epoch=4, save_every_steps=2)
    exp_dir = str(tmp_path / "killed")
    _killed_run(exp_dir, config)

    def resume(config=config, run_config=RUN_CONFIG):
        return Trainer(make_model(), IndexedRandomData(), None, mse_step, config, exp_dir,
                       run_config=run_config)

    with pytest.raises(TrainConfigError, match=r"train\.lr: 0\.01 -> 0\.02") as err:
        resume(dict(config, lr=2e-2))
    assert "train.resume: false" in str(err.value) and "--force true" in str(err.value)
    changed = dict(RUN_CONFIG, model={"type": "tiny", "channels": 8}, synth={"n_interferers": 2})
    with pytest.raises(TrainConfigError, match=r"model\.channels: 4 -> 8") as err:
        resume(run_config=changed)
    assert "synth.n_interferers: '<not set>' -> 2" in str(err.value)
    # a longer run changes the cosine schedule; with a constant one it may
    with pytest.raises(TrainConfigError, match=r"train\.max_steps: 8 -> 12"):
        resume(dict(config, max_steps=12))
    assert not any(name.startswith("old_") for name in os.listdir(exp_dir))

    # speed / bookkeeping switches and the run's location may change: the resume is exact
    full = str(tmp_path / "full")
    Trainer(make_model(), IndexedRandomData(), None, mse_step, config, full,
            run_config=RUN_CONFIG).train()
    assert {"train.num_workers", "train.save_every_steps", "exp_dir"} <= set(RESUME_IGNORED_KEYS)
    trainer = resume(dict(config, num_workers=1, log_every=3, save_every_steps=None),
                     dict(RUN_CONFIG, exp_dir="exp/b", train={"lr": 1e-2, "num_workers": 1}))
    assert trainer.step == 4
    trainer.train()
    reference = _weights(full)
    for name, value in _weights(exp_dir).items():
        assert torch.equal(value, reference[name]), name


def test_constant_schedule_may_train_longer(tmp_path):
    config = base_config(max_steps=8, steps_per_epoch=4, save_every_steps=2,
                         scheduler="warmup_constant")
    exp_dir = str(tmp_path / "killed")
    _killed_run(exp_dir, config)
    trainer = Trainer(make_model(), IndexedRandomData(), None, mse_step,
                      dict(config, max_steps=10), exp_dir, run_config=RUN_CONFIG)
    assert trainer.step == 4 and trainer.train()["step"] == 10


def test_resume_false_moves_the_old_run_aside(tmp_path):
    config = base_config(max_steps=4, steps_per_epoch=4)
    exp_dir = str(tmp_path / "exp")
    Trainer(make_model(), IndexedRandomData(), None, mse_step, config, exp_dir,
            run_config=RUN_CONFIG).train()
    old_weights = _weights(exp_dir)
    # re-run from scratch with other settings
    trainer = Trainer(make_model(), IndexedRandomData(), None, mse_step,
                      dict(config, lr=2e-2, resume=False), exp_dir, run_config=RUN_CONFIG)
    assert trainer.step == 0 and trainer.resumed_from is None
    moved = [name for name in os.listdir(exp_dir) if name.startswith("old_")]
    assert len(moved) == 1 and trainer.moved_aside == os.path.join(exp_dir, moved[0])
    assert not os.path.exists(os.path.join(exp_dir, "checkpoint_last.pt"))
    assert trainer.train()["step"] == 4
    kept = read_checkpoint(os.path.join(exp_dir, moved[0], "checkpoint_last.pt"))
    assert kept["config"]["lr"] == 1e-2 and kept["step"] == 4
    assert all(torch.equal(kept["model"][k], v) for k, v in old_weights.items())
    assert os.path.isdir(os.path.join(exp_dir, moved[0], "tensorboard"))
    new = read_checkpoint(os.path.join(exp_dir, "checkpoint_last.pt"))
    assert new["config"]["lr"] == 2e-2 and new["step"] == 4
    # a second forced re-run keeps both earlier runs
    Trainer(make_model(), IndexedRandomData(), None, mse_step, dict(config, resume=False), exp_dir)
    assert len([name for name in os.listdir(exp_dir) if name.startswith("old_")]) == 2


# ---------------------------------------------------------------------------- finished runs
def test_rerun_of_finished_or_early_stopped_run_does_no_update(tmp_path):
    calls = []

    def counting_step(model, batch):
        calls.append(1)
        return mse_step(model, batch)

    def run(config, exp_dir):
        calls.clear()
        summary = Trainer(make_model(), IndexedRandomData(), lambda model: {"metric": 1.0},
                          counting_step, config, exp_dir).train()
        summary.pop("seconds")
        return summary, len(calls)

    # the metric never improves after the first validation: patience 1 stops after update 2
    config = base_config(max_steps=10, valid_every_steps=1, early_stop_patience=1)
    first, updates = run(config, str(tmp_path / "early"))
    assert first["stopped_early"] and first["step"] == 2 and updates == 2
    assert read_checkpoint(str(tmp_path / "early" / "checkpoint_last.pt"))["stopped_early"]
    again, updates = run(config, str(tmp_path / "early"))
    assert updates == 0 and again == first

    # a run that did all its updates
    config = base_config(max_steps=3)
    first, updates = run(config, str(tmp_path / "done"))
    assert first["step"] == 3 and not first["stopped_early"] and updates == 3
    again, updates = run(config, str(tmp_path / "done"))
    assert updates == 0 and again == first


# ---------------------------------------------------------------------------- SyncBatchNorm
def test_sync_batchnorm_switch(tmp_path, caplog):
    assert not resolve_sync_batchnorm("auto", 1, "cuda")
    assert resolve_sync_batchnorm("auto", 2, "cuda") and resolve_sync_batchnorm(True, 8, "cuda")
    assert not resolve_sync_batchnorm(False, 8, "cuda")
    assert not resolve_sync_batchnorm(True, 1, "cuda")
    with caplog.at_level(logging.WARNING, logger="s5lib.train.trainer"):
        assert not resolve_sync_batchnorm(True, 2, "cpu")
    assert any("GPU tensors only" in r.getMessage() for r in caplog.records)
    with pytest.raises(TrainConfigError, match="sync_batchnorm must be true, false or auto"):
        TrainConfig.from_dict(base_config(sync_batchnorm="yes"))

    # a converted model keeps the state_dict keys: its checkpoints load into the plain model
    converted, count = convert_sync_batchnorm(make_bn_model())
    assert count == 1 and isinstance(converted[1], nn.SyncBatchNorm)
    converted[1].running_mean.fill_(0.25)
    plain = make_bn_model(seed=1)
    plain.load_state_dict(converted.state_dict())  # strict
    assert torch.equal(plain[1].running_mean, torch.full((4,), 0.25))
    assert torch.equal(plain[0].weight, converted[0].weight)
    converted.load_state_dict(make_bn_model(seed=2).state_dict())

    # one process: nothing changes
    trainer = Trainer(make_bn_model(), IndexedRandomData(), None, mse_step,
                      base_config(max_steps=3, sync_batchnorm=True), str(tmp_path))
    assert not trainer.use_sync_batchnorm
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in trainer.model.modules())


def test_sync_batchnorm_on_cpu_processes_warns_and_trains(tmp_path):
    exp_dir = str(tmp_path / "syncbn")
    result = _run_two_processes(exp_dir, "syncbn")
    assert "sync_batchnorm: True: torch's SyncBatchNorm runs on GPU tensors only" in result.stderr
    state = read_checkpoint(os.path.join(exp_dir, "checkpoint_last.pt"))
    assert state["step"] == 3
    make_bn_model().load_state_dict(state["model"])



if __name__ == "__main__":
    _ddp_worker(*sys.argv[1:])
