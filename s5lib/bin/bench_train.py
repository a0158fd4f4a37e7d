"""Benchmark: training speed of every trainer of the baseline recipe (model alone, data only, end
to end with on-the-fly synthesis) and inference speed.

``model`` picks what is measured:

* ``separator`` (default): the ResUNetK separator of stage 3 (loss ``masked_multislot_neg_snr``,
  synthesis rules of ``year``);
* ``tagger_2025_head``: the 2025 M2D tagger (``m2d_2025``), first official phase: only the head
  trains (``trainable: head``), the encoder runs forward only; 2025 rules;
* ``tagger_2025``: the same tagger, second official phase (``trainable: 2_blocks``: the last two
  encoder blocks, the final norm and the head); 2025 rules;
* ``tagger_2026_4c``: the 2026 4-channel tagger (``m2d_2026_4c``, every parameter trains); 2026
  rules;
* ``all``: the four above in this order, in one process, each with its own Trainer, after a
  ``[model i/4]`` header line; a ``[summary]`` line per model and bank closes the run;
* ``cpjku_separator``: CP-JKU's AudioSep-SED separator (egs/cpjku: STFT 2048/160 at full size,
  Time-FiLM, embedding injection, the trainable M2D SED inside; batch 2); ``cpjku_separator_iter3``:
  the same + DPRNN with iterative refinement N = 3 (n_iter ~ U{1..3} per update, batch 1); part c
  then also times 1, 2 and 3 refinement steps (the cost of one more step); ``cpjku``: both. On a
  GPU: ``--preset gpu --model cpjku``;
* ``redux_separator``: REDUX's attentive ResUNeXt (egs/redux: 3 slots, 8 ResNeXt blocks per level
  at full size, 44.6 M parameters; SpecAugment on, as in its second training phase; batch 5 as the
  baseline's). On a GPU: ``--preset gpu --model redux_separator``;
* ``kubig_separator``: KUBIG's end-to-end separator (egs/kubig: at full size the frozen BEATs
  iter3+ encoder, 90.3 M parameters, under 1.58 M trainable ones; joint PIT loss; batch 4 as the
  report's; 2026 rules; random weights, as no release file is read). The ``[setup]`` line gives
  total and trainable parameters, and a ``[check]`` line after part a counts the frozen encoder's
  parameters that hold a gradient or optimizer state (both must be 0). On a GPU: ``--preset gpu
  --model kubig_separator``.

The taggers use the loss of stage 2 (:func:`s5lib.bin.train_tagger.make_loss_step`: BCE on
``label_vector`` for 2025, slot PIT cross-entropy on ``label_index`` for 2026) and train on the
whole 10 s (``segment_seconds`` is the separator's only).

Per model, one labelled line per measurement (mixtures/s and peak memory), after a ``[setup]``
line naming the device (``torch.cuda.get_device_name`` on GPU) and the settings (for a tagger:
its parameters and how many of them train):

* ``[a] train, model alone``: training steps (the trainer's own update: autocast, backward,
  clipping, optimizer) on a fixed batch of random tensors already on the device, so no data
  cost at all. The random items carry what the loss reads: a 4-channel mixture, references and
  slot queries for the separator; a 1-channel mixture (channel 0) and a multi-hot
  ``label_vector`` (18) for the 2025 tagger; a 4-channel mixture and ``label_index`` (3 slots,
  18 = silence) for the 2026 tagger;
* ``[b] data only``: the training DataLoader (``num_workers`` workers, CPU or device synthesis)
  delivering batches, with the device-side synthesis applied, no training: what the data side
  can supply. The separator's data come from :func:`s5lib.bin.train_separator.make_train_data`,
  the taggers' from :func:`s5lib.data.training_data.build_training_data` exactly as stage 2
  builds them (no references; channel 0 only for the 1-channel tagger); no data pool;
* ``[b] train, end to end``: the same loader feeding the training steps: what training
  actually runs at, synthesis included (one line per sound bank);
* ``[b] end to end / model alone``: the ratio of the two training rates, in percent (target on a
  GPU node: >= 90 %, i.e. the data side does not hold the model back); printed when part a ran;
* ``[c] inference``: the model's forward on 10 s mixtures (eval mode, no gradients, autocast
  per ``precision`` on CUDA, uncompiled as in the inference stage), as mixtures/s and real-time
  factor (compute seconds per second of audio); for a tagger, the tagger's forward (logits).

Peak memory: ``torch.cuda.max_memory_allocated`` per part on CUDA; on CPU the main process's
peak resident set size so far (``ru_maxrss``; the workers are not included).

On a GPU, every trainer in one command (full sizes: ResUNetK and M2D ViT-Base; bf16 autocast,
fused AdamW, device synthesis with 15 workers; builds the mini bank and the mini bank with 5.5 s
room responses under ``work_dir`` first). The separator: batch 5, channels_last,
``torch.compile`` with CUDA graphs (mode reduce-overhead), 120 steps; the taggers: batch 32
(phase 1), 16 (phase 2) and 32 (4 channels), uncompiled (the M2D encoder is not known to work
under CUDA graphs; an explicit ``--compile true`` compiles them too), 60 steps. An explicit
``--batch_size`` (or ``--steps``, ...) applies to every model::

    python -m s5lib.bin.bench_train --preset gpu --model all [--work_dir /tmp/s5_bench_train]

``--preset gpu`` alone (``--model separator``) is the issue-6 matrix of the separator (4 to 6
minutes, of which 1 to 2 minutes compile).

On CPU, the tiny models (the separator of ``egs/TEMPLATE/conf/separator.yaml``, the quick-start
tagger of ``egs/baseline/conf/tagger.yaml``: M2D 96-d, 3 blocks, 3 heads, 80x8 patches,
``mean_max`` pooling; batch 5 for the separator, 8 for the taggers; the first command takes
about 3 minutes on 2 busy cores, most of it the separator)::

    OMP_NUM_THREADS=1 python -m s5lib.bin.bench_train --size tiny --model all --steps 2 \
        --warmup 1 --num_workers 1 --bank_size tiny

    python -m s5lib.bin.bench_train --size tiny --steps 3 [--parts a,b,c] [--num_workers 2]

Options (``--key value``; ``--config file.yaml`` works too): ``model`` separator |
tagger_2025_head | tagger_2025 | tagger_2026_4c | all, ``size`` tiny | full, ``batch_size``
(default per model: separator 5; taggers 8 tiny, 32 / 16 / 32 full), ``steps`` (timed steps per
part), ``warmup`` (untimed steps first; the first one compiles), ``num_workers``,
``prefetch_factor``, ``precision`` bf16 | fp16 | fp32, ``compile``, ``compile_mode`` (None |
reduce-overhead | ...), ``channels_last``, ``fused_optimizer`` (true | false | auto, as in the
``train:`` section of a recipe; CUDA-only switches fall back with a warning on CPU), ``synthesis``
cpu | device, ``device`` auto | cpu | cuda, ``parts`` (a,b,c), ``bank_root`` (a given
``dev_set``; default: build the embedded bank of ``bank_size`` (mini | tiny) under ``work_dir``),
``ir_seconds`` (room-response length of the built bank; a list benchmarks several banks, e.g.
``'[null, 5.5]'``; null = the bank's own: 0.5 s mini, 0.25 s tiny), ``segment_seconds`` (the separator trains on
random crops of this length, as a recipe's ``segment_seconds``; default the whole 10 s;
inference always runs on 10 s), ``year`` (synthesis rules of the separator; the taggers use
their own: 2025, 2025, 2026), ``seed``.

Notes on reading the figures: end to end, training runs at about min(model alone, data only);
the loader starts when part b starts, and the warm-up steps absorb the worker start-up. A
compiled model is compiled once per process and reused by parts a and b (same shapes).
"""
import gc
import os
import platform
import resource
import time

