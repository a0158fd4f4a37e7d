"""A generic trainer shared by tagger and separator training.

The trainer knows nothing about models or data sets: a recipe gives it

* ``model``: any ``torch.nn.Module``;
* ``train_dataset``: a map-style dataset indexed by sample number (``set_epoch(epoch)`` is called
  when it exists, so on-the-fly mixtures change every epoch);
* ``loss_step(model, batch) -> (loss, logs)``: computes the scalar training loss of one batch
  (already on the device, under autocast when enabled) and a dict of extra scalars to log. A
  loss step with a ``set_step(update)`` method is told the update number before each batch (the
  same on every rank, and again after a resume: e.g. the refinement depth of an update). Call
  ``model(...)`` (its forward) rather than sub-modules: under DDP ``model`` is the wrapper and
  gradients are synchronised through its forward;
* ``valid_fn(model) -> dict``: the validation metrics, run on rank 0 with the plain model in eval
  mode under ``torch.no_grad()``; ``config.best_metric`` names the entry that selects
  ``checkpoint_best.pt`` (``config.best_mode``: ``max`` or ``min``). ``None`` skips validation.

Batches: ``config.batch_size`` is **per process** (per GPU); the global batch of one update is
``batch_size * world_size`` and is the same set of samples for any number of processes (see
:mod:`s5lib.train.sampler`), so a 2-process run follows a 1-process run with twice the batch size
(up to float rounding, and as long as the model has no batch statistics such as BatchNorm, or
synchronises them: ``sync_batchnorm`` below).

Resume: when ``exp_dir`` holds a checkpoint (and ``config.resume``), training continues exactly
where it was saved: same data order, same RNG states, same optimizer and schedule. For bit-exact
resumption, data sets must draw their randomness from the sample index (as
:class:`s5lib.data.datasets.OnTheFlyMixtures` does), not from worker-global generators.
``config.stop_after`` ends a run after that many updates *without* saving, as a kill would (tests).

* Settings: every checkpoint stores the train settings and ``run_config`` (the whole resolved
  recipe config the entry point passes: model, loss, synth, data, ...). A resume compares them
  with the current ones and refuses (:class:`TrainConfigError`, naming each differing dotted key
  with its old and new value) when a result-affecting setting changed, rather than continuing an
  optimizer and schedule built with other settings. Keys that only change speed or bookkeeping
  are left out (:data:`RESUME_IGNORED_KEYS`); ``train.max_steps`` / ``train.epochs`` may change
  (to train longer or stop sooner) only when the schedule does not depend on the run's length
  (:data:`LENGTH_FREE_SCHEDULES`). ``run_config``'s own ``train`` section is not compared: the
  resolved train settings stand for it.
* ``resume: false`` (``--force true`` in the recipe) never trains over old checkpoints: when
  ``exp_dir`` holds any, they and ``tensorboard/`` are moved into ``<exp_dir>/old_<timestamp>/``
  (nothing is deleted) and training starts from scratch.
* A finished run (``total_steps`` done) or one that stopped early (``early_stop_patience``
  reached; the checkpoint records it) does no update when re-run and returns the same summary.

Checkpoints hold tensors and plain values only and are read with a weights-only ``torch.load``
(see :mod:`s5lib.train.checkpoint`).

``sync_batchnorm`` (``true | false | auto``, default false; auto = on when more than one process
runs): with several processes, BatchNorm layers become ``torch.nn.SyncBatchNorm`` before the DDP
wrapping, so batch statistics are taken over the global batch (the official separators train
that way, 8 GPUs x 5 mixtures) instead of the per-process batch. Torch's SyncBatchNorm runs on
GPU tensors only: on CPU (gloo) a warning is logged and plain BatchNorm is kept. The state_dict
keys are those of BatchNorm, so checkpoints load into the plain model. The full GPU configs
(``egs/baseline/conf/full/separator_*.yaml``) set ``auto``; the tiny CPU configs keep the default.

Device-side batch work: ``batch_transform(batch, device) -> batch`` (optional) runs on every
training batch right after it is moved to the device and before ``loss_step``, outside autocast
and without gradients. This is where device-side mixture synthesis plugs in
(``lambda batch, device: s5lib.data.gpu_synth.synthesize_batch(batch, device=device)`` with
``collate_fn=s5lib.data.gpu_synth.collate_raw``); the trainer itself imports nothing from data.

Speed switches (``train:`` keys; ``true``, ``false`` or ``auto`` = on with CUDA only):

* ``precision: bf16`` (default): autocast on CUDA; CPU runs fp32.
* ``compile`` (default false): ``torch.compile`` of the model's forward (``compile_mode``
  picks the mode). Only the forward used by ``loss_step`` is compiled; checkpoints, validation and
  ``trainer.model`` use the plain module, so checkpoints load into an uncompiled model. On CPU
  ``compile: true`` logs a warning and trains uncompiled (CPU compilation needs a C++ toolchain
  and minutes per shape, for little gain on the small CPU runs of this recipe).
* ``channels_last`` (default false): 4-d weights (and, for models whose ``config`` has a
  ``channels_last`` flag such as ResUNet30, the U-Net activations) in channels_last layout;
  works on CPU and GPU; the state_dict keeps the same keys and values.
* ``fused_optimizer`` (default false): fused AdamW / Adam / SGD kernels on CUDA. On CPU
  ``true`` logs a warning and uses the default implementation. With the fused optimizer (and
  no fp16 loss scaling) an update with a non-finite gradient norm is skipped on the device,
  without a host synchronisation per step; skipped updates are counted and reported at the
  next log line.
* ``cudnn_benchmark`` (default auto: on CUDA): let cuDNN time its convolution algorithms on the
  first batches and keep the fastest (training shapes are fixed, so this pays off);
* ``pin_memory`` (default auto: on CUDA), ``prefetch_factor`` (batches prepared ahead per
  worker; default torch's 2), ``persistent_workers`` (default false; keep the DataLoader workers
  and their audio / room-response caches across epochs; the epoch number then travels with
  every index, so the data are the same as without it). The last two need ``num_workers > 0``
  and are ignored otherwise.

A GPU recipe typically sets ``precision: bf16``, ``compile: auto``, ``channels_last: auto``,
``fused_optimizer: auto``, ``persistent_workers: true`` and ``num_workers`` to the CPU cores per
GPU minus one; ``python -m s5lib.bin.bench_train`` measures what they give.
"""
import dataclasses
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from s5lib.train import checkpoint as ckpt
from s5lib.train import distributed as distrib
from s5lib.train.optim import build_optimizer, build_param_groups, describe_param_groups
from s5lib.train.sampler import StepBatchSampler
from s5lib.train.schedulers import build_scheduler

