"""Benchmark: separator training speed, end to end with on-the-fly synthesis, and inference RTF.

Prints one labelled line per measurement (mixtures/s and peak memory), after a ``[setup]`` line
naming the device (``torch.cuda.get_device_name`` on GPU) and the settings:

* ``[a] train, model alone``: training steps (the trainer's own update: autocast, backward,
  clipping, optimizer) of the ResUNetK separator on a fixed batch of random tensors already on
  the device, so no data cost at all;
* ``[b] data only``: the training DataLoader (``num_workers`` workers, CPU or device synthesis)
  delivering batches, with the device-side synthesis applied, no training: what the data side
  can supply;
* ``[b] train, end to end``: the same loader feeding the training steps: what training
  actually runs at, synthesis included (one line per sound bank);
* ``[c] inference``: the separator's forward on 10 s mixtures (eval mode, no gradients, autocast
  per ``precision`` on CUDA, uncompiled as in the inference stage), as mixtures/s and real-time
  factor (compute seconds per second of audio).

Peak memory: ``torch.cuda.max_memory_allocated`` per part on CUDA; on CPU the main process's
peak resident set size so far (``ru_maxrss``; the workers are not included).

On a GPU, the whole issue-6 matrix in one command (full-size ResUNetK, batch 5, bf16 autocast,
channels_last, ``torch.compile`` with CUDA graphs (mode reduce-overhead), fused AdamW, device
synthesis with 15 workers; builds the mini
bank and the mini bank with 5.5 s room responses under ``work_dir`` first; 4 to 6 minutes, of
which 1 to 2 minutes compile)::

    python -m s5lib.bin.bench_train --preset gpu [--work_dir /tmp/s5_bench_train]

On CPU, the tiny separator of ``egs/TEMPLATE/conf/separator.yaml``::

    python -m s5lib.bin.bench_train --size tiny --steps 3 [--parts a,b,c] [--num_workers 2]

Options (``--key value``; ``--config file.yaml`` works too): ``size`` tiny | full, ``batch_size``
(5), ``steps`` (timed steps per part), ``warmup`` (untimed steps first; the first one compiles),
``num_workers``, ``prefetch_factor``, ``precision`` bf16 | fp16 | fp32, ``compile``,
``compile_mode`` (None | reduce-overhead | ...), ``channels_last``, ``fused_optimizer`` (true |
false | auto, as in the ``train:`` section of a
recipe; CUDA-only switches fall back with a warning on CPU), ``synthesis`` cpu | device,
``device`` auto | cpu | cuda, ``parts`` (a,b,c), ``bank_root`` (a given ``dev_set``; default:
build the embedded bank of ``bank_size`` under ``work_dir``), ``ir_seconds`` (room-response length
of the built bank; a list benchmarks several banks, e.g. ``'[null, 5.5]'``; null = the bank's own
0.5 s), ``segment_seconds`` (train on random crops of this length, as a recipe's
``segment_seconds``; default the whole 10 s; inference always runs on 10 s), ``year`` (synthesis
rules), ``seed``.

Notes on reading the figures: end to end, training runs at about min(model alone, data only);
the loader starts when part b starts, and the warm-up steps absorb the worker start-up. The
model is compiled once per process and reused by parts a and b (same shapes).
"""
import os
import platform
import resource
import time

import torch

from s5lib import constants
from s5lib.bin.common import RecipeError, crop_batch, run_cli
from s5lib.config import parse_config

DEFAULTS = {
    "preset": None,            # gpu: the issue-6 matrix (module docstring)
    "size": "tiny",            # tiny | full
    "batch_size": 5,
    "steps": 20,
    "warmup": 3,
    "num_workers": 2,
    "prefetch_factor": None,
    "precision": "bf16",
    "compile": False,
    "compile_mode": None,      # torch.compile mode (None: default; reduce-overhead: CUDA graphs)
    "channels_last": False,
    "fused_optimizer": "auto",
    "synthesis": "cpu",        # cpu | device
    "device": "auto",
    "parts": "a,b,c",
    "bank_root": None,
    "bank_size": "mini",
    "ir_seconds": None,        # a number, a list of numbers, or null (the bank's own)
    "segment_seconds": None,   # train on crops of this length (null: the whole 10 s)
    "year": 2025,
    "seed": 0,
    "work_dir": "/tmp/s5_bench_train",
}