import torch

from s5lib import constants
from s5lib.bin.common import RecipeError, crop_batch, run_cli
from s5lib.bin.train_tagger import tagger_channels
from s5lib.infer.end_to_end import is_end_to_end
from s5lib.config import parse_config

DEFAULTS = {
    "preset": None,            # gpu: every model at full size on a GPU node (module docstring)
    "model": "separator",      # separator | tagger_2025_head | tagger_2025 | tagger_2026_4c | all
                               # | cpjku_separator | cpjku_separator_iter3 | cpjku | redux_separator
    "size": "tiny",            # tiny | full
    "batch_size": None,        # default: the model's own (separator 5; taggers: see TAGGERS)
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
    "segment_seconds": None,   # the separator trains on crops of this length (null: the whole 10 s)
    "year": 2025,              # synthesis rules of the separator (the taggers use their own)
    "seed": 0,
    "work_dir": "/tmp/s5_bench_train",
}

GPU_PRESET = {"size": "full", "steps": 120, "warmup": 8, "num_workers": 15,
              "precision": "bf16", "compile": True, "compile_mode": "reduce-overhead",
              "channels_last": True, "fused_optimizer": True, "synthesis": "device",
              "device": "cuda", "parts": "a,b,c",
              "bank_size": "mini", "ir_seconds": [None, 5.5]}
