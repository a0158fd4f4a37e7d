"""Score separated sources against a test set: CA-SDRi (2025) or CAPI-SDRi (2026), accuracies.

Usage::

    python -m s5lib.bin.score --year 2026 --ref_dir DEV/synthesized/test \\
        --est_dir exp/infer_x/est --out_dir exp/infer_x/score [--probs eval_results.json] \\
        [--tag NAME] [--recipe NAME] [--label_mode estimated|oracle|baseline_tagger[_step<k>]] [--nj 2]
    python -m s5lib.bin.score --year 2026 --ref_dir ... --out_dir exp/anchor_mixture --anchor mixture
    python -m s5lib.bin.score --year 2026 --ref_dir ... --out_dir exp/anchor_oracle --anchor oracle

Any key of ``DEFAULTS`` may come from ``--config file.yaml`` or ``--key value``.

``ref_dir`` holds ``soundscape/<mix>.wav`` (4-ch, 32 kHz) and ``oracle_target/`` (mono
references). ``est_dir`` holds mono estimates named ``<mix>_<Label>.wav`` (2025) or
``<mix>_<slot>_<Label>.wav`` (2026); both forms are read for either year, as the official
loader does (see :mod:`s5lib.metrics.naming`). ``--probs`` is a 2026 ``eval_results.json``
(or a ``{file name: probability}`` object); probabilities are reported, never scored.

Anchors need no estimates: ``--anchor mixture`` uses mixture channel 0 as the estimate for
every reference label (oracle labels, SDRi 0 by definition); ``--anchor oracle`` uses the
references themselves; ``--anchor silence`` outputs zeros for every reference label, which
scores SNR 0 dB and so SDRi = -SNR(mixture, reference): the part of any positive SDRi that a
system gets for free when the mixture's own SNR is negative; ``--anchor class_eq --class_eq
FILE`` applies one fixed gain per (class, STFT bin) to channel 0 for every reference label
(:mod:`s5lib.infer.class_eq`; the gains are fitted on training mixtures by
``python -m s5lib.bin.fit_class_eq``): the floor of a label-queried separator. Anchors are
reported with ``label_mode: oracle``.

Inputs are checked before anything is scored; every problem found (stray or badly named
wav, estimate of a mixture not in ``soundscape/``, slot used twice, a class given twice in
2025, probabilities that do not match the files, a missing folder) is listed in one
:class:`ScoreInputError`. Audio problems (wrong sample rate, channel count, length, NaN) are
collected while reading and reported the same way. Non-wav files and sub-folders of
``est_dir`` are ignored with a warning; hidden files are ignored.

Writes to ``out_dir``: ``summary.json`` (recipe, tag, year, label mode, command, metrics),
``per_mixture.csv``, ``per_source.csv``, ``per_class.csv``, ``per_class.png`` and the
resolved ``config.yaml``.

Directions (a column the official scorer does not have): when ``--probs`` gives a ``doa`` per
estimate (end-to-end systems with a DoA head, KUBIG), each TP estimate's angle to its reference's
direction (from ``<ref_dir>/metadata/<mix>.json`` and the rooms of ``--bank_root``) is measured;
``DoA_err_tp`` is its mean in degrees over the TP estimates that gave a direction.

The inference stage can skip the wav round trip: read the test set with :class:`ReferenceSet`,
feed an :class:`s5lib.metrics.S5Scorer` and call :func:`s5lib.results.write_score_outputs`.
"""
import os
import shlex
import sys
from collections import Counter, OrderedDict
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm import tqdm

from s5lib.audio import AudioError, read_audio
from s5lib.config import parse_config, save_config
from s5lib.constants import N_FOA_CHANNELS, SAMPLE_RATE, YEARS
from s5lib.metrics.doa import angular_error_deg, read_estimate_doas
from s5lib.metrics.naming import NamingError, parse_source_filename, read_probabilities
from s5lib.metrics.s5 import S5Scorer, score_mixture
from s5lib.results import split_step_mode

