"""Benchmark of the analysis page on a test set of the evaluation's size (prints figures).

    python -m s5lib.bin.bench_report [--n_mixtures 1512] [--year 2026] [--n 4] [--work DIR]

Builds a synthetic scored test set in ``--work`` (a temporary folder by default): per-mixture
results with 0-3 references and estimates, random SNRs and label errors, written as a score
dir (summary.json, per_mixture.csv, per_source.csv, breakdowns.json) with 10 s audio for every
mixture, reference and estimate (one file per kind on disk, the others symbolic links to it, so
that the folder stays small while every name is readable). Then times the diagnostics
(:func:`s5lib.metrics.breakdown.breakdowns`) and the page (:func:`s5lib.bin.report.build_report`)
and prints both with the page's size.
"""
import argparse
import os
import tempfile
import time

import numpy as np

from s5lib.audio import write_audio
from s5lib.constants import CLASSES, SAMPLE_RATE
from s5lib.metrics.breakdown import breakdowns
from s5lib.metrics.s5 import METRIC_NAME, MixtureResult, S5Scorer, SourceScore


def synthetic_results(n_mixtures, year, seed=0):
    """MixtureResults with plausible counts and values (no audio is measured)."""
    rng = np.random.default_rng(seed)
    results = []
    for i in range(n_mixtures):
        n_ref = int(rng.integers(0 if year == 2026 else 1, 4))
        refs = list(rng.choice(CLASSES, size=n_ref, replace=False))
        ests = [c if rng.random() < 0.7 else str(rng.choice(CLASSES)) for c in refs]
        ests = [c for c in dict.fromkeys(ests) if rng.random() < 0.9]
        sources = []
        for k, label in enumerate(sorted(set(refs) | set(ests))):
            kind = "TP" if label in refs and label in ests else ("FN" if label in refs else "FP")
            value = float(rng.normal(5, 4)) if kind == "TP" else 0.0
            sources.append(SourceScore(
                label=label, kind=kind,
                est_index=ests.index(label) if label in ests else None,
                ref_index=refs.index(label) if label in refs else None,
                snr=value - 5 if kind == "TP" else None, snri=value,
                est_name=f"soundscape_{i:04d}_{label}.wav" if label in ests else None,
                ref_name=f"soundscape_{i:04d}_{label}.wav" if label in refs else None))
        score = float(np.mean([s.snri for s in sources])) if sources else None
        tp = sum(s.kind == "TP" for s in sources)
        results.append(MixtureResult(
            mixture=f"soundscape_{i:04d}", year=year, ref_labels=refs, est_labels=ests,
            score=score, sources=sources, labels_correct=set(refs) == set(ests), tp=tp,
            fp=sum(s.kind == "FP" for s in sources), fn=sum(s.kind == "FN" for s in sources),
            est_names=[f"soundscape_{i:04d}_{c}.wav" for c in ests],
            ref_names=[f"soundscape_{i:04d}_{c}.wav" for c in refs],
            cross_snri=rng.normal(0, 5, size=(len(ests), len(refs))).tolist(),
            ref_mixture_snr=rng.normal(-5, 3, size=len(refs)).tolist()))
    return results


def write_audio_tree(root, results):
    """soundscape/, oracle_target/ and estimates/ with one real file each, the rest links."""
    rng = np.random.default_rng(1)
    folders = {name: os.path.join(root, name) for name in ("soundscape", "oracle_target",
                                                           "estimates")}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    originals = {}
    for name, channels in (("soundscape", 4), ("oracle_target", 1), ("estimates", 1)):
        path = os.path.join(root, f"_{name}.wav")
        signal = (0.05 * rng.standard_normal((channels, 10 * SAMPLE_RATE))).astype(np.float32)
        write_audio(path, signal if channels > 1 else signal[0], SAMPLE_RATE, subtype="PCM_16")
        originals[name] = path
    for r in results:
        os.symlink(originals["soundscape"], os.path.join(folders["soundscape"], r.mixture + ".wav"))
        for name in r.ref_names:
            os.symlink(originals["oracle_target"], os.path.join(folders["oracle_target"], name))
        for name in r.est_names:
            os.symlink(originals["estimates"], os.path.join(folders["estimates"], name))
    return folders


def main(argv=None):
    from s5lib.bin.report import build_report
    from s5lib.results import write_score_outputs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_mixtures", type=int, default=1512)
    parser.add_argument("--year", type=int, default=2026, choices=sorted(METRIC_NAME))
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--work", default=None, help="folder for the synthetic set (default: a "
                                                     "temporary one, removed afterwards)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.work or tmp
        results = synthetic_results(args.n_mixtures, args.year)
        start = time.time()
        breakdowns(results, args.year, METRIC_NAME[args.year])
        t_breakdown = time.time() - start
        folders = write_audio_tree(root, results)
        scorer = S5Scorer(args.year)
        for result in results:
            scorer.add_result(result)
        score_dir = os.path.join(root, "scores")
        write_score_outputs(scorer, score_dir, {"recipe": "bench", "tag": "synthetic",
                                                "year": args.year, "label_mode": "estimated",
                                                "est_dir": folders["estimates"],
                                                "ref_dir": root}, plot=False)
        info = build_report([score_dir], os.path.join(root, "report.html"), n=args.n)
        print(f"{args.n_mixtures} mixtures ({args.year}): diagnostics {t_breakdown:.2f} s; page "
              f"{info['seconds']:.1f} s for {info['mixtures_shown']} mixtures shown, "
              f"{info['bytes'] / 2 ** 20:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