# what the GPU preset changes for the taggers (keys given explicitly still win): uncompiled (the
# M2D encoder is not known to run under CUDA graphs), no channels_last (a ViT has one 4-d weight),
# fewer steps (each one is 3 to 6 times the separator's batch)
GPU_PRESET_TAGGERS = {"compile": False, "compile_mode": None, "channels_last": False, "steps": 60}

MODELS = ("separator", "tagger_2025_head", "tagger_2025", "tagger_2026_4c")
# CP-JKU's AudioSep-SED separator (egs/cpjku): plain, and iterative (+ DPRNN, N = 3); --model cpjku
# runs both; not part of 'all' (the baseline's trainers)
CPJKU_MODELS = ("cpjku_separator", "cpjku_separator_iter3")
# REDUX's attentive ResUNeXt (egs/redux), phase 2 (SpecAugment on)
REDUX_MODELS = ("redux_separator",)
# KUBIG's end-to-end separator (egs/kubig): frozen BEATs + trainable heads, joint PIT loss
KUBIG_MODELS = ("kubig_separator",)
SEPARATORS = ("separator",) + CPJKU_MODELS + REDUX_MODELS + KUBIG_MODELS
KUBIG_TINY = {"type": "kubig", "beats_preset": "small", "hidden_dim": 128, "n_compressed": 16,
              "temporal_layers": 2, "n_fft": 1024, "hop_length": 512}  # egs/kubig/conf/separator.yaml
KUBIG_FULL = {"type": "kubig"}                                      # egs/kubig/conf/full/separator.yaml
KUBIG_BATCH_SIZE = 4
REDUX_TINY = {"type": "resunextk", "channels": [8, 16, 16, 32, 32], "pre_channels": 8,
              "bottleneck_channels": 32, "blocks_per_level": 1, "intermediate_blocks": 3,
              "condition_size": 64, "n_fft": 512, "hop_length": 256, "momentum": 0.1,
              "spec_augment": True, "freq_mask": 40, "time_mask": 50}   # egs/redux/conf/separator.yaml
REDUX_FULL = {"type": "resunextk", "spec_augment": True}           # egs/redux/conf/full/separator.yaml
CPJKU_TINY_SED = {"m2d": {"embed_dim": 96, "depth": 3, "num_heads": 3, "patch_size": [80, 8]},
                  "seq_len": 250}
CPJKU_TINY = {"type": "audiosep_sed", "channels": [8, 16, 16, 32, 32, 32], "bottleneck_channels": 32,
              "condition_size": 64, "n_fft": 512, "hop_length": 256, "momentum": 0.1,
              "dprnn_hidden": 16, "sed": CPJKU_TINY_SED}   # egs/cpjku/conf/separator.yaml
CPJKU_FULL = {"type": "audiosep_sed", "sed": {}}          # egs/cpjku/conf/full/separator.yaml
CPJKU_VARIANTS = {"cpjku_separator": {}, "cpjku_separator_iter3": {"dprnn": True, "refine_iterations": 3}}
# the report's batch per GPU: 2 (N = 1, 2), 1 (N = 3, 4)
CPJKU_BATCH_SIZE = {"cpjku_separator": 2, "cpjku_separator_iter3": 1}

# the tiny separator of egs/TEMPLATE/conf/separator.yaml
TINY_SEPARATOR = {"type": "resunetk", "channels": [8, 16, 16, 32, 32, 32],
                  "bottleneck_channels": 32, "condition_size": 64, "n_fft": 512, "hop_length": 256}
FULL_SEPARATOR = {"type": "resunetk"}
SEPARATOR_BATCH_SIZE = 5

# the quick-start tagger of egs/baseline/conf/tagger.yaml; full: the M2DConfig defaults (ViT-Base)
TINY_TAGGER = {"m2d": {"embed_dim": 96, "depth": 3, "num_heads": 3, "patch_size": [80, 8]},
               "pooling": "mean_max"}
FULL_TAGGER = {"m2d": {}}