GPU_PRESET = {"size": "full", "batch_size": 5, "steps": 120, "warmup": 8, "num_workers": 15,
              "precision": "bf16", "compile": True, "compile_mode": "reduce-overhead",
              "channels_last": True, "fused_optimizer": True, "synthesis": "device",
              "device": "cuda", "parts": "a,b,c",
              "bank_size": "mini", "ir_seconds": [None, 5.5]}

# the tiny separator of egs/TEMPLATE/conf/separator.yaml
TINY_SEPARATOR = {"type": "resunetk", "channels": [8, 16, 16, 32, 32, 32],
                  "bottleneck_channels": 32, "condition_size": 64, "n_fft": 512, "hop_length": 256}
FULL_SEPARATOR = {"type": "resunetk"}


class RandomMixtures(torch.utils.data.Dataset):
    """Random training items in the dataset format (mixture, references, 3 active slots)."""

    def __init__(self, size, n_samples=constants.N_SAMPLES, seed=0):
        self.size, self.n_samples, self.seed = int(size), int(n_samples), int(seed)

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(self.seed * 100003 + int(index))
        k = constants.MAX_TARGETS
        classes = torch.randperm(constants.N_CLASSES, generator=generator)[:k]
        slot_onehot = torch.zeros(k, constants.N_CLASSES)
        slot_onehot[torch.arange(k), classes] = 1.0
        return {
            "mixture": 0.1 * torch.randn(constants.N_FOA_CHANNELS, self.n_samples, generator=generator),
            "references": 0.05 * torch.randn(k, self.n_samples, generator=generator),
            "slot_onehot": slot_onehot,
            "label_index": classes,
            "active": torch.ones(k, dtype=torch.bool),
            "index": torch.tensor(int(index)),
        }


def resolve_options(cfg):
    """Apply ``--preset`` (explicit command-line keys still win) and check the values."""
    if cfg["preset"] not in (None, "gpu"):
        raise RecipeError(f"--preset must be gpu (or left out), got {cfg['preset']!r}")
    if cfg["size"] not in ("tiny", "full"):
        raise RecipeError(f"--size must be tiny or full, got {cfg['size']!r}")
    if cfg["synthesis"] not in ("cpu", "device"):
        raise RecipeError(f"--synthesis must be cpu or device, got {cfg['synthesis']!r}")
    parts = [p.strip() for p in str(cfg["parts"]).split(",") if p.strip()]
    unknown = sorted(set(parts) - {"a", "b", "c"})
    if unknown or not parts:
        raise RecipeError(f"--parts must list some of a,b,c, got {cfg['parts']!r}")
    cfg["parts"] = parts
    for key in ("batch_size", "steps"):
        if int(cfg[key]) < 1:
            raise RecipeError(f"--{key} must be >= 1, got {cfg[key]}")
    if int(cfg["warmup"]) < 0 or int(cfg["num_workers"]) < 0:
        raise RecipeError("--warmup and --num_workers must be >= 0")
    ir = cfg["ir_seconds"]
    cfg["ir_seconds"] = list(ir) if isinstance(ir, (list, tuple)) else [ir]
    return cfg


def peak_memory(device):
    """Peak memory since the last reset, as text."""
    if device.type == "cuda":
        return f"peak {torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB allocated"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (main process)"


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def report(label, mixtures, seconds, detail):
    rate = mixtures / seconds
    print(f"{label}: {rate:.1f} mixtures/s ({1e3 * seconds / mixtures:.1f} ms per mixture; "
          f"{detail})", flush=True)
    return rate