logger = logging.getLogger(__name__)


class TrainConfigError(ValueError):
    pass


SWITCHES = ("compile", "channels_last", "fused_optimizer", "pin_memory", "cudnn_benchmark")

# Settings (dotted keys; a key also covers everything below it) that a resume does not compare
# with the checkpoint's: they change speed or bookkeeping, not the result. Everything else of the
# ``train:`` section and of ``run_config`` must match (``data``, the data directory, included).
RESUME_IGNORED_KEYS = (
    "train.num_workers", "train.progress", "train.log_every", "train.stop_after",
    "train.compile", "train.compile_mode", "train.channels_last", "train.fused_optimizer",
    "train.pin_memory", "train.cudnn_benchmark", "train.prefetch_factor",
    "train.persistent_workers", "train.device", "train.resume", "train.save_every_steps",
    "train.find_unused_parameters",  # DDP's search for unused parameters: same gradients
    "exp_dir",                       # where the run lives, not what it computes
    "valid_batch_size",              # batching of validation; metrics are per mixture
    "valid_cache_mb",                # validation mixtures kept in memory: same items
    "synthesis",                     # cpu or device rendering: the same mixtures (within 1e-5)
    "trust_checkpoint",              # how input files may be read, not what they hold
)
# The run's length: may change on resume when the lr schedule does not depend on it.
RESUME_LENGTH_KEYS = ("train.max_steps", "train.epochs")
LENGTH_FREE_SCHEDULES = ("constant", "warmup_constant")