# the trainers of stage 2: model section, synthesis year, and the official train settings
# (egs/baseline/conf/full/tagger_m2dat.yaml; batch per size: tiny as the quick start)
TAGGERS = {
    "tagger_2025_head": {"type": "m2d_2025", "trainable": "head", "year": 2025, "lr": 1e-3,
                         "batch_size": {"tiny": 8, "full": 32},
                         "title": "2025 M2D tagger, phase 1 (head only)"},
    "tagger_2025": {"type": "m2d_2025", "trainable": "2_blocks", "year": 2025, "lr": 1e-5,
                    "batch_size": {"tiny": 8, "full": 16},
                    "title": "2025 M2D tagger, phase 2 (last 2 blocks and head)"},
    "tagger_2026_4c": {"type": "m2d_2026_4c", "trainable": "all", "year": 2026, "lr": 1e-3,
                       "batch_size": {"tiny": 8, "full": 32},
                       "title": "2026 4-channel M2D tagger (all parameters)"},
}
SEPARATOR_TITLE = "ResUNetK separator"
CPJKU_TITLES = {"cpjku_separator": "CP-JKU AudioSep-SED separator",
                "cpjku_separator_iter3": "CP-JKU AudioSep-SED separator, + DPRNN, iterative N = 3"}


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
            "doa": torch.nn.functional.normalize(torch.randn(k, 3, generator=generator), dim=-1),
            "index": torch.tensor(int(index)),
        }


class RandomTaggerItems(torch.utils.data.Dataset):
    """Random tagger training items: a mixture of ``n_channels`` channels and the labels the
    tagger losses read, for 1 to 3 targets: ``label_vector`` (18,) multi-hot and ``label_index``
    (3,) class per slot with 18 (silence) in the empty slots."""

    def __init__(self, size, n_channels, n_samples=constants.N_SAMPLES, seed=0):
        self.size, self.n_channels = int(size), int(n_channels)
        self.n_samples, self.seed = int(n_samples), int(seed)

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(self.seed * 100019 + int(index))
        k = constants.MAX_TARGETS
        n_targets = int(torch.randint(1, k + 1, (), generator=generator))
        classes = torch.randperm(constants.N_CLASSES, generator=generator)[:n_targets]
        label_index = torch.full((k,), constants.SILENCE_INDEX, dtype=torch.long)
        label_index[:n_targets] = classes
        label_vector = torch.zeros(constants.N_CLASSES)
        label_vector[classes] = 1.0
        return {
            "mixture": 0.1 * torch.randn(self.n_channels, self.n_samples, generator=generator),
            "label_vector": label_vector,
            "label_index": label_index,
            "n_targets": torch.tensor(n_targets),
            "index": torch.tensor(int(index)),
        }


def resolve_options(cfg):
    """Apply ``--preset`` (explicit command-line keys still win) and check the values."""
    if cfg["preset"] not in (None, "gpu"):
        raise RecipeError(f"--preset must be gpu (or left out), got {cfg['preset']!r}")
    choices = MODELS + CPJKU_MODELS + ("all", "cpjku") + REDUX_MODELS + KUBIG_MODELS
    if cfg["model"] not in choices:
        raise RecipeError(f"--model must be one of {', '.join(choices)}; got {cfg['model']!r}")
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
        if cfg[key] is not None and int(cfg[key]) < 1:
            raise RecipeError(f"--{key} must be >= 1, got {cfg[key]}")
    if int(cfg["warmup"]) < 0 or int(cfg["num_workers"]) < 0:
        raise RecipeError("--warmup and --num_workers must be >= 0")
    ir = cfg["ir_seconds"]
    cfg["ir_seconds"] = list(ir) if isinstance(ir, (list, tuple)) else [ir]
    return cfg


def model_options(cfg, name, explicit):
    """The settings of one model: ``cfg`` with the model's own batch size, year and (under the
    GPU preset) the tagger overrides, where the key was not given explicitly."""
    opts = dict(cfg)
    tagger = TAGGERS.get(name)
    if tagger is not None and cfg["preset"] == "gpu":
        for key, value in GPU_PRESET_TAGGERS.items():
            if key not in explicit:
                opts[key] = value
    if opts["batch_size"] is None:
        opts["batch_size"] = (tagger["batch_size"][opts["size"]] if tagger is not None
                              else KUBIG_BATCH_SIZE if name in KUBIG_MODELS
                              else CPJKU_BATCH_SIZE.get(name, SEPARATOR_BATCH_SIZE))
    opts["batch_size"] = int(opts["batch_size"])
    if name in KUBIG_MODELS:
        opts["year"] = 2026  # a 2026-only system
    if tagger is not None:
        opts["year"] = tagger["year"]
        opts["segment_seconds"] = None  # the taggers read the whole 10 s
        if tagger["type"] == "m2d_2025" and opts["batch_size"] < 2:
            raise RecipeError(f"--batch_size must be >= 2 for {name} (its head normalises with "
                              f"BatchNorm over the batch), got {opts['batch_size']}")
    return opts


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
        try:
            summary = build_mini_soundbank(root, seed=int(cfg["seed"]), size=cfg["bank_size"],
                                           ir_seconds=None if ir is None else float(ir))
        except ValueError as err:
            raise RecipeError(f"--bank_size / --ir_seconds: {err}") from None
        state = "found" if summary.get("skipped") else f"built in {time.perf_counter() - start:.0f} s"
        print(f"[bank] {root}: {cfg['bank_size']} bank, room responses "
              f"{summary['ir_seconds']:g} s ({state})", flush=True)
        banks.append((f"{cfg['bank_size']} bank, {summary['ir_seconds']:g} s rooms", root))
    return banks


