"""Diagnostics the official scorer does not give, from the per-mixture results of a scoring run.

Everything here is computed from :class:`s5lib.metrics.s5.MixtureResult` objects (and, for the
interferer breakdown, the test set's per-mixture metadata); the official CA-SDRi / CAPI-SDRi
is never changed by it.

* ``by_n_targets`` / ``by_n_interferers`` / ``by_duplicates``: the task metric and the label
  accuracy over subsets of the test set (number of reference labels 0-3; interferers in the
  mixture's metadata; 2026: mixtures with and without two targets of one class).
* ``false_alarm``: over the mixtures without any target, the share with at least one estimate.
* ``per_class``: precision and recall of the labels (TP / (TP + FP), TP / (TP + FN)) and the
  mean SDRi of the class's true positives.
* ``confusion``: which label an estimate carries when it is matched to a reference of another
  class, from the label-free matching below (rows: the reference's class or ``(none)`` for an
  estimate matched to nothing; columns: the estimate's class or ``(none)`` for a missed
  reference).
* ``CASA-SDRi``: the label-swap-tolerant variant of Mishra, Magron and Serizel ("Metric analysis
  for spatial semantic segmentation of sound scenes", 2025), without their optional penalties:
  estimates and references are first paired whatever their labels, choosing the pairing of
  min(E, R) sources with the largest mean SNR; each pair contributes its SDRi, each unpaired
  estimate or reference 0; the mixture value is the mean of the max(E, R) contributions.
  ``label_swaps`` counts the pairs whose two labels differ. A diagnostic, never the task metric.
"""
import json
import os
from collections import Counter, OrderedDict

import numpy as np

from s5lib.constants import CLASSES
from s5lib.metrics.s5 import best_pairing

NONE = "(none)"


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def casa_mixture(result):
    """(score, pairs) of one mixture under the label-free pairing; ``score`` is None when
    neither side has a source. ``pairs`` lists (est_index, ref_index) into the result's
    ``est_labels`` / ``ref_labels``; needs ``result.cross_snri`` (the scorer fills it)."""
    n_est, n_ref = len(result.est_labels), len(result.ref_labels)
    if n_est == 0 and n_ref == 0:
        return None, []
    if n_est == 0 or n_ref == 0:
        return 0.0, []
    if result.cross_snri is None:
        raise ValueError(f"{result.mixture}: no estimate-reference SNR matrix (score with "
                         f"cross=True)")
    snri = np.asarray(result.cross_snri, dtype=np.float64)
    snr = snri + np.asarray(result.ref_mixture_snr, dtype=np.float64)[None, :]
    pairs = best_pairing(snr)
    total = sum(snri[e, r] for e, r in pairs)
    return float(total / max(n_est, n_ref)), pairs


def _subset_row(results, metric_name):
    scored = [r.score for r in results if r.score is not None]
    return OrderedDict([
        ("n_mixtures", len(results)),
        ("n_scored", len(scored)),
        (metric_name, _mean(scored)),
        ("label_accuracy", 100.0 * sum(r.labels_correct for r in results) / len(results)
         if results else None),
        ("tp", sum(r.tp for r in results)), ("fp", sum(r.fp for r in results)),
        ("fn", sum(r.fn for r in results)),
    ])


def _group(results, key_fn, metric_name):
    groups = OrderedDict()
    for result in results:
        key = key_fn(result)
        if key is not None:
            groups.setdefault(key, []).append(result)
    return OrderedDict((str(key), _subset_row(groups[key], metric_name))
                       for key in sorted(groups))


def has_duplicates(result):
    return len(result.ref_labels) != len(set(result.ref_labels))


def breakdowns(results, year, metric_name, n_interferers=None):
    """All diagnostics of the module doc as one JSON-ready dict. ``n_interferers``:
    {mixture: count} (from the test metadata) or None to leave that breakdown out."""
    results = list(results)
    out = OrderedDict()
    out["by_n_targets"] = _group(results, lambda r: len(r.ref_labels), metric_name)
    if n_interferers:
        out["by_n_interferers"] = _group(results, lambda r: n_interferers.get(r.mixture),
                                         metric_name)
    if year == 2026:
        out["by_duplicates"] = _group(
            results, lambda r: "with duplicates" if has_duplicates(r) else "without", metric_name)
    empty = [r for r in results if not r.ref_labels]
    alarms = [r for r in empty if r.est_labels]
    out["false_alarm"] = OrderedDict([
        ("n_empty_mixtures", len(empty)), ("n_with_an_estimate", len(alarms)),
        ("rate", 100.0 * len(alarms) / len(empty) if empty else None)])

    rows = []
    for label in CLASSES:
        sources = [s for r in results for s in r.sources if s.label == label]
        tp = sum(s.kind == "TP" for s in sources)
        fp = sum(s.kind == "FP" for s in sources)
        fn = sum(s.kind == "FN" for s in sources)
        rows.append(OrderedDict([
            ("label", label), ("tp", tp), ("fp", fp), ("fn", fn),
            ("precision", 100.0 * tp / (tp + fp) if tp + fp else None),
            ("recall", 100.0 * tp / (tp + fn) if tp + fn else None),
            ("sdri_tp", _mean(s.snri for s in sources if s.kind == "TP"))]))
    out["per_class"] = rows

    confusion = Counter()
    casa_scores, swaps, n_pairs, per_mixture = [], 0, 0, OrderedDict()
    for r in results:
        score, pairs = casa_mixture(r)
        per_mixture[r.mixture] = score
        if score is not None:
            casa_scores.append(score)
        paired_est = {e for e, _ in pairs}
        paired_ref = {ref for _, ref in pairs}
        for e, ref in pairs:
            confusion[(r.ref_labels[ref], r.est_labels[e])] += 1
            swaps += r.ref_labels[ref] != r.est_labels[e]
            n_pairs += 1
        for e, label in enumerate(r.est_labels):
            if e not in paired_est:
                confusion[(NONE, label)] += 1
        for ref, label in enumerate(r.ref_labels):
            if ref not in paired_ref:
                confusion[(label, NONE)] += 1
    names = list(CLASSES) + [NONE]
    out["confusion"] = OrderedDict([
        ("labels", names),
        ("counts", [[confusion[(true, pred)] for pred in names] for true in names])])
    out["casa"] = OrderedDict([
        ("CASA-SDRi", _mean(casa_scores)), ("n_scored", len(casa_scores)),
        ("n_pairs", n_pairs), ("label_swaps", swaps)])
    out["casa_per_mixture"] = per_mixture
    return out


def read_interferer_counts(metadata_dir, mixtures):
    """{mixture: number of interferers} from ``<metadata_dir>/<mixture>.json`` (``int_events``);
    None when the folder is missing. A file that is missing or unreadable is an error naming it."""
    if not metadata_dir or not os.path.isdir(metadata_dir):
        return None
    counts = {}
    for mixture in mixtures:
        path = os.path.join(metadata_dir, mixture + ".json")
        try:
            with open(path) as f:
                meta = json.load(f)
            counts[mixture] = len(meta.get("int_events") or [])
        except (OSError, ValueError, AttributeError) as err:
            raise ValueError(f"{path}: cannot read the interferers of mixture {mixture!r} "
                             f"({err})") from None
    return counts
