"""Task measures of S5 (SPEC §4): CA-SDRi (2025), CAPI-SDRi (2026) and label accuracies.

Per mixture, labels "silence" are removed from both sides before anything is counted. Each
source taking part in the score ends up as one :class:`SourceScore`:

* TP: an estimate paired with a reference of the same class; it contributes its SNRi.
* FP: an estimate with no reference of its class left; it contributes 0.
* FN: a reference with no estimate of its class left; it contributes 0.

The mixture score is the mean over all contributions, so FP and FN lower the score and
enlarge the denominator. A mixture with no label on either side has no score (``None``):
for CAPI-SDRi the SPEC says it is skipped. CA-SDRi does not define that case (the 2025 data
always has 1 to 3 targets), so it is skipped here too.

:class:`S5Scorer` collects one mixture at a time (from wav files or in memory from the
inference stage) and gives the dataset summary, a per-class breakdown and per-mixture rows.
"""
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field
from itertools import combinations, permutations
from typing import List, Optional

import numpy as np

from s5lib.constants import CLASSES, SILENCE, YEARS
from s5lib.metrics.signal import si_sdr, snr

METRIC_NAME = {2025: "CA-SDRi", 2026: "CAPI-SDRi"}


@dataclass
class SourceScore:
    """One contribution to a mixture score.

    ``est_index`` / ``ref_index`` are positions in the estimate / reference lists as given
    (``None`` on the side that is missing for FP / FN). ``snr`` and ``si_sdr`` are set for TP
    only; ``snri`` is the contribution (0 for FP and FN).
    """
    label: str
    kind: str
    est_index: Optional[int] = None
    ref_index: Optional[int] = None
    snr: Optional[float] = None
    snri: float = 0.0
    si_sdr: Optional[float] = None
    probability: Optional[float] = None
    est_name: Optional[str] = None
    ref_name: Optional[str] = None
    doa_error: Optional[float] = None  # TP: degrees between estimated and reference DoA


@dataclass
class MixtureResult:
    """Everything measured on one mixture.

    ``score`` is the mixture's CA-SDRi (2025) or CAPI-SDRi (2026), ``None`` when skipped.
    ``labels_correct`` is the set match (2025) or multiset match (2026) of the labels.
    ``tp``, ``fp``, ``fn`` are counted on label multisets (silence removed).
    """
    mixture: str
    year: int
    ref_labels: List[str]
    est_labels: List[str]
    score: Optional[float]
    sources: List[SourceScore] = field(default_factory=list)
    labels_correct: bool = False
    tp: int = 0
    fp: int = 0
    fn: int = 0
    probabilities: List[Optional[float]] = field(default_factory=list)
    est_names: List[Optional[str]] = field(default_factory=list)
    ref_names: List[Optional[str]] = field(default_factory=list)
    # diagnostics only (s5lib.metrics.breakdown), never part of the score: SNRi of every
    # estimate against every reference, (len(est_labels), len(ref_labels)), and SNR of mixture
    # channel 0 against each reference; None when not measured
    cross_snri: Optional[List[List[float]]] = None
    ref_mixture_snr: Optional[List[float]] = None

    @property
    def skipped(self):
        return self.score is None


# ----------------------------------------------------------------------------- labels

def _strip_silence(labels):
    return [label for label in labels if label != SILENCE]


def labels_match_set(est_labels, ref_labels):
    """2025 label accuracy of one mixture: the predicted label set equals the reference set."""
    return set(_strip_silence(est_labels)) == set(_strip_silence(ref_labels))


def labels_match_multiset(est_labels, ref_labels):
    """2026 mixture accuracy of one mixture: equal label multisets (empty == empty is correct)."""
    return Counter(_strip_silence(est_labels)) == Counter(_strip_silence(ref_labels))


def source_label_counts(est_labels, ref_labels):
    """(TP, FP, FN) of one mixture; TP is the size of the multiset intersection."""
    est = Counter(_strip_silence(est_labels))
    ref = Counter(_strip_silence(ref_labels))
    tp = sum((est & ref).values())
    return tp, sum(est.values()) - tp, sum(ref.values()) - tp


