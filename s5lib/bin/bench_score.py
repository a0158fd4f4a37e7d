"""Benchmark of the wav-directory scorer: prints how long scoring takes.

Usage::

    python -m s5lib.bin.bench_score --n_mix 1512 --nj 2 [--year 2026] [--tmp_dir /scratch]

Writes a synthetic test set of ``n_mix`` 10 s mixtures (4-ch 16-bit mixtures, 1 to 3 mono
references and estimates each, random noise) to a temporary folder, scores it with
``python -m s5lib.bin.score`` logic from the wav files, and prints the seconds spent writing
and scoring plus the time extrapolated to the 1,512 mixtures of the dev test set (target:
under 120 s on 2 cores). The folder is deleted afterwards unless ``--keep`` is given.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from s5lib.audio import write_audio
from s5lib.constants import CLASSES, N_FOA_CHANNELS, N_SAMPLES, SAMPLE_RATE
from s5lib.metrics.naming import source_filename

DEV_TEST_SIZE = 1512


def write_synthetic_test_set(root, n_mix, year=2026, seed=0, n_samples=N_SAMPLES,
                             source_subtype="FLOAT", max_targets=3):
    """Write ``root/test/{soundscape,oracle_target}`` and ``root/est`` with random signals.

    Estimates are the references plus noise; in 2026 some mixtures repeat a class. Returns
    (test_dir, est_dir).
    """
    rng = np.random.default_rng(seed)
    test_dir = os.path.join(root, "test")
    est_dir = os.path.join(root, "est")
    for folder in ("soundscape", "oracle_target"):
        os.makedirs(os.path.join(test_dir, folder), exist_ok=True)
    os.makedirs(est_dir, exist_ok=True)
    for i in range(n_mix):
        mixture = f"soundscape_{i:04d}"
        n_targets = int(rng.integers(1, max_targets + 1))
        labels = list(rng.choice(CLASSES, size=n_targets, replace=False))
        if year == 2026 and n_targets >= 2 and rng.random() < 0.5:
            labels[-1] = labels[0]
        refs = 0.05 * rng.standard_normal((n_targets, n_samples)).astype(np.float32)
        mix = 0.02 * rng.standard_normal((N_FOA_CHANNELS, n_samples)).astype(np.float32)
        mix += refs.sum(axis=0)[None]
        write_audio(os.path.join(test_dir, "soundscape", f"{mixture}.wav"), mix, SAMPLE_RATE,
                    subtype="PCM_16")
        for slot, (label, ref) in enumerate(zip(labels, refs)):
            slot_name = slot if year == 2026 else None
            write_audio(os.path.join(test_dir, "oracle_target",
                                     source_filename(mixture, label, slot_name)),
                        ref, SAMPLE_RATE, subtype=source_subtype)
            est = ref + 0.02 * rng.standard_normal(n_samples).astype(np.float32)
            write_audio(os.path.join(est_dir, source_filename(mixture, label, slot_name)),
                        est, SAMPLE_RATE, subtype=source_subtype)
    return test_dir, est_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_mix", type=int, default=DEV_TEST_SIZE)
    parser.add_argument("--nj", type=int, default=2)
    parser.add_argument("--year", type=int, default=2026, choices=(2025, 2026))
    parser.add_argument("--source_subtype", default="FLOAT", choices=("FLOAT", "PCM_16"))
    parser.add_argument("--tmp_dir", default=None, help="where to write the synthetic set")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from s5lib.bin.score import score

    root = tempfile.mkdtemp(prefix="bench_score_", dir=args.tmp_dir)
    try:
        start = time.perf_counter()
        test_dir, est_dir = write_synthetic_test_set(root, args.n_mix, args.year, args.seed,
                                                     source_subtype=args.source_subtype)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        summary = score({"year": args.year, "ref_dir": test_dir, "est_dir": est_dir,
                         "out_dir": os.path.join(root, "score"), "nj": args.nj,
                         "tag": "bench", "recipe": "bench"},
                        command="bench_score")
        score_s = time.perf_counter() - start
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    metric = summary["metric_name"]
    per_mix = score_s / max(1, args.n_mix)
    print(f"mixtures: {args.n_mix}  nj: {args.nj}  year: {args.year}  "
          f"{metric}: {summary['metrics'][metric]:.3f}")
    print(f"writing the synthetic set: {write_s:.1f} s")
    print(f"scoring from wav files: {score_s:.1f} s ({1000 * per_mix:.1f} ms per mixture)")
    print(f"extrapolated to {DEV_TEST_SIZE} mixtures: {per_mix * DEV_TEST_SIZE:.1f} s "
          f"(target < 120 s on 2 cores)")
    if args.keep:
        print(f"kept: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