def run_training_steps(trainer, batches, warmup, steps):
    """Seconds for ``steps`` train steps after ``warmup`` untimed ones (batches: an iterator).
    The update counter moves as in training (a refining separator draws its depth from it)."""
    for _ in range(warmup):
        trainer.train_step(next(batches))
        trainer.step += 1
    synchronize(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(batches))
        trainer.step += 1
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


def make_data(name, model, bank_root, device, cfg, epoch_size):
    """(dataset, collate_fn, batch_transform) of the training mixtures, as the model's stage
    builds them (separator: stage 3's ``make_train_data``; taggers: stage 2's request)."""
    from s5lib.data.synth import SynthConfig

    synth = SynthConfig(year=int(cfg["year"]))
    if name in SEPARATORS:
        from s5lib.bin.train_separator import make_train_data
        return make_train_data(cfg["synthesis"], device, bank_root, "train", synth,
                               epoch_size=epoch_size, seed=int(cfg["seed"]))
    from s5lib.data.training_data import TrainingDataError, build_training_data
    try:
        data = build_training_data(bank_root, "train", synth, epoch_size, int(cfg["seed"]),
                                   cfg["synthesis"], device, with_references=False,
                                   channels=tagger_channels(model))
    except TrainingDataError as err:
        raise RecipeError(f"bench_train: {err}") from None
    return data.dataset, data.collate_fn, data.batch_transform


def part_b(trainer, name, bank_name, bank_root, cfg, rate_alone=None):
    from s5lib.train.trainer import move_to_device

    device = trainer.device
    batch_size, warmup, steps = int(cfg["batch_size"]), int(cfg["warmup"]), int(cfg["steps"])
    dataset, collate_fn, transform = make_data(name, trainer.model, bank_root, device, cfg,
                                               trainer.steps_per_epoch * batch_size)
    trainer.train_dataset, trainer.collate_fn, trainer.batch_transform = dataset, collate_fn, transform
    where = (f"{bank_name}, synthesis {cfg['synthesis']}, {cfg['num_workers']} workers, "
             f"batch {batch_size}")
    if name not in SEPARATORS:
        channels = tagger_channels(trainer.model)
        where += (f", {cfg['year']} rules, no references, "
                  f"{'channel 0' if channels == [0] else '4 channels'}")
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
    if rate_alone:
        rates["ratio"] = 100.0 * rates["train"] / rate_alone
        print(f"[b] end to end / model alone ({bank_name}): {rates['ratio']:.1f} % "
              f"({rates['train']:.1f} / {rate_alone:.1f} mixtures/s; target on a GPU node "
              f">= 90 %)", flush=True)
    return rates


def part_c(trainer, batch, cfg, is_tagger=False):
    device = trainer.device
    model = trainer.model
    batch_size, steps, warmup = int(cfg["batch_size"]), int(cfg["steps"]), max(1, int(cfg["warmup"]))
    mixture = batch["mixture"]
    if is_tagger:
        inputs = (mixture,)
    elif getattr(model, "kind", "") == "audiosep_sed":
        inputs = (mixture, batch["slot_onehot"][:, 0])   # one 18-d query per row
    elif is_end_to_end(model):
        inputs = (mixture,)                              # end to end: no query
    else:
        inputs = (mixture, batch["slot_onehot"].flatten(1))
    autocast = (torch.autocast("cuda", dtype=trainer.autocast_dtype)
                if trainer.autocast_dtype is not None else torch.autocast("cpu", enabled=False))
    reset_peak(device)
    model.eval()
    try:
        with torch.inference_mode(), autocast:
            for _ in range(warmup):
                model(*inputs)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                model(*inputs)
            synchronize(device)
            seconds = time.perf_counter() - start
    finally:
        model.train()
    n = steps * batch_size
    audio_seconds = n * constants.N_SAMPLES / constants.SAMPLE_RATE
    rtf = seconds / audio_seconds
    what = "tagger forward, " if is_tagger else ""
    print(f"[c] inference ({what}10 s mixtures, batch {batch_size}, eval, no grad, uncompiled): "
          f"RTF {rtf:.5f} ({n / seconds:.1f} mixtures/s; {steps} batches after {warmup} warm-up; "
          f"{peak_memory(device)})", flush=True)
    if getattr(model, "feedback_bn", None) is not None:
        refinement_cost(model, inputs, autocast, device, steps, audio_seconds)
    return rtf


