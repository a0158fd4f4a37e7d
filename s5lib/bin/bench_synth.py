"""Benchmark: time to synthesize one on-the-fly training mixture on one CPU core.

Each timed mixture has 3 targets, 2 interferers and background noise (draw + render). Three
renders are timed, each what one trainer reads (:mod:`s5lib.data.training_data`):

* ``full``: 4 channels and the targets' direct-path references (the separator);
* ``4-channel tagger``: 4 channels, no references (the 2026 4-channel tagger);
* ``1-channel tagger``: channel 0 only, no references (the 2025 and 2026 1-channel taggers);
* ``device-synthesis worker``: what a DataLoader worker does with ``synthesis: device``
  (:func:`s5lib.data.gpu_synth.prepare_raw`: read, place and pack the sources and room
  responses; the FFTs then run on the GPU).

Cores a trainer needs per GPU: its mixtures/s on the GPU (``bench_train``, model alone) divided
by the per-core rate printed here for its render (or for the device-synthesis worker).

Prints the median and the 90th percentile for the embedded mini soundbank and for the same bank
with 5.5 s room responses (the real bank's length). The banks' SOFA files store the responses
as float64, as the DCASE files do (the synthesizer reads them as float32). Each render times
the same mixtures twice: ``cold`` (first reads of clips, responses and response spectra) and
``warm`` (what a long training run sees once the bank's spectrum cache, ``S5_SPECTRUM_CACHE_MB``,
holds the room positions; the cache's size at the end is printed).

    python -m s5lib.bin.bench_synth [--n_mix 50] [--work_dir /tmp/s5_bench] [--year 2025]

Banks are built under ``work_dir`` on first use and reused afterwards.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as stated above
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from s5lib.config import parse_config  # noqa: E402

DEFAULTS = {"n_mix": 50, "work_dir": "/tmp/s5_bench", "year": 2025, "seed": 0,
            "long_ir_seconds": 5.5, "size": "mini", "skip_long": False}


RENDERS = (("full render", dict(with_references=True)),
           ("4-channel tagger render", dict(with_references=False)),
           ("1-channel tagger render", dict(with_references=False, channels=[0])),
           ("device-synthesis worker (no FFTs)", dict(device_worker=True)))


def time_bank(bank_root, year, n_mix, seed, device_worker=False, **render):
    """(cold, warm) milliseconds per mixture, and the spectrum cache's MiB at the end."""
    from s5lib.data.gpu_synth import bank_ir_length, prepare_raw
    from s5lib.data.synth import FoaSynthesizer, SoundBank, SynthConfig
    bank = SoundBank(bank_root, "train", cache_audio=True)
    synth = FoaSynthesizer(bank, SynthConfig(year=year, n_targets=(3, 3), n_interferers=(2, 2)))
    for i in range(3):  # read the audio clips once
        synth.synthesize(np.random.default_rng([seed, 99, i]))
    ir_length = bank_ir_length(bank, synth.cfg.sample_rate) if device_worker else None
    metadata = [synth.sample_metadata(np.random.default_rng([seed, i])) for i in range(n_mix)]
    passes = []
    for _ in range(2):
        times = []
        for meta in metadata:
            t0 = time.perf_counter()
            if device_worker:
                prepare_raw(synth, meta, ir_length)
            else:
                synth.render(meta, with_wet=False, **render)
            times.append(time.perf_counter() - t0)
        passes.append(np.array(times) * 1e3)
    return passes[0], passes[1], bank._spectrum_cache_used / 2 ** 20


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    from s5lib.data.soundbank import build_mini_soundbank
    variants = [(f"{cfg['size']} bank", None)]
    if not cfg["skip_long"]:
        seconds = cfg["long_ir_seconds"]
        variants.append((f"{cfg['size']} bank, {seconds} s room responses", seconds))
    print(f"synthesis benchmark: {cfg['n_mix']} mixtures, 3 targets + 2 interferers + noise, 1 core")
    for name, ir_seconds in variants:
        suffix = "" if ir_seconds is None else f"_ir{ir_seconds:g}s"
        root = os.path.join(cfg["work_dir"], f"dev_set_{cfg['size']}{suffix}")
        build_mini_soundbank(root, seed=cfg["seed"], size=cfg["size"], ir_seconds=ir_seconds)
        for render, options in RENDERS:
            cold, warm, cache_mb = time_bank(root, int(cfg["year"]), int(cfg["n_mix"]), cfg["seed"],
                                             **options)
            for state, ms in (("cold", cold), ("warm", warm)):
                print(f"{name + ', ' + render + ', ' + state:66s} median {np.median(ms):7.1f} ms   "
                      f"p90 {np.percentile(ms, 90):7.1f} ms   "
                      f"({1000 / np.median(ms):5.1f} mixtures/s per core)")
            print(f"{'':66s} spectrum cache {cache_mb:.0f} MiB")


if __name__ == "__main__":
    main()