@dataclass
class TrainConfig:
    """Every result-affecting training setting (the ``train:`` section of a recipe YAML)."""
    batch_size: int = 8                 # per process (per GPU); global = batch_size * world_size
    num_workers: int = 0
    epochs: Optional[int] = None        # stop after this many epochs ...
    max_steps: Optional[int] = None     # ... or this many updates (the earlier of the two)
    steps_per_epoch: Optional[int] = None  # default: len(dataset) // global batch
    shuffle: bool = True
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.01
    amsgrad: bool = False
    betas: tuple = (0.9, 0.999)
    param_groups: list = field(default_factory=list)  # see s5lib.train.optim
    grad_clip: Optional[float] = 0.5    # max gradient norm; None or 0: no clipping
    scheduler: str = "constant"         # constant | warmup_constant | warmup_cosine
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    precision: str = "bf16"             # bf16 | fp16 | fp32; autocast on GPU only, CPU runs fp32
    device: str = "auto"                # auto | cpu | cuda
    log_every: int = 50                 # updates between tensorboard / progress-bar logs
    valid_every_steps: Optional[int] = None
    valid_every_epochs: Optional[int] = 1
    best_metric: Optional[str] = None   # key of valid_fn's dict; None: the first key
    best_mode: str = "max"
    early_stop_patience: Optional[int] = None  # validations without improvement before stopping
    save_every_steps: Optional[int] = None     # also saved after each validation and epoch
    seed: int = 0
    resume: bool = True
    stop_after: Optional[int] = None    # leave after this many updates without saving (tests)
    find_unused_parameters: bool = False
    progress: bool = True               # tqdm bar on rank 0
    # speed switches (module docstring): true | false | auto (= on with CUDA only)
    compile: Any = False                # torch.compile of the forward (CUDA; CPU warns, runs eager)
    compile_mode: Optional[str] = None  # torch.compile mode: None (default), reduce-overhead, ...
    channels_last: Any = False          # 4-d weights / activations in channels_last layout
    fused_optimizer: Any = False        # fused optimizer kernels (CUDA; CPU warns, runs default)
    pin_memory: Any = "auto"            # page-locked batches (CUDA only)
    cudnn_benchmark: Any = "auto"       # cuDNN picks the fastest convolution algorithms (CUDA)
    prefetch_factor: Optional[int] = None   # batches prepared ahead per worker (None: torch's 2)
    persistent_workers: bool = False    # keep workers (and their caches) across epochs
    # BatchNorm statistics over the global batch (SyncBatchNorm; GPU only; module docstring):
    # true | false | auto (= on with more than one process); the full GPU configs set auto
    sync_batchnorm: Any = False

    @classmethod
    def from_dict(cls, values):
        """Build from a dict; unknown keys are an error naming them."""
        if isinstance(values, cls):
            return values
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainConfigError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        config = cls(**values)
        config.check()
        return config

    def check(self):
        if self.batch_size < 1:
            raise TrainConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs is None and self.max_steps is None:
            raise TrainConfigError("set epochs or max_steps (or both)")
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise TrainConfigError(f"precision must be bf16, fp16 or fp32, got {self.precision!r}")
        if self.best_mode not in ("max", "min"):
            raise TrainConfigError(f"best_mode must be 'max' or 'min', got {self.best_mode!r}")
        if self.log_every < 1:
            raise TrainConfigError(f"log_every must be >= 1, got {self.log_every}")
        for name in SWITCHES + ("sync_batchnorm",):
            if getattr(self, name) not in (True, False, "auto"):
                raise TrainConfigError(f"{name} must be true, false or auto, got "
                                       f"{getattr(self, name)!r}")
        if self.prefetch_factor is not None and int(self.prefetch_factor) < 1:
            raise TrainConfigError(f"prefetch_factor must be >= 1, got {self.prefetch_factor}")
        if not isinstance(self.persistent_workers, bool):
            raise TrainConfigError(f"persistent_workers must be true or false, got "
                                   f"{self.persistent_workers!r}")

    def to_dict(self):
        return dataclasses.asdict(self)


def seed_everything(seed):
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def seed_dataloader_worker(worker_id):
    """DataLoader ``worker_init_fn``: numpy and python generators follow torch's worker seed."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def move_to_device(batch, device):
    """Tensors inside nested dicts / lists / tuples moved to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


SWITCH_FALLBACK = {
    "compile": "torch.compile is used on CUDA only; training uncompiled on {device}",
    "fused_optimizer": "fused optimizer kernels are used on CUDA only; the default implementation "
                       "runs on {device}",
    "pin_memory": "pinned memory needs CUDA; batches are not pinned on {device}",
    "cudnn_benchmark": "cuDNN benchmark mode needs CUDA; ignored on {device}",
}


def resolve_switch(name, value, device, warn=True):
    """Whether the speed switch ``name`` (``true``/``false``/``auto``) is on for ``device``.

    ``auto`` means on with CUDA only. ``compile``, ``fused_optimizer`` and ``pin_memory`` are
    CUDA-only: asked for explicitly elsewhere, they are turned off with a warning (never
    silently); ``channels_last`` works on any device.
    """
    on_gpu = torch.device(device).type == "cuda"
    if value == "auto":
        return on_gpu
    if value and name in SWITCH_FALLBACK and not on_gpu:
        if warn:
            logger.warning("%s: true: %s", name, SWITCH_FALLBACK[name].format(device=device))
        return False
    return bool(value)


def resolve_sync_batchnorm(value, world_size, device, warn=True):
    """Whether BatchNorm layers become SyncBatchNorm: ``value`` is true, false or ``auto`` (on with
    more than one process). Never with one process (nothing to synchronise); never off the GPU:
    torch's SyncBatchNorm refuses CPU input under a process group, so there a warning is logged
    and plain BatchNorm kept."""
    wanted = world_size > 1 if value == "auto" else bool(value)
    if not wanted or world_size <= 1:
        return False
    if torch.device(device).type != "cuda":
        if warn:
            logger.warning("sync_batchnorm: %s: torch's SyncBatchNorm runs on GPU tensors only; "
                           "on %s each of the %d processes keeps plain BatchNorm over its own "
                           "batch", value, device, world_size)
        return False
    return True


def convert_sync_batchnorm(model):
    """``(model, n)``: ``model`` with its ``n`` BatchNorm layers replaced by SyncBatchNorm layers
    sharing their parameters and buffers (the state_dict keys do not change)."""
    count = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model), count