def build_banks(cfg):
    """[(name, root)] of the sound banks for part b (built when not given)."""
    if cfg["bank_root"]:
        if not os.path.isdir(cfg["bank_root"]):
            raise RecipeError(f"--bank_root {cfg['bank_root']}: not a directory")
        return [(os.path.basename(os.path.normpath(cfg["bank_root"])), cfg["bank_root"])]
    from s5lib.data.soundbank import build_mini_soundbank
    banks = []
    for ir in cfg["ir_seconds"]:
        suffix = "" if ir is None else f"_ir{float(ir):g}s"
        root = os.path.join(cfg["work_dir"], f"dev_set_{cfg['bank_size']}{suffix}")
        start = time.perf_counter()
        summary = build_mini_soundbank(root, seed=int(cfg["seed"]), size=cfg["bank_size"],
                                       ir_seconds=None if ir is None else float(ir))
        state = "found" if summary.get("skipped") else f"built in {time.perf_counter() - start:.0f} s"
        print(f"[bank] {root}: {cfg['bank_size']} bank, room responses "
              f"{summary['ir_seconds']:g} s ({state})", flush=True)
        banks.append((f"{cfg['bank_size']} bank, {summary['ir_seconds']:g} s rooms", root))
    return banks


def run_training_steps(trainer, batches, warmup, steps):
    """Seconds for ``steps`` train steps after ``warmup`` untimed ones (batches: an iterator)."""
    for _ in range(warmup):
        trainer.train_step(next(batches))
    synchronize(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(batches))
    synchronize(trainer.device)
    return time.perf_counter() - start


def repeat(batch):
    while True:
        yield batch


def part_a(trainer, batch, cfg):
    device = trainer.device
    reset_peak(device)
    transform, trainer.batch_transform = trainer.batch_transform, None
    try:
        seconds = run_training_steps(trainer, repeat(batch), int(cfg["warmup"]), int(cfg["steps"]))
    finally:
        trainer.batch_transform = transform
    n = int(cfg["steps"]) * int(cfg["batch_size"])
    return report("[a] train, model alone (random tensors)", n, seconds,
                  f"batch {cfg['batch_size']}, {cfg['steps']} steps after {cfg['warmup']} warm-up; "
                  f"{peak_memory(device)}")


def part_b(trainer, bank_name, bank_root, cfg):
    from s5lib.bin.train_separator import make_train_data
    from s5lib.data.synth import SynthConfig
    from s5lib.train.trainer import move_to_device

    device = trainer.device
    batch_size, warmup, steps = int(cfg["batch_size"]), int(cfg["warmup"]), int(cfg["steps"])
    dataset, collate_fn, transform = make_train_data(
        cfg["synthesis"], device, bank_root, "train", SynthConfig(year=int(cfg["year"])),
        epoch_size=trainer.steps_per_epoch * batch_size, seed=int(cfg["seed"]))
    trainer.train_dataset, trainer.collate_fn, trainer.batch_transform = dataset, collate_fn, transform
    where = (f"{bank_name}, synthesis {cfg['synthesis']}, {cfg['num_workers']} workers, "
             f"batch {batch_size}")
    rates = {}

    # data only: the loader (and the device synthesis), no training
    def deliver(batch):
        batch = move_to_device(batch, device)
        return transform(batch, device) if transform is not None else batch

    reset_peak(device)
    batches = iter(trainer.data_loader())
    for _ in range(warmup):
        deliver(next(batches))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        deliver(next(batches))
    synchronize(device)
    seconds = time.perf_counter() - start
    del batches
    rates["data"] = report(f"[b] data only ({where})", steps * batch_size, seconds,
                           f"{steps} batches after {warmup} warm-up; {peak_memory(device)}")

    # end to end: the same loader feeding the training steps
    reset_peak(device)
    seconds = run_training_steps(trainer, iter(trainer.data_loader()), warmup, steps)
    rates["train"] = report(f"[b] train, end to end ({where})", steps * batch_size, seconds,
                            f"{steps} steps after {warmup} warm-up; {peak_memory(device)}")
    return rates