def refinement_cost(model, inputs, autocast, device, steps, audio_seconds, depths=(1, 2, 3)):
    """[c] inference of a refining separator at 1, 2, 3 steps: RTF and the cost of one more step
    (the SED pass and the FiLM terms are paid once, the U-Net once per step)."""
    model.eval()
    rtfs = []
    try:
        with torch.inference_mode(), autocast:
            for depth in depths:
                model(*inputs, n_iter=depth)
                synchronize(device)
                start = time.perf_counter()
                for _ in range(steps):
                    model(*inputs, n_iter=depth)
                synchronize(device)
                rtfs.append((time.perf_counter() - start) / audio_seconds)
    finally:
        model.train()
    per_step = (rtfs[-1] - rtfs[0]) / (depths[-1] - depths[0])
    print(f"[c] refinement steps {', '.join(map(str, depths))}: RTF "
          f"{', '.join(f'{r:.5f}' for r in rtfs)}; each further step RTF {per_step:.5f} "
          f"({100 * per_step / rtfs[0]:.0f} % of the first)", flush=True)
    return rtfs


def train_config(cfg, lr, extra=None):
    """The ``train:`` settings of the benchmark's Trainer (nothing is saved or validated)."""
    steps_per_epoch = int(cfg["warmup"]) + int(cfg["steps"]) + 1
    out = {"batch_size": int(cfg["batch_size"]), "max_steps": 10 ** 9,
           "steps_per_epoch": steps_per_epoch,
           "num_workers": int(cfg["num_workers"]), "prefetch_factor": cfg["prefetch_factor"],
           "precision": cfg["precision"], "device": cfg["device"], "compile": cfg["compile"],
           "compile_mode": cfg["compile_mode"], "channels_last": cfg["channels_last"],
           "fused_optimizer": cfg["fused_optimizer"],
           "lr": lr, "amsgrad": True, "grad_clip": 0.5, "seed": int(cfg["seed"]),
           "resume": False, "progress": False}
    out.update(extra or {})
    return out


def build_separator_trainer(cfg, dist, name="separator"):
    """(trainer, random set, setup text) of a separator (the baseline's ResUNetK or CP-JKU's)."""
    from s5lib.bin.train_separator import make_loss_step
    from s5lib.models.factory import build_separator
    from s5lib.train.trainer import Trainer

    torch.manual_seed(int(cfg["seed"]))
    segment = float(cfg["segment_seconds"]) if cfg["segment_seconds"] else None
    if name in CPJKU_MODELS:
        sized = CPJKU_TINY if cfg["size"] == "tiny" else CPJKU_FULL
        model = build_separator(dict(sized, **CPJKU_VARIANTS[name]))
        n_iter = model.guidance.refine_iterations
        loss_step = make_loss_step("audiosep_sed", "neg_snr", {}, segment, refine_iterations=n_iter,
                                   seed=int(cfg["seed"]))
        n_sed = sum(p.numel() for p in model.sed.parameters())
        what = (f"separator {cfg['size']} AudioSep-SED ({sum(p.numel() for p in model.parameters()):,}"
                f" parameters, of which SED {n_sed:,}; n_fft {model.config.n_fft}, dprnn "
                f"{model.guidance.dprnn}, refinement N = {n_iter}: n_iter ~ U{{1..{n_iter}}})")
        param_groups = [{"match": r"sed\.", "lr": 4e-4, "layer_decay": 0.9}]
    elif name in REDUX_MODELS:
        model = build_separator(REDUX_TINY if cfg["size"] == "tiny" else REDUX_FULL)
        loss_step = make_loss_step("resunextk", "masked_multislot_neg_snr", {}, segment)
        blocks = model.config.blocks_per_level
        what = (f"separator {cfg['size']} attentive ResUNeXt ({sum(p.numel() for p in model.parameters()):,}"
                f" parameters; {blocks} ResNeXt blocks per level, cardinality {model.config.cardinality}, "
                f"SpecAugment on)")
        param_groups = []
    elif name in KUBIG_MODELS:
        from s5lib.bin.train_separator import JointPITStep
        model = build_separator(KUBIG_TINY if cfg["size"] == "tiny" else KUBIG_FULL)
        loss_step = JointPITStep("joint_pit", {}, segment)
        n_all = sum(p.numel() for p in model.parameters())
        what = (f"separator {cfg['size']} KUBIG end to end ({n_all:,} parameters, "
                f"{model.trainable_parameters():,} trainable; frozen BEATs "
                f"{model.encoder.config.encoder_layers} x {model.encoder.config.encoder_embed_dim}-d; "
                f"hidden {model.config.hidden_dim}, n_compressed {model.config.n_compressed})")
        param_groups = []
    else:
        model = build_separator(TINY_SEPARATOR if cfg["size"] == "tiny" else FULL_SEPARATOR)
        loss_step = make_loss_step("resunetk", "masked_multislot_neg_snr", {}, segment)
        what = f"separator {cfg['size']} ResUNetK ({sum(p.numel() for p in model.parameters()):,} parameters)"
        param_groups = []
    train_cfg = train_config(cfg, 1e-4, {"param_groups": param_groups} if param_groups else None)
    random_set = RandomMixtures(train_cfg["steps_per_epoch"] * int(cfg["batch_size"]),
                                seed=int(cfg["seed"]))
    trainer = Trainer(model, random_set, None, loss_step, train_cfg,
                      os.path.join(cfg["work_dir"], "exp_unused"), dist_info=dist)
    return trainer, random_set, what, f"training on {segment or 10:g} s; "