def source_accuracy(tp, fp, fn):
    """2026 source accuracy in %: 100·TP / (TP + FP + FN); ``None`` when nothing was counted."""
    total = tp + fp + fn
    return None if total == 0 else 100.0 * tp / total


# ----------------------------------------------------------------------------- helpers

def _as_numpy(wave):
    if type(wave).__module__.startswith("torch"):
        wave = wave.detach().cpu().numpy()
    return np.asarray(wave)


def _mean(values):
    values = list(values)
    return float(np.mean(values)) if values else None


def _unpack_estimate(item):
    """Accept (label, wave) or (label, wave, probability)."""
    if len(item) == 2:
        return item[0], item[1], None
    if len(item) == 3:
        return item[0], item[1], item[2]
    raise ValueError(f"an estimate must be (label, wave) or (label, wave, probability), "
                     f"got a tuple of {len(item)}")


# ----------------------------------------------------------------------------- CA-SDRi

def ca_sdri(est, ref, mix0, with_si_sdr=False):
    """CA-SDRi (2025) of one mixture.

    Args:
        est: dict label -> estimated waveform (T,).
        ref: dict label -> reference waveform (T,).
        mix0: channel 0 of the mixture (T,).
        with_si_sdr: also measure SI-SDR of each TP pair (reported, never part of the score).
    Returns:
        (score, details): score = mean over C∪Ĉ of the SNRi for labels on both sides and 0 for
        labels on one side only; ``None`` when C∪Ĉ is empty. details is a list of
        :class:`SourceScore` in label order (indices refer to the dicts' iteration order).
    """
    est_labels = [label for label in est if label != SILENCE]
    ref_labels = [label for label in ref if label != SILENCE]
    est_pos = {label: i for i, label in enumerate(est)}
    ref_pos = {label: i for i, label in enumerate(ref)}
    details = []
    for label in sorted(set(est_labels) | set(ref_labels)):
        if label in est_pos and label in ref_pos:
            e, r = est[label], ref[label]
            value = snr(e, r)
            details.append(SourceScore(
                label=label, kind="TP", est_index=est_pos[label], ref_index=ref_pos[label],
                snr=value, snri=value - snr(mix0, r),
                si_sdr=si_sdr(e, r) if with_si_sdr else None))
        elif label in est_pos:
            details.append(SourceScore(label=label, kind="FP", est_index=est_pos[label]))
        else:
            details.append(SourceScore(label=label, kind="FN", ref_index=ref_pos[label]))
    if not details:
        return None, details
    return _mean(d.snri for d in details), details


# ----------------------------------------------------------------------------- CAPI-SDRi

def best_pairing(snr_matrix):
    """Best one-to-one pairing of estimates (rows) with references (columns) of one class.

    Pairs m = min(rows, cols) of them; every choice of m references (combinations, in order)
    and every ordered choice of m estimates (permutations) is tried, and the pairing with the
    largest mean SNR wins (the first one found on ties). Returns a list of (row, col).
    """
    n_est, n_ref = snr_matrix.shape
    m = min(n_est, n_ref)
    best, best_mean = None, -np.inf
    for ref_choice in combinations(range(n_ref), m):
        for est_choice in permutations(range(n_est), m):
            mean = np.mean([snr_matrix[e, r] for e, r in zip(est_choice, ref_choice)])
            if best is None or mean > best_mean:
                best, best_mean = list(zip(est_choice, ref_choice)), mean
    return best