DEFAULTS = {
    "year": 2026,            # 2025: CA-SDRi + set accuracy; 2026: CAPI-SDRi + multiset/source
    "ref_dir": None,         # test set folder with soundscape/ and oracle_target/
    "est_dir": None,         # folder of estimate wavs (not needed with --anchor)
    "out_dir": None,         # where the results go
    "probs": None,           # eval_results.json with a probability per estimate (optional)
    "anchor": None,          # None, "mixture", "oracle", "silence" or "class_eq"
    "class_eq": None,        # gains file of --anchor class_eq (python -m s5lib.bin.fit_class_eq)
    "tag": None,             # experiment name in tables (default: anchor_<x> or out_dir name)
    "recipe": None,          # recipe name (default: the egs/<recipe> folder we run in)
    "label_mode": "estimated",  # estimated | oracle | baseline_tagger [+ _step<k>] (the labels used)
    "nj": 2,                 # reader processes
    "sample_rate": SAMPLE_RATE,
    "mix_channels": N_FOA_CHANNELS,
    "si_sdr": True,          # also measure SI-SDR of TP pairs (reported only)
    "plot": True,            # write per_class.png
    # DoA error of TP estimates (systems that predict directions, e.g. KUBIG): the estimates'
    # directions come from --probs (a "doa" per estimate), the references' from the test set's
    # metadata/<mix>.json and the rooms of bank_root (the dev_set the test set was made from)
    "bank_root": None,
    "doa_metadata": None,    # default: <ref_dir>/metadata
}
ANCHORS = ("mixture", "oracle", "silence", "class_eq")
LABEL_MODES = ("estimated", "oracle", "baseline_tagger")  # each optionally + "_step<k>" (refinement)
MAX_LISTED_PROBLEMS = 200


def is_label_mode(mode):
    """A label source of LABEL_MODES, optionally with a refinement step suffix (``oracle_step2``)."""
    return bool(mode) and split_step_mode(str(mode))[0] in LABEL_MODES