def build_tagger_trainer(name, cfg, dist):
    """(trainer, random set, setup text) of a stage-2 tagger."""
    from s5lib.bin.train_tagger import make_loss_step
    from s5lib.models.factory import build_tagger
    from s5lib.train.trainer import Trainer

    spec = TAGGERS[name]
    torch.manual_seed(int(cfg["seed"]))
    sized = TINY_TAGGER if cfg["size"] == "tiny" else FULL_TAGGER
    model_cfg = dict(sized, type=spec["type"], trainable=spec["trainable"])
    try:
        model = build_tagger(model_cfg)
    except ValueError as err:
        raise RecipeError(f"bench_train: {name}: {err}") from None
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    channels = tagger_channels(model)
    train_cfg = train_config(cfg, spec["lr"], {"weight_decay": 0.0})
    random_set = RandomTaggerItems(train_cfg["steps_per_epoch"] * int(cfg["batch_size"]),
                                   n_channels=1 if channels == [0] else constants.N_FOA_CHANNELS,
                                   seed=int(cfg["seed"]))
    trainer = Trainer(model, random_set, None, make_loss_step(model.kind), train_cfg,
                      os.path.join(cfg["work_dir"], "exp_unused"), dist_info=dist)
    m2d = model.encoder.cfg
    what = (f"tagger {cfg['size']} M2D {model.kind} ({m2d.embed_dim}-d, {m2d.depth} blocks, "
            f"patch {m2d.patch_size[0]}x{m2d.patch_size[1]}), trainable {spec['trainable']} "
            f"({n_params:,} parameters, {n_train:,} trainable)")
    where = (f"training on 10 s, {'channel 0' if channels == [0] else '4 channels'}; "
             f"year {cfg['year']} rules; ")
    return trainer, random_set, what, where