def part_c(trainer, batch, cfg):
    device = trainer.device
    model = trainer.model
    batch_size, steps, warmup = int(cfg["batch_size"]), int(cfg["steps"]), max(1, int(cfg["warmup"]))
    mixture, query = batch["mixture"], batch["slot_onehot"].flatten(1)
    autocast = (torch.autocast("cuda", dtype=trainer.autocast_dtype)
                if trainer.autocast_dtype is not None else torch.autocast("cpu", enabled=False))
    reset_peak(device)
    model.eval()
    try:
        with torch.inference_mode(), autocast:
            for _ in range(warmup):
                model(mixture, query)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                model(mixture, query)
            synchronize(device)
            seconds = time.perf_counter() - start
    finally:
        model.train()
    n = steps * batch_size
    audio_seconds = n * constants.N_SAMPLES / constants.SAMPLE_RATE
    rtf = seconds / audio_seconds
    print(f"[c] inference (10 s mixtures, batch {batch_size}, eval, no grad, uncompiled): "
          f"RTF {rtf:.5f} ({n / seconds:.1f} mixtures/s; {steps} batches after {warmup} warm-up; "
          f"{peak_memory(device)})", flush=True)
    return rtf


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    if cfg["preset"] == "gpu":
        explicit = parse_config(dict.fromkeys(DEFAULTS), argv)  # keys given on the command line
        for key, value in GPU_PRESET.items():
            if explicit.get(key) is None:
                cfg[key] = value
    cfg = resolve_options(cfg)
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device cuda (or --preset gpu) asked for, but CUDA is not available")

    from s5lib.bin.train_separator import make_loss_step
    from s5lib.models.factory import build_separator
    from s5lib.train.distributed import init_distributed
    from s5lib.train.trainer import Trainer

    banks = build_banks(cfg) if "b" in cfg["parts"] else []
    batch_size, steps, warmup = int(cfg["batch_size"]), int(cfg["steps"]), int(cfg["warmup"])
    torch.manual_seed(int(cfg["seed"]))
    model = build_separator(TINY_SEPARATOR if cfg["size"] == "tiny" else FULL_SEPARATOR)
    n_params = sum(p.numel() for p in model.parameters())
    dist = init_distributed(cfg["device"])
    steps_per_epoch = warmup + steps + 1
    train_cfg = {"batch_size": batch_size, "max_steps": 10 ** 9, "steps_per_epoch": steps_per_epoch,
                 "num_workers": int(cfg["num_workers"]), "prefetch_factor": cfg["prefetch_factor"],
                 "precision": cfg["precision"], "device": cfg["device"], "compile": cfg["compile"],
                 "compile_mode": cfg["compile_mode"], "channels_last": cfg["channels_last"],
                 "fused_optimizer": cfg["fused_optimizer"],
                 "lr": 1e-4, "amsgrad": True, "grad_clip": 0.5, "seed": int(cfg["seed"]),
                 "resume": False, "progress": False}
    random_set = RandomMixtures(steps_per_epoch * batch_size, seed=int(cfg["seed"]))
    segment = float(cfg["segment_seconds"]) if cfg["segment_seconds"] else None
    trainer = Trainer(model, random_set, None,
                      make_loss_step("resunetk", "masked_multislot_neg_snr", {}, segment), train_cfg,
                      os.path.join(cfg["work_dir"], "exp_unused"), dist_info=dist)
    device = trainer.device
    precision = cfg["precision"] if device.type == "cuda" else "fp32"
    print(f"[setup] device {device_name(device)}; torch {torch.__version__}; separator "
          f"{cfg['size']} ResUNetK ({n_params:,} parameters); batch {batch_size}; precision "
          f"{precision}; compile {trainer.use_compile}; channels_last {trainer.use_channels_last}; "
          f"fused optimizer {trainer.use_fused_optimizer}; synthesis {cfg['synthesis']}; "
          f"{cfg['num_workers']} workers; training on {segment or 10:g} s; steps {steps} "
          f"(+{warmup} warm-up); parts "
          f"{','.join(cfg['parts'])}", flush=True)

    random_batch = {key: value.to(device) for key, value in
                    torch.utils.data.default_collate([random_set[i] for i in range(batch_size)]).items()}
    # part a: random tensors of the training length, so the compiled graph serves part b too
    train_batch = crop_batch(random_batch, segment, constants.SAMPLE_RATE)
    if "a" in cfg["parts"]:
        part_a(trainer, train_batch, cfg)
    elif trainer.use_compile and banks:
        # compile before any loader starts, so workers do not fill their queues meanwhile
        run_training_steps(trainer, repeat(train_batch), max(1, warmup), 1)
    for name, root in banks:
        part_b(trainer, name, root, cfg)
        trainer.close_loader()
    if "c" in cfg["parts"]:
        part_c(trainer, random_batch, cfg)


if __name__ == "__main__":
    run_cli(main)