def _normalised(value):
    """A config value for comparison: tuples as lists (YAML gives lists, dataclasses tuples)."""
    if isinstance(value, (list, tuple)):
        return [_normalised(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    return value


def flatten_config(values, prefix=""):
    """``{dotted key: value}`` of nested dicts (empty dicts count as absent)."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_config(value, name + "."))
        else:
            out[name] = _normalised(value)
    return out


_ABSENT = "<not set>"


def config_differences(saved, current, ignored=()):
    """``[(dotted key, saved value, current value)]`` of two nested dicts, sorted by key; keys
    equal to, or under, an entry of ``ignored`` are skipped."""
    saved, current = flatten_config(saved), flatten_config(current)
    differences = []
    for key in sorted(set(saved) | set(current)):
        if any(key == skip or key.startswith(skip + ".") for skip in ignored):
            continue
        old, new = saved.get(key, _ABSENT), current.get(key, _ABSENT)
        if old != new:
            differences.append((key, old, new))
    return differences


def _without_train(run_config):
    return {key: value for key, value in run_config.items() if key != "train"}


def to_channels_last(model):
    """Put ``model``'s 4-d weights in channels_last layout, in place; returns ``model``.

    A model whose ``config`` has a ``channels_last`` flag (ResUNet30) gets the flag set too, so it
    also converts its activations before the first convolution.
    """
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "channels_last"):
        config.channels_last = True
    return model.to(memory_format=torch.channels_last)


def fused_step_unless_nonfinite(optimizer, grad_norm):
    """``optimizer.step()`` that changes nothing when ``grad_norm`` is not finite.

    The decision stays on the device (no host synchronisation): the optimizer's ``found_inf``
    input, which fused Adam / AdamW / SGD read (the protocol ``GradScaler`` uses), makes the
    kernels skip the update and keep the step count. Returns the 0-d float tensor that is 1 when
    the update was skipped.
    """
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        raise TypeError(f"{type(optimizer).__name__} (fused=False) cannot skip an update on the "
                        "device; use a fused optimizer")
    found_inf = (~torch.isfinite(grad_norm)).to(torch.float32)
    optimizer.grad_scale = None
    optimizer.found_inf = found_inf
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale, optimizer.found_inf
    return found_inf


class EpochIndexedDataset(torch.utils.data.Dataset):
    """A training set asked for items as ``(epoch, index)`` (persistent DataLoader workers).

    Persistent workers keep their own copy of the dataset, which ``set_epoch`` in the main process
    cannot reach; here the epoch travels with every index and the worker's copy follows it.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.epoch = None

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.epoch = epoch
        return self.dataset[index]


class EpochBatches:
    """Batch sampler of a persistent loader: the batches of ``sampler`` tagged with ``epoch``.

    The trainer points ``sampler`` and ``epoch`` at the current epoch before each pass; a
    DataLoader draws its batch indices in the main process, so the change is seen.
    """

    def __init__(self):
        self.sampler = None
        self.epoch = 0

    def __iter__(self):
        epoch = self.epoch
        for batch in self.sampler:
            yield [(epoch, index) for index in batch]

    def __len__(self):
        return len(self.sampler)


class Trainer:
    """Runs ``loss_step`` over the training data with DDP, checkpoints, validation and resume.

    ``collate_fn`` batches the dataset's items (default: torch's); ``batch_transform(batch,
    device) -> batch`` (optional) runs on the device before ``loss_step`` (see the module
    docstring). ``run_config`` (optional) is the whole resolved recipe config (a dict of plain
    values): it is stored in every checkpoint and a resume refuses to continue when a
    result-affecting entry changed (module docstring).
    """

    def __init__(self, model, train_dataset, valid_fn, loss_step, config, exp_dir,
                 collate_fn=None, dist_info=None, batch_transform=None, run_config=None):
        self.config = TrainConfig.from_dict(config)
        if run_config is not None and not isinstance(run_config, dict):
            raise TrainConfigError(f"run_config must be a dict (the resolved recipe config), got "
                                   f"a {type(run_config).__name__}")
        try:
            self.run_config = (None if run_config is None
                               else ckpt.to_plain(run_config, "run_config"))
        except TypeError as err:
            raise TrainConfigError(f"{err}: the run config is stored in the checkpoints") from None
        self.exp_dir = exp_dir
        self.train_dataset = train_dataset
        self.valid_fn = valid_fn
        self.loss_step = loss_step
        self.collate_fn = collate_fn
        self.batch_transform = batch_transform
        self.dist = dist_info or distrib.init_distributed(self.config.device)
        self.device = self.dist.device
        cfg = self.config
        warn = self.dist.is_main
        self.use_compile = resolve_switch("compile", cfg.compile, self.device, warn)
        self.use_channels_last = resolve_switch("channels_last", cfg.channels_last, self.device, warn)
        self.use_fused_optimizer = resolve_switch("fused_optimizer", cfg.fused_optimizer,
                                                  self.device, warn)
        self.pin_memory = resolve_switch("pin_memory", cfg.pin_memory, self.device, warn)
        if resolve_switch("cudnn_benchmark", cfg.cudnn_benchmark, self.device, warn):
            torch.backends.cudnn.benchmark = True
        self.persistent_workers = bool(cfg.persistent_workers) and cfg.num_workers > 0
        self._persistent_loader = None

        self.global_batch_size = cfg.batch_size * self.dist.world_size
        if cfg.steps_per_epoch is not None:
            self.steps_per_epoch = int(cfg.steps_per_epoch)
        else:
            self.steps_per_epoch = len(train_dataset) // self.global_batch_size
            if self.steps_per_epoch == 0:
                raise TrainConfigError(
                    f"the training set has {len(train_dataset)} items, fewer than one global batch "
                    f"({cfg.batch_size} per process x {self.dist.world_size} processes); lower "
                    "batch_size or set steps_per_epoch")
        limits = []
        if cfg.max_steps is not None:
            limits.append(int(cfg.max_steps))
        if cfg.epochs is not None:
            limits.append(int(cfg.epochs) * self.steps_per_epoch)
        self.total_steps = min(limits)

        self.use_sync_batchnorm = resolve_sync_batchnorm(cfg.sync_batchnorm, self.dist.world_size,
                                                         self.device, warn)
        if self.use_sync_batchnorm:  # before the DDP wrapping and the optimizer
            model, n_bn = convert_sync_batchnorm(model)
            if warn:
                logger.info("sync_batchnorm: %d BatchNorm layer(s) normalise over the global batch "
                            "of %d processes", n_bn, self.dist.world_size)
        self.model = model.to(self.device)
        if self.use_channels_last:
            to_channels_last(self.model)
        param_groups = build_param_groups(self.model, cfg.lr, cfg.weight_decay, cfg.param_groups)
        self.optimizer = build_optimizer(param_groups, cfg.optimizer, lr=cfg.lr,
                                         weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad,
                                         betas=cfg.betas, fused=self.use_fused_optimizer)
        self.scheduler = build_scheduler(self.optimizer, cfg.scheduler, cfg.warmup_steps,
                                         self.total_steps, cfg.min_lr_ratio)
        on_gpu = self.device.type == "cuda"
        self.autocast_dtype = None
        if on_gpu and cfg.precision == "bf16":
            self.autocast_dtype = torch.bfloat16
        elif on_gpu and cfg.precision == "fp16":
            self.autocast_dtype = torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=on_gpu and cfg.precision == "fp16")
        # skip non-finite updates on the device (no sync per step) when the optimizer can
        self.skip_on_device = (self.use_fused_optimizer and not self.scaler.is_enabled()
                               and getattr(self.optimizer, "_step_supports_amp_scaling", False))
        self._skipped_on_device = torch.zeros((), device=self.device)
        if self.dist.distributed:
            wrapped = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if on_gpu else None,
                find_unused_parameters=cfg.find_unused_parameters)
        else:
            wrapped = self.model
        # train_model: what loss_step calls; self.model stays the plain module (checkpoints,
        # validation), and shares its parameters with the compiled forward
        self.train_model = torch.compile(wrapped, mode=cfg.compile_mode) if self.use_compile else wrapped

        # Position: the next update to run is number `step` (0-based), step_in_epoch of epoch.
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.best_value = None
        self.best_step = None
        self.validations_since_best = 0
        self.stopped_early = False  # early_stop_patience reached (saved: a re-run does not go on)
        self.skipped_updates = 0
        self.writer = None
        self.moved_aside = None
        if not cfg.resume:
            self.moved_aside = self._move_old_run_aside()
        self.resumed_from = self._resume() if cfg.resume else None
        if self.resumed_from is None:
            seed_everything(cfg.seed + 1000003 * self.dist.rank)
        if self.dist.is_main:
            for line in describe_param_groups(self.optimizer.param_groups):
                logger.info("param group %s", line)
            logger.info("speed: device %s, precision %s, compile %s, channels_last %s, fused "
                        "optimizer %s, %d workers (pin_memory %s, prefetch %s, persistent %s); "
                        "sync_batchnorm %s", self.device, cfg.precision if on_gpu else "fp32",
                        self.use_compile, self.use_channels_last, self.use_fused_optimizer,
                        cfg.num_workers, self.pin_memory, cfg.prefetch_factor or "default",
                        self.persistent_workers, "on" if self.use_sync_batchnorm else "off")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        """The full training state; RNG states are gathered from every rank (collective call)."""
        rng_states = distrib.all_gather_object(ckpt.capture_rng_state())
        self._collect_skipped()
        model_state = self.model.state_dict()
        if self.use_channels_last:  # checkpoints keep the default layout
            model_state = {key: value.contiguous() for key, value in model_state.items()}
        return {
            "model": model_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "rng_states": rng_states,
            "world_size": self.dist.world_size,
            "global_batch_size": self.global_batch_size,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "validations_since_best": self.validations_since_best,
            "stopped_early": self.stopped_early,
            "skipped_updates": self.skipped_updates,
            "total_steps": self.total_steps,
            "config": self.config.to_dict(),
            "run_config": self.run_config,
        }

    def save(self, is_best=False):
        """Checkpoint now (every rank must call it; rank 0 writes)."""
        state = self.state_dict()
        if self.dist.is_main:
            ckpt.save_training_checkpoint(state, self.exp_dir, is_best=is_best)
        distrib.barrier()

    def _move_old_run_aside(self):
        """``resume: false``: move the checkpoints (and tensorboard logs) of an earlier run into
        ``<exp_dir>/old_<timestamp>/`` so that the new run neither mixes with nor destroys them.
        Returns that directory (None when there was nothing to move)."""
        target = None
        if self.dist.is_main:  # rank 0 decides and moves; the others learn where to
            names = [ckpt.LAST, ckpt.PREV, ckpt.BEST]
            names += [name + ".tmp" for name in names] + ["tensorboard"]
            present = [name for name in names if os.path.exists(os.path.join(self.exp_dir, name))]
            if any(name.endswith(".pt") for name in present):
                base = target = os.path.join(self.exp_dir, "old_" + time.strftime("%Y%m%d-%H%M%S"))
                n = 1
                while os.path.exists(target):
                    n += 1
                    target = f"{base}_{n}"
                os.makedirs(target)
                for name in present:
                    os.replace(os.path.join(self.exp_dir, name), os.path.join(target, name))
                logger.warning("train.resume is false: the earlier run's %s moved to %s; training "
                               "starts from scratch", ", ".join(present), target)
        return distrib.broadcast_object(target)

    def _check_same_settings(self, state, path):
        """Refuse to resume a checkpoint trained with other result-affecting settings."""
        cfg = self.config
        saved_train = dict(TrainConfig().to_dict(), **(state.get("config") or {}))
        ignored = RESUME_IGNORED_KEYS
        if cfg.scheduler in LENGTH_FREE_SCHEDULES:
            ignored = ignored + RESUME_LENGTH_KEYS
        differences = config_differences({"train": saved_train}, {"train": cfg.to_dict()},
                                         ignored)
        saved_run = state.get("run_config")
        if saved_run is not None and self.run_config is not None:
            differences += config_differences(_without_train(saved_run),
                                              _without_train(self.run_config), ignored)
        elif self.run_config is not None and self.dist.is_main:
            logger.warning("%s holds no run config (written by an older version or without one): "
                           "only the train settings are compared on resume", path)
        if not differences:
            return
        lines = "\n".join(f"  {key}: {old!r} -> {new!r}" for key, old, new in differences)
        raise TrainConfigError(
            f"{path}: cannot resume: these settings differ from the ones the checkpoint was "
            f"trained with (checkpoint -> now):\n{lines}\nEither restore them to resume this run, or start "
            "it from scratch with `train.resume: false` (`--force true` in the recipe), which "
            f"moves the old checkpoints into {os.path.join(self.exp_dir, 'old_<timestamp>')}/.")

    def _resume(self):
        state, path = ckpt.load_latest(self.exp_dir) if os.path.isdir(self.exp_dir) else (None, None)
        if state is None:
            return None
        self._check_same_settings(state, path)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ckpt.CheckpointError(f"{path}: the model in this checkpoint does not fit the "
                                       f"configured model ({err})") from None
        self.optimizer.load_state_dict(self._with_current_kernels(state["optimizer"]))
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.best_value, self.best_step = state.get("best_value"), state.get("best_step")
        self.validations_since_best = int(state.get("validations_since_best", 0))
        patience = self.config.early_stop_patience
        self.stopped_early = bool(state.get("stopped_early", (  # older checkpoints: recompute
            patience is not None and 0 < patience <= self.validations_since_best)))
        self.skipped_updates = int(state.get("skipped_updates", 0))
        if state.get("global_batch_size") not in (None, self.global_batch_size):
            logger.warning("%s was trained with a global batch of %s, now %s: the data order and "
                           "the result will differ from an uninterrupted run", path,
                           state["global_batch_size"], self.global_batch_size)
        rng_states = state.get("rng_states") or []
        if len(rng_states) == self.dist.world_size:
            ckpt.restore_rng_state(rng_states[self.dist.rank])
        else:
            logger.warning("%s holds RNG states of %d processes, this run has %d: generators "
                           "re-seeded", path, len(rng_states), self.dist.world_size)
            seed_everything(self.config.seed + 1000003 * self.dist.rank + self.step)
        if self.dist.is_main:
            logger.info("resumed from %s at update %d (epoch %d, step %d of %d)", path, self.step,
                        self.epoch, self.step_in_epoch, self.steps_per_epoch)
        return path

    def _with_current_kernels(self, optimizer_state):
        """A saved optimizer state with this run's kernel choice (fused / foreach / capturable),
        so a checkpoint moves between fused (GPU) and plain (CPU) runs in both directions."""
        groups = []
        for saved, current in zip(optimizer_state["param_groups"], self.optimizer.param_groups):
            saved = dict(saved)
            for key in ("fused", "foreach", "capturable"):
                if key in current:
                    saved[key] = current[key]
            groups.append(saved)
        return dict(optimizer_state, param_groups=groups)

    def _collect_skipped(self):
        """Fold the updates skipped on the device into ``skipped_updates`` (one sync)."""
        if not self.skip_on_device:
            return 0
        count = int(self._skipped_on_device.item())
        if count:
            self._skipped_on_device.zero_()
            self.skipped_updates += count
            if self.dist.is_main:
                logger.warning("%d update(s) skipped before update %d: non-finite gradient norm",
                               count, self.step)
        return count

    # ------------------------------------------------------------------ data
    def _batch_sampler(self):
        return StepBatchSampler(len(self.train_dataset), self.config.batch_size,
                                self.steps_per_epoch, self.epoch, seed=self.config.seed,
                                shuffle=self.config.shuffle, rank=self.dist.rank,
                                world_size=self.dist.world_size, start_step=self.step_in_epoch)

    def _loader_options(self):
        cfg = self.config
        options = dict(num_workers=cfg.num_workers, collate_fn=self.collate_fn,
                       pin_memory=self.pin_memory)
        if cfg.num_workers > 0:
            options["worker_init_fn"] = seed_dataloader_worker
            if cfg.prefetch_factor is not None:
                options["prefetch_factor"] = int(cfg.prefetch_factor)
        return options

    def data_loader(self):
        """The DataLoader over the training batches of the current epoch, from the current step.

        Without persistent workers a new loader per epoch (the dataset's ``set_epoch`` is called
        first); with them one loader for the trainer's life, re-pointed at each epoch.
        """
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(self.epoch)
        if self.persistent_workers:
            if self._persistent_loader is None:
                generator = torch.Generator().manual_seed(
                    (self.config.seed * 1000003 + self.dist.rank) % 2 ** 63)
                self._persistent_loader = torch.utils.data.DataLoader(
                    EpochIndexedDataset(self.train_dataset), batch_sampler=EpochBatches(),
                    generator=generator, persistent_workers=True, **self._loader_options())
            batches = self._persistent_loader.batch_sampler
            batches.sampler, batches.epoch = self._batch_sampler(), self.epoch
            return self._persistent_loader
        # A private generator, so building the loader never draws from the global torch RNG.
        generator = torch.Generator().manual_seed(
            (self.config.seed * 1000003 + self.epoch * 9973 + self.dist.rank) % 2 ** 63)
        return torch.utils.data.DataLoader(
            self.train_dataset, batch_sampler=self._batch_sampler(), generator=generator,
            **self._loader_options())

    def close_loader(self):
        """Stop the persistent workers (a later :meth:`data_loader` starts new ones)."""
        self._persistent_loader = None

    # ------------------------------------------------------------------ one update
    def train_step(self, batch):
        """One update on ``batch`` exactly as the training loop runs it: move to the device,
        ``batch_transform``, ``loss_step`` under autocast, backward, clipping, optimizer and
        schedule step. Does not advance ``self.step`` (the loop does). Returns the logged
        values as device tensors (``loss``, ``grad_norm``, ``loss_step``'s extras)."""
        cfg = self.config
        batch = move_to_device(batch, self.device)
        if self.batch_transform is not None:
            with torch.no_grad():
                batch = self.batch_transform(batch, self.device)
        if self.autocast_dtype is not None:
            autocast = torch.autocast("cuda", dtype=self.autocast_dtype)
        else:
            autocast = nullcontext()
        set_step = getattr(self.loss_step, "set_step", None)
        if set_step is not None:  # a loss step whose choices depend on the update (same on all ranks)
            set_step(self.step)
        with autocast:
            loss, logs = self.loss_step(self.train_model, batch)
        if not torch.is_tensor(loss) or loss.dim() != 0:
            raise TypeError("loss_step must return (scalar loss tensor, dict of logs), got loss "
                            f"{loss!r:.80}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        max_norm = cfg.grad_clip if cfg.grad_clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if self.skip_on_device:
            self._skipped_on_device += fused_step_unless_nonfinite(self.optimizer, grad_norm)
        elif torch.isfinite(grad_norm):  # gradients are all-reduced: every rank agrees
            self.scaler.step(self.optimizer)
        else:
            self.skipped_updates += 1
            if self.dist.is_main:
                logger.warning("update %d: gradient norm is %s, update skipped", self.step,
                               grad_norm.item())
        self.scaler.update()
        self.scheduler.step()
        values = {"loss": loss.detach().float(), "grad_norm": grad_norm.detach().float()}
        for key, value in (logs or {}).items():
            values[key] = (value.detach().float() if torch.is_tensor(value)
                           else torch.tensor(float(value)))
        return values

    # ------------------------------------------------------------------ validation
    def validate(self):
        """Run valid_fn on rank 0; returns its metrics on every rank (None without valid_fn)."""
        if self.valid_fn is None:
            return None
        metrics = None
        if self.dist.is_main:
            self.model.eval()
            with torch.no_grad():
                metrics = self.valid_fn(self.model)
            self.model.train()
            if not isinstance(metrics, dict) or not metrics:
                raise TypeError(f"valid_fn must return a non-empty dict of metrics, got {metrics!r}")
            metrics = {key: float(value) for key, value in metrics.items()}
        return distrib.broadcast_object(metrics)

    def _is_better(self, value):
        if self.best_value is None:
            return True
        return value > self.best_value if self.config.best_mode == "max" else value < self.best_value

    def _validate_and_save(self):
        metrics = self.validate()
        is_best = False
        if metrics is not None:
            key = self.config.best_metric or next(iter(metrics))
            if key not in metrics:
                raise KeyError(f"best_metric {key!r} is not among the validation metrics "
                               f"{sorted(metrics)}")
            is_best = self._is_better(metrics[key])
            if is_best:
                self.best_value, self.best_step = metrics[key], self.step
                self.validations_since_best = 0
            else:
                self.validations_since_best += 1
            patience = self.config.early_stop_patience
            if patience is not None and self.validations_since_best >= patience:
                self.stopped_early = True  # saved below: a re-run does not train on
                if self.dist.is_main:
                    logger.info("early stop: %d validations without improvement",
                                self.validations_since_best)
            if self.dist.is_main:
                for name, value in metrics.items():
                    self.writer.add_scalar(f"valid/{name}", value, self.step)
                shown = ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())
                logger.info("validation after update %d (epoch %d): %s%s", self.step, self.epoch,
                            shown, "  [best]" if is_best else "")
        self.save(is_best=is_best)

    # ------------------------------------------------------------------ main loop
    def _open_writer(self):
        if not self.dist.is_main:
            return
        from torch.utils.tensorboard import SummaryWriter
        os.makedirs(self.exp_dir, exist_ok=True)
        # purge_step drops events a killed run logged after its last checkpoint
        self.writer = SummaryWriter(os.path.join(self.exp_dir, "tensorboard"),
                                    purge_step=self.step if self.step > 0 else None)

    def _log(self, sums, count, progress):
        names = sorted(sums)
        means = distrib.all_reduce_mean(torch.stack([sums[n] for n in names]) / count)
        self._collect_skipped()
        if not self.dist.is_main:
            return
        values = dict(zip(names, means.tolist()))
        for name, value in values.items():
            self.writer.add_scalar(f"train/{name}", value, self.step)
        for group in self.optimizer.param_groups:
            self.writer.add_scalar(f"lr/{group.get('name', 'group')}", group["lr"], self.step)
        if progress is not None:
            progress.set_postfix(loss=f"{values['loss']:.4g}", epoch=self.epoch)
        else:  # no progress bar: a readable line in the log instead
            extra = " ".join(f"{n} {v:.4g}" for n, v in values.items() if n != "loss")
            logger.info("update %d/%d (epoch %d): loss %.4g lr %.3g %s", self.step,
                        self.total_steps, self.epoch, values["loss"],
                        self.optimizer.param_groups[0]["lr"], extra)

    def train(self):
        """Train until ``total_steps``; returns a summary dict."""
        cfg = self.config
        self._open_writer()
        progress = None
        if self.dist.is_main and cfg.progress:
            from tqdm import tqdm
            progress = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="upd",
                            dynamic_ncols=True)
        self.model.train()
        interrupted = False
        if self.dist.is_main and self.stopped_early:
            logger.info("this run stopped early at update %d (early_stop_patience reached): "
                        "nothing to do", self.step)
        elif self.dist.is_main and self.step >= self.total_steps:
            logger.info("this run has done its %d updates: nothing to do", self.total_steps)
        start_time = time.time()
        sums, count = {}, 0
        try:
            while self.step < self.total_steps and not (interrupted or self.stopped_early):
                for batch in self.data_loader():
                    values = self.train_step(batch)
                    self.step += 1
                    self.step_in_epoch += 1
                    end_of_epoch = self.step_in_epoch == self.steps_per_epoch
                    if end_of_epoch:
                        self.epoch += 1
                        self.step_in_epoch = 0
                    for name, value in values.items():
                        sums[name] = sums.get(name, 0) + value.to(self.device)
                    count += 1
                    if progress is not None:
                        progress.update(1)
                    if self.step % cfg.log_every == 0:
                        self._log(sums, count, progress)
                        sums, count = {}, 0
                    if cfg.stop_after is not None and self.step >= cfg.stop_after:
                        interrupted = True  # like a kill: nothing saved since the last checkpoint
                        break
                    finished = self.step >= self.total_steps
                    validate = (self.valid_fn is not None and (
                        (cfg.valid_every_steps and self.step % cfg.valid_every_steps == 0)
                        or (end_of_epoch and cfg.valid_every_epochs
                            and self.epoch % cfg.valid_every_epochs == 0)
                        or finished))
                    if validate:
                        self._validate_and_save()  # sets stopped_early when patience is reached
                    elif (finished or end_of_epoch
                          or (cfg.save_every_steps and self.step % cfg.save_every_steps == 0)):
                        self.save()
                    if finished or self.stopped_early:
                        break
        finally:
            self.close_loader()
            self._collect_skipped()
            if progress is not None:
                progress.close()
            if self.writer is not None:
                self.writer.flush()
                self.writer.close()
        summary = {"step": self.step, "epoch": self.epoch, "best_value": self.best_value,
                   "best_step": self.best_step, "interrupted": interrupted,
                   "stopped_early": self.stopped_early, "skipped_updates": self.skipped_updates,
                   "seconds": time.time() - start_time}
        if self.dist.is_main:
            logger.info("training %s at update %d: %s",
                        "interrupted" if interrupted else "finished", self.step, summary)
        return summary