def capi_sdri(est, ref, mix0, with_si_sdr=False):
    """CAPI-SDRi (2026) of one mixture.

    Args:
        est: list of (label, waveform (T,)) estimates; same-class entries allowed.
        ref: list of (label, waveform (T,)) references; same-class entries allowed.
        mix0: channel 0 of the mixture (T,).
        with_si_sdr: also measure SI-SDR of each TP pair.
    Returns:
        (score, details): ``score`` is ``None`` when no label (other than silence) is on
        either side (the mixture is skipped). Per class c, with E_c estimates and R_c
        references: the pairing of min(|E_c|, |R_c|) sources with the largest mean SNR is
        kept and contributes its SNRi values; the ||E_c| − |R_c|| unpaired sources contribute
        0 each (FP or FN). details: one :class:`SourceScore` per contribution, class by class
        in sorted label order.
    """
    est_by_class, ref_by_class = OrderedDict(), OrderedDict()
    for i, (label, _) in enumerate(est):
        if label != SILENCE:
            est_by_class.setdefault(label, []).append(i)
    for i, (label, _) in enumerate(ref):
        if label != SILENCE:
            ref_by_class.setdefault(label, []).append(i)
    details = []
    for label in sorted(set(est_by_class) | set(ref_by_class)):
        est_ids = est_by_class.get(label, [])
        ref_ids = ref_by_class.get(label, [])
        paired_est, paired_ref = set(), set()
        if est_ids and ref_ids:
            snr_matrix = np.array([[snr(est[e][1], ref[r][1]) for r in ref_ids] for e in est_ids])
            for row, col in best_pairing(snr_matrix):
                e, r = est_ids[row], ref_ids[col]
                paired_est.add(e)
                paired_ref.add(r)
                value = float(snr_matrix[row, col])
                details.append(SourceScore(
                    label=label, kind="TP", est_index=e, ref_index=r, snr=value,
                    snri=value - snr(mix0, ref[r][1]),
                    si_sdr=si_sdr(est[e][1], ref[r][1]) if with_si_sdr else None))
        for e in est_ids:
            if e not in paired_est:
                details.append(SourceScore(label=label, kind="FP", est_index=e))
        for r in ref_ids:
            if r not in paired_ref:
                details.append(SourceScore(label=label, kind="FN", ref_index=r))
    if not details:
        return None, details
    return _mean(d.snri for d in details), details


# ----------------------------------------------------------------------------- one mixture

def score_mixture(year, mixture, mix0, estimates, references, est_names=None, ref_names=None,
                  with_si_sdr=True, with_cross=True):
    """Measure one mixture.

    Args:
        year: 2025 (CA-SDRi, set accuracy) or 2026 (CAPI-SDRi, multiset accuracy).
        mixture: mixture id.
        mix0: mixture channel 0, shape (T,) (numpy or torch).
        estimates: list of (label, wave) or (label, wave, probability).
        references: list of (label, wave).
        est_names, ref_names: optional names (file names) carried into the details.
        with_cross: also measure every estimate against every reference (``cross_snri``,
            for the label-free diagnostics of :mod:`s5lib.metrics.breakdown`).
    Returns:
        :class:`MixtureResult`.
    Raises:
        ValueError naming the mixture for wrong shapes or (2025) a label given twice.
    """
    if year not in YEARS:
        raise ValueError(f"year must be one of {YEARS}, got {year!r}")
    mix0 = _as_numpy(mix0)
    if mix0.ndim != 1:
        raise ValueError(f"{mixture}: mixture channel 0 must be 1-d (T,), got shape {mix0.shape}")
    n_samples = mix0.shape[0]
    est_list, probs = [], []
    for item in estimates:
        label, wave, prob = _unpack_estimate(item)
        est_list.append((label, _as_numpy(wave)))
        probs.append(None if prob is None else float(prob))
    ref_list = [(label, _as_numpy(wave)) for label, wave in references]
    for side, items in (("estimate", est_list), ("reference", ref_list)):
        for label, wave in items:
            if label != SILENCE and label not in CLASSES:
                raise ValueError(f"{mixture}: unknown {side} label {label!r}")
            if wave.shape != (n_samples,):
                raise ValueError(f"{mixture}: {side} {label!r} has shape {wave.shape}, "
                                 f"expected ({n_samples},) like the mixture")
    est_labels = [label for label, _ in est_list]
    ref_labels = [label for label, _ in ref_list]

    if year == 2025:
        for side, labels in (("estimates", est_labels), ("references", ref_labels)):
            dup = [c for c, n in Counter(_strip_silence(labels)).items() if n > 1]
            if dup:
                raise ValueError(f"{mixture}: 2025 {side} must have distinct classes, "
                                 f"got {dup} more than once")
        est_dict = OrderedDict((label, wave) for label, wave in est_list if label != SILENCE)
        ref_dict = OrderedDict((label, wave) for label, wave in ref_list if label != SILENCE)
        score, details = ca_sdri(est_dict, ref_dict, mix0, with_si_sdr=with_si_sdr)
        # map dict positions back to list positions
        est_index = {label: i for i, (label, _) in enumerate(est_list) if label != SILENCE}
        ref_index = {label: i for i, (label, _) in enumerate(ref_list) if label != SILENCE}
        for d in details:
            d.est_index = est_index[d.label] if d.est_index is not None else None
            d.ref_index = ref_index[d.label] if d.ref_index is not None else None
        labels_correct = labels_match_set(est_labels, ref_labels)
    else:
        score, details = capi_sdri(est_list, ref_list, mix0, with_si_sdr=with_si_sdr)
        labels_correct = labels_match_multiset(est_labels, ref_labels)

    est_names = list(est_names) if est_names is not None else [None] * len(est_list)
    ref_names = list(ref_names) if ref_names is not None else [None] * len(ref_list)
    for d in details:
        if d.est_index is not None:
            d.probability = probs[d.est_index]
            d.est_name = est_names[d.est_index]
        if d.ref_index is not None:
            d.ref_name = ref_names[d.ref_index]
    tp, fp, fn = source_label_counts(est_labels, ref_labels)
    cross, mixture_snr = None, None
    if with_cross:
        kept_est = [wave for label, wave in est_list if label != SILENCE]
        kept_ref = [wave for label, wave in ref_list if label != SILENCE]
        mixture_snr = [float(snr(mix0, r)) for r in kept_ref]
        cross = [[float(snr(e, r)) - m for r, m in zip(kept_ref, mixture_snr)] for e in kept_est]
    return MixtureResult(
        mixture=mixture, year=year, ref_labels=_strip_silence(ref_labels),
        est_labels=_strip_silence(est_labels), score=score, sources=details,
        labels_correct=labels_correct, tp=tp, fp=fp, fn=fn,
        probabilities=[p for (label, _), p in zip(est_list, probs) if label != SILENCE],
        est_names=[n for (label, _), n in zip(est_list, est_names) if label != SILENCE],
        ref_names=[n for (label, _), n in zip(ref_list, ref_names) if label != SILENCE],
        cross_snri=cross, ref_mixture_snr=mixture_snr)