def bench_model(name, cfg, banks, dist):
    """Every asked part for one model; returns {"a": rate, "b": [(bank, rates)], "c": rtf}."""
    is_tagger = name not in SEPARATORS
    if is_tagger:
        trainer, random_set, what, where = build_tagger_trainer(name, cfg, dist)
    else:
        trainer, random_set, what, where = build_separator_trainer(cfg, dist, name)
    device = trainer.device
    batch_size, steps, warmup = int(cfg["batch_size"]), int(cfg["steps"]), int(cfg["warmup"])
    precision = cfg["precision"] if device.type == "cuda" else "fp32"
    print(f"[setup] device {device_name(device)}; torch {torch.__version__}; {what}; batch "
          f"{batch_size}; precision {precision}; compile {trainer.use_compile}; channels_last "
          f"{trainer.use_channels_last}; fused optimizer {trainer.use_fused_optimizer}; synthesis "
          f"{cfg['synthesis']}; {cfg['num_workers']} workers; {where}steps {steps} "
          f"(+{warmup} warm-up); parts {','.join(cfg['parts'])}", flush=True)

    random_batch = {key: value.to(device) for key, value in
                    torch.utils.data.default_collate([random_set[i] for i in range(batch_size)]).items()}
    # part a: random tensors of the training length, so the compiled graph serves part b too
    segment = float(cfg["segment_seconds"]) if cfg["segment_seconds"] else None
    train_batch = crop_batch(random_batch, segment, constants.SAMPLE_RATE)
    results = {"a": None, "b": [], "c": None}
    try:
        if "a" in cfg["parts"]:
            results["a"] = part_a(trainer, train_batch, cfg)
            if is_end_to_end(trainer.model):
                frozen_check(trainer)
        elif trainer.use_compile and banks:
            # compile before any loader starts, so workers do not fill their queues meanwhile
            run_training_steps(trainer, repeat(train_batch), max(1, warmup), 1)
        for bank_name, root in banks:
            results["b"].append((bank_name, part_b(trainer, name, bank_name, root, cfg,
                                                   results["a"])))
            trainer.close_loader()
        if "c" in cfg["parts"]:
            results["c"] = part_c(trainer, random_batch, cfg, is_tagger)
    finally:
        trainer.close_loader()
        compiled = trainer.use_compile
        del trainer, random_batch, train_batch
        gc.collect()
        if compiled:
            torch._dynamo.reset()  # drop the compiled graphs (and CUDA graph pools) of this model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def frozen_check(trainer):
    """[check] line: the frozen encoder's parameters that hold a gradient or optimizer state."""
    encoder = list(getattr(trainer.model, "module", trainer.model).encoder.parameters())
    with_grad = sum(p.grad is not None for p in encoder)
    ids = {id(p) for p in encoder}
    with_state = sum(id(p) in ids for p in trainer.optimizer.state)
    in_groups = sum(id(p) in ids for g in trainer.optimizer.param_groups for p in g["params"])
    print(f"[check] frozen encoder: {len(encoder)} parameter tensors ({sum(p.numel() for p in encoder):,} "
          f"values); with a gradient {with_grad}, in the optimizer {in_groups}, with optimizer "
          f"state {with_state} (all must be 0)", flush=True)
    return with_grad, in_groups, with_state


def print_summary(name, results):
    alone = results["a"]
    parts = [] if alone is None else [f"model alone {alone:.1f}"]
    for bank_name, rates in results["b"] or [(None, None)]:
        line = list(parts)
        if rates is not None:
            line += [f"data only {rates['data']:.1f}", f"end to end {rates['train']:.1f}"]
        text = f"[summary] {name}" + (f" ({bank_name})" if bank_name else "") + ": "
        text += ", ".join(line) + " mixtures/s" if line else "no training part"
        if rates is not None and "ratio" in rates:
            text += f" (end to end / model alone {rates['ratio']:.1f} %)"
        if results["c"] is not None:
            text += f"; inference RTF {results['c']:.5f}"
        print(text, flush=True)


def plan(argv=None):
    """``(cfg, [(model name, its settings)])`` from the command line: the presets applied
    (explicit keys win) and every value checked, before any work."""
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    # keys given on the command line (or in a --config file): the presets leave them alone
    explicit = {key for key, value in parse_config(dict.fromkeys(DEFAULTS), argv).items()
                if value is not None}
    if cfg["preset"] == "gpu":
        for key, value in GPU_PRESET.items():
            if key not in explicit:
                cfg[key] = value
    cfg = resolve_options(cfg)
    names = {"all": list(MODELS), "cpjku": list(CPJKU_MODELS)}.get(cfg["model"], [cfg["model"]])
    return cfg, [(name, model_options(cfg, name, explicit)) for name in names]


def main(argv=None):
    cfg, models = plan(argv)
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device cuda (or --preset gpu) asked for, but CUDA is not available")

    from s5lib.train.distributed import init_distributed

    names = [name for name, _ in models]
    options = [opts for _, opts in models]
    banks = build_banks(cfg) if "b" in cfg["parts"] else []
    dist = init_distributed(cfg["device"])
    results = []
    for number, (name, opts) in enumerate(zip(names, options), start=1):
        if len(names) > 1:
            title = TAGGERS[name]["title"] if name in TAGGERS else CPJKU_TITLES.get(name, SEPARATOR_TITLE)
            print(f"[model {number}/{len(names)}] {name}: {title}; batch {opts['batch_size']}, "
                  f"{opts['year']} rules", flush=True)
        results.append(bench_model(name, opts, banks, dist))
    if len(names) > 1:
        for name, result in zip(names, results):
            print_summary(name, result)
    return results


if __name__ == "__main__":
    run_cli(main)
