"""Benchmark: CPU synthesis vs device (batched torch.fft) synthesis of training mixtures.

Every mixture has 3 targets, 2 interferers and background noise. Prints mixtures/s for

* ``cpu synthesis``: one training item rendered by the CPU synthesizer (one core), what one
  DataLoader worker delivers with CPU synthesis;
* ``raw preparation``: one raw item for device synthesis (reading, no convolutions; one core),
  what one DataLoader worker delivers with device synthesis;
* ``device rendering``: batches rendered by :func:`s5lib.data.gpu_synth.synthesize_batch` on the
  device (host-to-device copy of a pinned batch included; CUDA when available, else CPU with
  ``device_threads`` threads), with the peak device memory on CUDA.

With W workers, device synthesis delivers about min(W x raw preparation, device rendering)
mixtures/s, CPU synthesis about W x cpu synthesis.

    python -m s5lib.bin.bench_gpu_synth [--size mini] [--ir_seconds 5.5] [--batch_size 5]
        [--n_batches 4] [--device auto] [--bank_root DIR] [--work_dir /tmp/s5_bench]

Without ``--bank_root`` the embedded bank (``size``, ``ir_seconds``; default the bank's own
length) is built under ``work_dir`` on first use and reused afterwards.
"""
import os
import time

import numpy as np
import torch

from s5lib.config import parse_config

DEFAULTS = {"bank_root": None, "work_dir": "/tmp/s5_bench", "size": "mini", "ir_seconds": None,
            "seed": 0, "year": 2025, "batch_size": 5, "n_batches": 4, "device": "auto",
            "device_threads": 0}


def _timed(fn, n):
    """Per-call seconds of ``n`` calls of ``fn(i)``."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return np.array(times)


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    from s5lib.data.datasets import OnTheFlyMixtures
    from s5lib.data.gpu_synth import OnTheFlyRawMixtures, collate_raw, synthesize_batch
    from s5lib.data.soundbank import build_mini_soundbank
    from s5lib.data.synth import SynthConfig

    root = cfg["bank_root"]
    if not root:
        ir = cfg["ir_seconds"]
        suffix = "" if ir is None else f"_ir{float(ir):g}s"
        root = os.path.join(cfg["work_dir"], f"dev_set_{cfg['size']}{suffix}")
        build_mini_soundbank(root, seed=cfg["seed"], size=cfg["size"],
                             ir_seconds=None if ir is None else float(ir))
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    batch_size, n_batches = int(cfg["batch_size"]), int(cfg["n_batches"])
    n_items = batch_size * n_batches
    synth_cfg = SynthConfig(year=int(cfg["year"]), n_targets=(3, 3), n_interferers=(2, 2))
    common = dict(epoch_size=n_items, seed=int(cfg["seed"]))
    cpu_ds = OnTheFlyMixtures(root, "train", synth_cfg, **common)
    raw_ds = OnTheFlyRawMixtures(root, "train", synth_cfg, **common)
    print(f"bank {root}: room responses {raw_ds.ir_length / synth_cfg.sample_rate:.2f} s; "
          f"{n_items} mixtures, 3 targets + 2 interferers + noise")

    torch.set_num_threads(1)  # the per-worker figures are for one core
    cpu_ds.set_epoch(99), raw_ds.set_epoch(99)
    for i in range(2):  # warm the audio and room caches
        cpu_ds[i], raw_ds[i]
    cpu_ds.set_epoch(0), raw_ds.set_epoch(0)
    cpu_s = _timed(lambda i: cpu_ds[i], n_items)
    items = []
    raw_s = _timed(lambda i: items.append(raw_ds[i]), n_items)

    threads = int(cfg["device_threads"]) or os.cpu_count()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    batches = [collate_raw(items[b * batch_size:(b + 1) * batch_size]) for b in range(n_batches)]
    if device.type == "cuda":
        batches = [{k: v.pin_memory() for k, v in batch.items()} for batch in batches]
        torch.cuda.reset_peak_memory_stats(device)

    def render(b):
        out = synthesize_batch(batches[b], device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    render(0)  # FFT plans, allocator warm-up
    dev_s = _timed(render, n_batches)

    def line(name, seconds_per_mixture, note):
        print(f"{name:20s} {1.0 / seconds_per_mixture:8.1f} mixtures/s   "
              f"({seconds_per_mixture * 1e3:7.1f} ms per mixture; {note})")

    line("cpu synthesis", np.median(cpu_s), "one core")
    line("raw preparation", np.median(raw_s), "one core")
    if device.type == "cuda":
        note = f"{torch.cuda.get_device_name(device)}, batch {batch_size}, " \
               f"peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    else:
        note = f"cpu, {threads} threads, batch {batch_size}"
    line("device rendering", np.median(dev_s) / batch_size, note)


if __name__ == "__main__":
    main()