class ScoreInputError(ValueError):
    """Bad scoring inputs; ``problems`` lists every problem found, one line each."""

    def __init__(self, problems):
        self.problems = list(problems)
        shown = self.problems[:MAX_LISTED_PROBLEMS]
        lines = [f"{len(self.problems)} problem(s) with the scoring inputs:"]
        lines += [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


def _warn(message):
    print(f"WARNING: {message}", file=sys.stderr)


def scan_sources(folder, mixture_ids, year, what):
    """Parse every wav of ``folder`` as a source of a known mixture.

    Returns (sources, problems): sources maps mixture id -> list of (SourceName, path) sorted
    by slot then label; problems is a list of strings. ``what`` ("estimate"/"reference")
    only shapes the messages.
    """
    problems, ignored = [], []
    sources = {}
    if not os.path.isdir(folder):
        return sources, [f"{folder}: {what} folder does not exist"]
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("."):
            continue
        if not name.endswith(".wav") or not os.path.isfile(path):
            ignored.append(name)
            continue
        try:
            parsed = parse_source_filename(name, mixture_ids)
        except NamingError as err:
            problems.append(f"{path}: stray {what} file, {err.problem}")
            continue
        sources.setdefault(parsed.mixture, []).append((parsed, path))
    if ignored:
        _warn(f"{folder}: ignoring {len(ignored)} non-wav entr(y/ies): {ignored[:5]}"
              f"{' ...' if len(ignored) > 5 else ''}")
    for mixture, items in sources.items():
        items.sort(key=lambda item: (-1 if item[0].slot is None else item[0].slot,
                                     item[0].label, item[0].filename))
        slots = Counter(p.slot for p, _ in items if p.slot is not None)
        for slot, count in slots.items():
            if count > 1:
                names = [p.filename for p, _ in items if p.slot == slot]
                problems.append(f"{folder}: mixture {mixture!r} has slot {slot} {count} times "
                                f"({', '.join(names)})")
        if year == 2025:
            labels = Counter(p.label for p, _ in items)
            for label, count in labels.items():
                if count > 1:
                    names = [p.filename for p, _ in items if p.label == label]
                    problems.append(f"{folder}: 2025 allows one {what} per class, mixture "
                                    f"{mixture!r} has {count} of {label} ({', '.join(names)})")
    return sources, problems


class ReferenceSet:
    """A test set folder: ``soundscape/<mix>.wav`` mixtures and ``oracle_target/`` references.

    Scans the names on construction (raises :class:`ScoreInputError` listing every naming
    problem); audio is read on demand with the checks of :func:`s5lib.audio.read_audio`.
    """

    def __init__(self, ref_dir, year, sample_rate=SAMPLE_RATE, mix_channels=N_FOA_CHANNELS):
        if year not in YEARS:
            raise ScoreInputError([f"year must be one of {YEARS}, got {year!r}"])
        self.ref_dir = ref_dir
        self.year = year
        self.sample_rate = sample_rate
        self.mix_channels = mix_channels
        soundscape_dir = os.path.join(ref_dir, "soundscape")
        if not os.path.isdir(soundscape_dir):
            raise ScoreInputError([f"{soundscape_dir}: soundscape folder does not exist"])
        names = sorted(n for n in os.listdir(soundscape_dir)
                       if n.endswith(".wav") and not n.startswith("."))
        if not names:
            raise ScoreInputError([f"{soundscape_dir}: no .wav mixtures found"])
        self.mixtures = OrderedDict((n[:-len(".wav")], os.path.join(soundscape_dir, n))
                                    for n in names)
        self.references, problems = scan_sources(os.path.join(ref_dir, "oracle_target"),
                                                 set(self.mixtures), year, "reference")
        if problems:
            raise ScoreInputError(problems)

    def __len__(self):
        return len(self.mixtures)

    def read_mixture(self, mixture):
        """The mixture as (channels, T) float32."""
        mix = read_audio(self.mixtures[mixture], sample_rate=self.sample_rate,
                         channels=self.mix_channels)
        return mix if mix.ndim == 2 else mix[None]

    def read_references(self, mixture):
        """(references, names): list of (label, wave (T,)) and their file names."""
        items = self.references.get(mixture, [])
        refs = [(p.label, read_audio(path, sample_rate=self.sample_rate, channels=1))
                for p, path in items]
        return refs, [p.filename for p, _ in items]


def _read_checked(path, sample_rate, n_samples, mix_path, problems):
    """Read a mono source; on a problem append it to ``problems`` and return None."""
    try:
        wave = read_audio(path, sample_rate=sample_rate, channels=1)
    except AudioError as err:
        problems.append(str(err))
        return None
    if wave.shape[0] != n_samples:
        problems.append(f"{path}: {wave.shape[0]} samples, expected {n_samples} like the "
                        f"mixture {mix_path}")
        return None
    return wave


def score_job(job):
    """Read and score one mixture (runs in a worker process).

    ``job`` is a dict with mixture, mix_path, refs [(name, label, path)], ests
    [(name, label, path, probability)] and settings. Returns (MixtureResult or None, problems).
    """
    settings = job["settings"]
    problems = []
    try:
        mix = read_audio(job["mix_path"], sample_rate=settings["sample_rate"],
                         channels=settings["mix_channels"])
    except AudioError as err:
        return None, [str(err)]
    mix0 = mix[0] if mix.ndim == 2 else mix
    n_samples = mix0.shape[0]
    refs = [(label, _read_checked(path, settings["sample_rate"], n_samples, job["mix_path"],
                                  problems)) for _, label, path in job["refs"]]
    ref_names = [name for name, _, _ in job["refs"]]
    anchor = settings["anchor"]
    if anchor == "mixture":
        ests = [(label, mix0, None) for label, _ in refs]
        est_names = ["<mixture>"] * len(refs)
    elif anchor == "oracle":
        ests = [(label, wave, None) for label, wave in refs]
        est_names = ["<oracle>"] * len(refs)
    elif anchor == "silence":
        ests = [(label, np.zeros_like(mix0), None) for label, _ in refs]
        est_names = ["<silence>"] * len(refs)
    elif anchor == "class_eq":
        from s5lib.infer.class_eq import apply_class_eq
        gains, n_fft, hop = settings["class_eq_gains"]
        ests = [(label, apply_class_eq(gains, mix0, label, n_fft, hop), None)
                for label, _ in refs]
        est_names = ["<class_eq>"] * len(refs)
    else:
        ests = [(label, _read_checked(path, settings["sample_rate"], n_samples,
                                      job["mix_path"], problems), prob)
                for _, label, path, prob in job["ests"]]
        est_names = [name for name, _, _, _ in job["ests"]]
    if problems:
        return None, problems
    result = score_mixture(settings["year"], job["mixture"], mix0, ests, refs,
                           est_names=est_names, ref_names=ref_names,
                           with_si_sdr=settings["si_sdr"])
    if job.get("est_doa") is not None and job.get("ref_doa") is not None:
        for source in result.sources:  # TP pairs: the estimate's direction against its reference's
            if source.kind != "TP":
                continue
            est_doa, ref_doa = job["est_doa"][source.est_index], job["ref_doa"][source.ref_index]
            if est_doa is not None and ref_doa is not None:
                source.doa_error = angular_error_deg(est_doa, ref_doa)
    return result, []


def reference_directions(test_set, bank_root, metadata_dir):
    """{mixture: [reference direction per reference of ReferenceSet order]} from the test set's
    per-mixture metadata (the target positions, in slot order) and the rooms of ``bank_root``.
    Returns (directions, problems)."""
    from s5lib.data.synth import FoaSynthesizer, SoundBank, SynthesisError, synth_config_from_metadata
    import json
    problems, out, bank = [], {}, None
    for mixture in test_set.mixtures:
        path = os.path.join(metadata_dir, mixture + ".json")
        if not os.path.isfile(path):
            problems.append(f"{path}: no metadata for mixture {mixture!r} (the reference directions)")
            continue
        try:
            with open(path) as f:
                meta = json.load(f)
            if bank is None:  # the split the test set is drawn from (prep_data's _eval_synth)
                bank = SoundBank(bank_root, "valid")
            synth = FoaSynthesizer(bank, synth_config_from_metadata(meta))
            targets = synth.target_positions(meta)
        except (OSError, ValueError, KeyError, SynthesisError) as err:
            problems.append(f"{path}: cannot read the target positions ({err})")
            continue
        directions = []
        for parsed, _ in test_set.references.get(mixture, []):
            slot = parsed.slot if parsed.slot is not None else len(directions)
            if slot >= len(targets) or targets[slot][0] != parsed.label:
                problems.append(f"{path}: reference {parsed.filename} has no target of class "
                                f"{parsed.label} in slot {slot} of the metadata")
                directions.append(None)
            else:
                directions.append(targets[slot][1])
        out[mixture] = directions
    return out, problems


def build_jobs(cfg):
    """Check the inputs and build one job per mixture. Raises ScoreInputError."""
    problems = []
    year = cfg["year"]
    if year not in YEARS:
        problems.append(f"--year must be one of {YEARS}, got {year!r}")
    if not cfg["ref_dir"]:
        problems.append("--ref_dir is required")
    if not cfg["out_dir"]:
        problems.append("--out_dir is required")
    if cfg["anchor"] not in (None,) + ANCHORS:
        problems.append(f"--anchor must be one of {ANCHORS}, got {cfg['anchor']!r}")
    if not is_label_mode(cfg["label_mode"]):
        problems.append(f"--label_mode must be one of {LABEL_MODES}, optionally with a refinement "
                        f"step suffix (_step<k>), got {cfg['label_mode']!r}")
    if cfg["anchor"] is None and not cfg["est_dir"]:
        problems.append("--est_dir is required (or use --anchor mixture|oracle|silence)")
    if cfg["anchor"] is not None and cfg["est_dir"]:
        problems.append("--anchor builds its own estimates; do not give --est_dir")
    class_eq_gains = None
    if cfg["anchor"] == "class_eq":
        if not cfg["class_eq"]:
            problems.append("--anchor class_eq needs --class_eq FILE (python -m s5lib.bin.fit_class_eq)")
        else:
            from s5lib.infer.class_eq import load_gains
            try:
                class_eq_gains = load_gains(cfg["class_eq"])
            except ValueError as err:
                problems.append(str(err))
    elif cfg["class_eq"]:
        problems.append("--class_eq is only used with --anchor class_eq")
    if not isinstance(cfg["nj"], int) or cfg["nj"] < 1:
        problems.append(f"--nj must be a positive integer, got {cfg['nj']!r}")
    if problems:
        raise ScoreInputError(problems)

    test_set = ReferenceSet(cfg["ref_dir"], year, cfg["sample_rate"], cfg["mix_channels"])
    estimates = {}
    if cfg["anchor"] is None:
        estimates, problems = scan_sources(cfg["est_dir"], set(test_set.mixtures), year,
                                           "estimate")
        if not problems and not estimates:
            # legitimate for a system that detects nothing (2026 allows empty mixtures), but
            # far more often a wrong folder: say so loudly, and score it as "nothing found"
            print(f"WARNING: {cfg['est_dir']}: no estimate wav files found; every mixture is "
                  "scored as predicting no source", file=sys.stderr)
    probs = {}
    if cfg["probs"]:
        try:
            probs = read_probabilities(cfg["probs"])
        except ValueError as err:
            problems.append(str(err))
        est_files = {p.filename for items in estimates.values() for p, _ in items}
        for name in sorted(set(probs) - est_files):
            problems.append(f"{cfg['probs']}: lists {name!r} but {cfg['est_dir']} has no "
                            f"such estimate")
        for name in sorted(est_files - set(probs)):
            problems.append(f"{cfg['probs']}: no probability for estimate {name!r}")
    if problems:
        raise ScoreInputError(problems)

    est_doas, ref_doas = {}, None
    if cfg["anchor"] is None and cfg["probs"]:
        try:
            est_doas = read_estimate_doas(cfg["probs"])
        except ValueError as err:
            raise ScoreInputError([str(err)]) from None
    if est_doas:
        metadata_dir = cfg["doa_metadata"] or os.path.join(cfg["ref_dir"], "metadata")
        if not cfg["bank_root"] or not os.path.isdir(metadata_dir):
            _warn(f"{cfg['probs']}: the estimates carry directions, but the DoA error needs "
                  f"--bank_root (the dev_set) and the test metadata ({metadata_dir}); not scored")
        else:
            ref_doas, doa_problems = reference_directions(test_set, cfg["bank_root"], metadata_dir)
            if doa_problems:
                raise ScoreInputError(doa_problems)
    settings = {key: cfg[key] for key in ("year", "sample_rate", "mix_channels", "anchor",
                                          "si_sdr")}
    settings["class_eq_gains"] = class_eq_gains
    jobs = []
    for mixture, mix_path in test_set.mixtures.items():
        jobs.append({
            "mixture": mixture,
            "mix_path": mix_path,
            "refs": [(p.filename, p.label, path) for p, path in
                     test_set.references.get(mixture, [])],
            "ests": [(p.filename, p.label, path, probs.get(p.filename)) for p, path in
                     estimates.get(mixture, [])],
            "settings": settings,
        })
        if ref_doas is not None:
            jobs[-1]["ref_doa"] = ref_doas[mixture]
            jobs[-1]["est_doa"] = [est_doas.get(p.filename) for p, _ in estimates.get(mixture, [])]
    return jobs


def run_jobs(jobs, nj, desc="scoring"):
    """Score all jobs (``nj`` processes); returns (results, problems)."""
    results, problems = [], []
    if nj <= 1:
        outputs = map(score_job, jobs)
        for result, job_problems in tqdm(outputs, total=len(jobs), desc=desc, mininterval=2):
            results.append(result)
            problems.extend(job_problems)
    else:
        chunksize = max(1, min(16, len(jobs) // (4 * nj)))
        with ProcessPoolExecutor(max_workers=nj) as pool:
            outputs = pool.map(score_job, jobs, chunksize=chunksize)
            for result, job_problems in tqdm(outputs, total=len(jobs), desc=desc,
                                             mininterval=2):
                results.append(result)
                problems.extend(job_problems)
    return results, problems


def default_recipe_name(cwd=None):
    """``<recipe>`` when run inside ``egs/<recipe>`` (or below it), else ""."""
    path = os.path.abspath(cwd or os.getcwd())
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return ""
        if os.path.basename(parent) == "egs":
            return os.path.basename(path)
        path = parent


def score(cfg, command=None):
    """Score as configured (``cfg`` as in ``DEFAULTS``); write the outputs; return the summary."""
    from s5lib.results import write_score_outputs
    cfg = dict(DEFAULTS, **cfg)
    jobs = build_jobs(cfg)
    source = f"--anchor {cfg['anchor']}" if cfg["anchor"] else cfg["est_dir"]
    print(f"Scoring {len(jobs)} mixtures ({cfg['year']}): {source} vs {cfg['ref_dir']} "
          f"-> {cfg['out_dir']} (nj={cfg['nj']})", flush=True)
    results, problems = run_jobs(jobs, cfg["nj"])
    if problems:
        raise ScoreInputError(problems)
    scorer = S5Scorer(cfg["year"], with_si_sdr=cfg["si_sdr"])
    for result in results:
        scorer.add_result(result)
    if cfg["anchor"]:
        label_mode = "oracle"
        tag = cfg["tag"] or f"anchor_{cfg['anchor']}"
    else:
        label_mode = cfg["label_mode"]
        tag = cfg["tag"] or os.path.basename(os.path.normpath(cfg["out_dir"]))
    meta = {
        "recipe": cfg["recipe"] if cfg["recipe"] is not None else default_recipe_name(),
        "tag": tag,
        "year": cfg["year"],
        "label_mode": label_mode,
        "anchor": cfg["anchor"],
        "command": command or "",
        "est_dir": cfg["est_dir"],
        "ref_dir": cfg["ref_dir"],
        "probs": cfg["probs"],
    }
    os.makedirs(cfg["out_dir"], exist_ok=True)
    save_config(cfg, os.path.join(cfg["out_dir"], "config.yaml"))
    summary = write_score_outputs(scorer, cfg["out_dir"], meta, plot=cfg["plot"])
    return summary


def format_summary(summary):
    """One readable line per figure of ``summary["metrics"]``."""
    lines = [f"[{summary['recipe'] or '-'} / {summary['tag']} / {summary['label_mode']} labels]"]
    for key, value in summary["metrics"].items():
        if key in ("year", "metric_name"):
            continue
        lines.append(f"  {key:>16s}: {value:.3f}" if isinstance(value, float)
                     else f"  {key:>16s}: {value}")
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(DEFAULTS, argv, description=__doc__.splitlines()[0])
    command = "python -m s5lib.bin.score " + shlex.join(argv)
    try:
        summary = score(cfg, command=command)
    except ScoreInputError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