# ----------------------------------------------------------------------------- accumulator

def _fmt(value, digits=3):
    return "" if value is None else f"{value:.{digits}f}"


class S5Scorer:
    """Accumulates mixtures one at a time and summarises them.

    ``add`` measures a mixture handed over in memory; ``add_result`` takes a
    :class:`MixtureResult` measured elsewhere (e.g. in a worker process). Mixture ids must be
    unique.
    """

    def __init__(self, year, with_si_sdr=True):
        if year not in YEARS:
            raise ValueError(f"year must be one of {YEARS}, got {year!r}")
        self.year = year
        self.with_si_sdr = with_si_sdr
        self.results = []
        self._seen = set()

    @property
    def metric_name(self):
        return METRIC_NAME[self.year]

    def add(self, mixture, mix0, estimates, references, est_names=None, ref_names=None):
        """Measure and keep one mixture; returns its :class:`MixtureResult`."""
        if mixture in self._seen:
            raise ValueError(f"mixture {mixture!r} was added twice")
        result = score_mixture(self.year, mixture, mix0, estimates, references,
                               est_names=est_names, ref_names=ref_names,
                               with_si_sdr=self.with_si_sdr)
        self.add_result(result)
        return result

    def add_result(self, result):
        if result.year != self.year:
            raise ValueError(f"{result.mixture}: result of year {result.year} given to a "
                             f"{self.year} scorer")
        if result.mixture in self._seen:
            raise ValueError(f"mixture {result.mixture!r} was added twice")
        self._seen.add(result.mixture)
        self.results.append(result)

    def __len__(self):
        return len(self.results)

    def _tp_sources(self):
        return [s for r in self.results for s in r.sources if s.kind == "TP"]

    def summary(self):
        """Dataset-level figures (dict, JSON-ready; undefined values are ``None``).

        Keys: year, metric_name, the main score under its name ("CA-SDRi" or "CAPI-SDRi"),
        accuracies in % ("label_accuracy" for 2025; "accuracy_mixture" for 2026;
        "accuracy_source" for both), means over TP sources ("SDR_tp", "SDRi_tp", "SI-SDR_tp"),
        counts ("n_mixtures", "n_scored", "n_skipped", "n_estimates", "n_references", "tp",
        "fp", "fn"); with directions, "DoA_err_tp" (mean angular error of the TP estimates that
        gave one, degrees) and "n_tp_with_doa".
        """
        scored = [r.score for r in self.results if r.score is not None]
        tp = sum(r.tp for r in self.results)
        fp = sum(r.fp for r in self.results)
        fn = sum(r.fn for r in self.results)
        n = len(self.results)
        accuracy = 100.0 * sum(r.labels_correct for r in self.results) / n if n else None
        tps = self._tp_sources()
        out = OrderedDict()
        out["year"] = self.year
        out["metric_name"] = self.metric_name
        out[self.metric_name] = _mean(scored)
        if self.year == 2025:
            out["label_accuracy"] = accuracy
        else:
            out["accuracy_mixture"] = accuracy
        out["accuracy_source"] = source_accuracy(tp, fp, fn)
        out["SDR_tp"] = _mean(s.snr for s in tps)
        out["SDRi_tp"] = _mean(s.snri for s in tps)
        out["SI-SDR_tp"] = _mean(s.si_sdr for s in tps if s.si_sdr is not None)
        with_doa = [s.doa_error for s in tps if s.doa_error is not None]
        if with_doa:  # only for systems that predict directions
            out["DoA_err_tp"] = _mean(with_doa)
            out["n_tp_with_doa"] = len(with_doa)
        out["n_mixtures"] = n
        out["n_scored"] = len(scored)
        out["n_skipped"] = n - len(scored)
        out["n_estimates"] = sum(len(r.est_labels) for r in self.results)
        out["n_references"] = sum(len(r.ref_labels) for r in self.results)
        out["tp"], out["fp"], out["fn"] = tp, fp, fn
        return dict(out)

    def per_class(self):
        """One row per class (the 18 classes, in SPEC order): counts and mean scores.

        ``snri_tp`` is the mean SNRi of the TP sources of the class; ``snri_all`` the mean of
        all its contributions (TP SNRi, 0 for FP and FN).
        """
        rows = []
        for label in CLASSES:
            mine = [s for r in self.results for s in r.sources if s.label == label]
            tps = [s for s in mine if s.kind == "TP"]
            rows.append(OrderedDict([
                ("label", label),
                ("n_tp", len(tps)),
                ("n_fp", sum(s.kind == "FP" for s in mine)),
                ("n_fn", sum(s.kind == "FN" for s in mine)),
                ("snr_tp", _mean(s.snr for s in tps)),
                ("snri_tp", _mean(s.snri for s in tps)),
                ("si_sdr_tp", _mean(s.si_sdr for s in tps if s.si_sdr is not None)),
                ("snri_all", _mean(s.snri for s in mine)),
            ]))
        return rows

    def per_mixture_rows(self):
        """One flat row per mixture (for CSV): labels, score, counts, and a ``sources`` column
        listing every contribution as ``Label:KIND [snr=.. snri=..] [p=..]``, joined by " | "."""
        rows = []
        for r in self.results:
            parts = []
            for s in r.sources:
                text = f"{s.label}:{s.kind}"
                if s.kind == "TP":
                    text += f" snr={s.snr:.2f} snri={s.snri:.2f}"
                if s.probability is not None:
                    text += f" p={s.probability:.3f}"
                parts.append(text)
            rows.append(OrderedDict([
                ("mixture", r.mixture),
                ("score", _fmt(r.score, 4)),
                ("skipped", int(r.skipped)),
                ("labels_correct", int(r.labels_correct)),
                ("tp", r.tp), ("fp", r.fp), ("fn", r.fn),
                ("ref_labels", ";".join(r.ref_labels)),
                ("est_labels", ";".join(r.est_labels)),
                ("probabilities", ";".join(_fmt(p, 4) for p in r.probabilities)
                 if any(p is not None for p in r.probabilities) else ""),
                ("sources", " | ".join(parts)),
            ]))
        return rows

    def per_source_rows(self):
        """One row per contribution (TP/FP/FN) with names, probability, SNR, SNRi, SI-SDR."""
        rows = []
        for r in self.results:
            for s in r.sources:
                row = OrderedDict([("mixture", r.mixture)])
                row.update(asdict(s))
                rows.append(row)
        return rows
