"""Package stage-4 estimates of an evaluation set the way the DCASE Task 4 (S5) organisers ask.

Entry point: ``python -m s5lib.bin.package_submission`` (see there for the options). This
module checks an estimate folder written by ``s5lib.bin.infer`` (``<mode>/estimates/`` and
``<mode>/eval_results.json``) and writes, into one output folder:

2025 (CA-SDRi)::

    <label>_out.zip                   the system output, uploaded to the organisers
        <label>_out/eval_out/<mix>_<Label>.wav      one mono 32 kHz wav per estimate
    <label>.meta.yaml                 system meta information (template, see below)

2026 (CAPI-SDRi)::

    <label>.zip                       the system output (uploaded to a file-sharing service)
        <label>/eval_out/<mix>_<slot>_<Label>.wav   one mono 32 kHz wav per estimate
        <label>/eval_results.json                   {"nparams", "probabilities", "config"}
        <label>/dev_set_test_results.json           only when given (--dev_results)
    <label>.meta.yaml

``<label>`` is the DCASE submission label ``<Lastname>_<Institution>_task4_<n>`` (n = 1..4).
Still to be added by hand to the package sent through the DCASE submission system: the
technical report ``<Lastname>_<Institution>_task4.technical_report.pdf``, the ``FILL_ME``
values of the meta file and, for 2026, the audio URL file.

Where the facts come from (read for facts only; nothing was copied):

* nttcslab/dcase2025_task4_baseline, commit 12063c5219cab094826e839be9a9bd095a6b441c:
  ``generate_waveform.sh`` names the output folder ``<author>_<affiliation>_task4_<n>_out``
  and zips that folder (``zip -r``) from its parent, so members start with the folder name;
  ``src/evaluation/generate_waveform.py`` writes the estimates into ``<folder>/eval_out/`` as
  ``<soundscape>_<label>.wav`` with soundfile's WAV default (16-bit PCM) at 32 kHz, skips
  ``silence`` outputs, and checks that every soundscape has at least one estimate and that
  every label is one of the 18 classes; ``README.md`` ("Generate Audio Files for Final
  Submission"): the evaluation set has 2,290 mixtures in ``eval_set/soundscape`` (the first
  1,620 are ranked) and the zip is what is submitted.
* nttcslab/dcase2026_task4_baseline, commit 20e6992867a7a5d0dcde1308945831e4e7c136fa:
  ``generate_waveform.sh`` names the folder ``<author>_<affiliation>_task4_<n>`` (no
  ``_out``, although the README comments show ``..._out.zip``; the script is followed here)
  and zips it the same way; ``src/evaluation/generate_waveform.py`` writes
  ``<folder>/eval_out/<soundscape>_<slot>_<label>.wav`` (16-bit PCM, 32 kHz) and
  ``<folder>/eval_results.json`` with ``nparams`` (int, all model parameters),
  ``probabilities`` (one ``{"soundscape": str, "estimate": [{"filename": str, "label": str,
  "probability": float}]}`` per soundscape, an empty list when nothing was detected) and
  ``config`` (the system's config); its checks: file names in the JSON are unique and equal
  the set of wav files, each name fits ``^<soundscape>(?:_(\\d+))?_(.+)\\.wav$`` for exactly
  one soundscape and its label is one of the 18 classes. It also evaluates the development
  test set into ``<folder>/dev_set_test_results.json`` (see ``src/evaluation/evaluate.py``).
  ``src/datamodules/dataset.py`` (``_get_data_waveform``): estimates are found by soundscape
  prefix, must be at the mixture's sample rate, and a soundscape without any is scored as
  silence, so empty outputs are legal. ``README.md`` ("Generate Data for Final Submission"):
  2,567 evaluation mixtures in ``eval_set/synthesized/eval/soundscape`` (first 1,512 ranked);
  the zip goes to a file-sharing service and its URL into ``<Lastname>_<Inst>_task4
  .audio_url.txt`` laid out as in the example package (release v1.1.0 ``task4.zip``, which
  is not in the stored material: copy its format by hand).
* https://dcase.community/challenge2025/submission and .../challenge2026/submission: one
  package of system outputs (up to 4 per task), a meta information file per system and a
  technical report (pdf, at least title, authors and abstract).
* Public DCASE ``*.meta.yaml`` files (submission templates of other tasks, found with the
  code search): the ``submission:`` block (``label``, ``name``, ``abbreviation`` of at most
  10 characters, ``authors`` with ``lastname``, ``firstname``, ``email``, ``corresponding``,
  ``affiliation`` {``abbreviation``, ``institute``, ``department``, ``location``}) and the
  label rule ``[Last name of corresponding author]_[Abbreviation of institute]_task[task
  number]_[index of the submission (1-4)]``. The task-4 specific ``system:`` and ``results:``
  keys of the S5 template could not be read from the stored copy of the task pages
  (https://dcase.community/challenge2025/task-spatial-semantic-segmentation-of-sound-scenes
  and the 2026 page); they are written here as our best reading and marked to be checked.
* Task pages (same addresses): 2025 mixtures hold 1 to 3 target events, with mutually
  exclusive labels; 2026 mixtures may hold zero targets and repeat a class.

Decisions taken here:

* 2025 requires at least one estimate per mixture: every 2025 mixture contains a target and
  the organisers' own check refuses a soundscape without estimate, so it is an error.
* 2026 allows none, but the mixture must then be listed in ``eval_results.json`` with an
  empty ``estimate`` list, so that "nothing detected" is explicit and not a lost file.
* Names are parsed with :mod:`s5lib.metrics.naming` against the known mixture ids. 2025 names
  must be slot-less; 2026 names may omit the slot (the official loader allows it) but one
  slot may not be used twice for a mixture. ``silence`` is refused in both years.
* Audio is re-encoded (default 16-bit PCM like the baselines; ``FLOAT`` or ``PCM_24`` on
  request). A sample beyond +-1 would clip in PCM: that is an error, not a silent change.
* Every check runs before anything is written; audio sample checks run while the zip is
  written to a temporary file, which is removed on any problem. All problems found are
  reported together in one :class:`SubmissionError`, each naming its file.
"""
import io
import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import soundfile as sf

from s5lib import constants
from s5lib.audio import AudioError, audio_info, read_audio
from s5lib.metrics.naming import NamingError, parse_source_filename

logger = logging.getLogger("submission")

EVAL_SET_SIZE = {2025: 2290, 2026: 2567}
SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
TASK_LABELS = frozenset(constants.CLASSES)
PLACEHOLDER = "FILL_ME"
MAX_LISTED = 40
_LABEL_PART = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")


class SubmissionError(ValueError):
    """Bad input for packaging; the message lists every problem found, each with its file."""

    def __init__(self, problems):
        problems = list(problems) if not isinstance(problems, str) else [problems]
        self.problems = problems
        shown = problems[:MAX_LISTED]
        text = "\n  - ".join(shown)
        more = len(problems) - len(shown)
        if more > 0:
            text += f"\n  - ... and {more} more problem(s)"
        super().__init__(f"cannot package the submission ({len(problems)} problem(s)):"
                         f"\n  - {text}")


# ----------------------------------------------------------------------------- label

def submission_label(team, index):
    """``<Lastname>_<Institution>_task4_<index>`` from ``team`` = ``Lastname_Institution``."""
    if not team:
        raise SubmissionError("no team given: pass --team <Lastname>_<Institution> (last name "
                              "of the corresponding author, abbreviation of the institute)")
    parts = str(team).split("_")
    if len(parts) != 2 or not all(_LABEL_PART.match(p) for p in parts):
        raise SubmissionError(f"team {team!r} is not <Lastname>_<Institution> (two parts "
                              f"joined by one underscore; letters, digits and hyphens, each "
                              f"starting with a letter)")
    if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 4:
        raise SubmissionError(f"submission index {index!r} must be 1, 2, 3 or 4 (at most four "
                              f"systems per task)")
    return f"{parts[0]}_{parts[1]}_task4_{index}"


def archive_folder(label, year):
    """Top folder inside the zip (and the zip's stem): as the baselines' scripts name it."""
    return f"{label}_out" if year == 2025 else label


# ----------------------------------------------------------------------------- checking

@dataclass
class Estimate:
    filename: str
    mixture: str
    label: str
    slot: Optional[int]
    probability: Optional[float] = None


@dataclass
class CheckedEstimates:
    """What :func:`check_estimates` found (all checks that need no audio samples passed)."""
    year: int
    est_dir: str
    wav_dir: str
    mixtures: List[str]
    frames: Dict[str, int]
    estimates: Dict[str, List[Estimate]]
    results: Optional[dict]
    warnings: List[str] = field(default_factory=list)

    @property
    def n_estimates(self):
        return sum(len(v) for v in self.estimates.values())


def _warn(checked_warnings, text):
    checked_warnings.append(text)
    logger.warning("WARNING: %s", text)


def _mixtures_from_soundscape_dir(soundscape_dir, problems):
    if not os.path.isdir(soundscape_dir):
        raise SubmissionError(f"{soundscape_dir}: soundscape folder does not exist")
    names = sorted(f for f in os.listdir(soundscape_dir)
                   if f.endswith(".wav") and not f.startswith("."))
    if not names:
        raise SubmissionError(f"{soundscape_dir}: no mixture (*.wav) in the soundscape folder")
    frames = {}
    for name in names:
        path = os.path.join(soundscape_dir, name)
        try:
            sr, _, n = audio_info(path)
        except AudioError as err:
            problems.append(str(err))
            continue
        if sr != constants.SAMPLE_RATE:
            problems.append(f"{path}: mixture sample rate is {sr} Hz, expected "
                            f"{constants.SAMPLE_RATE} Hz")
            continue
        frames[name[:-len(".wav")]] = n
    return frames


def _read_results(path, problems):
    """Our eval_results.json, structure-checked; returns (data, entries) or (None, [])."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        problems.append(f"{path}: not valid JSON ({err})")
        return None, []
    if not isinstance(data, dict) or not isinstance(data.get("probabilities"), list):
        problems.append(f"{path}: expected an object with a 'probabilities' list (the "
                        f"eval_results.json written by s5lib.bin.infer)")
        return None, []
    if data.get("label_mode", "estimated") != "estimated":
        problems.append(f"{path}: label_mode is {data.get('label_mode')!r}; only estimates "
                        f"made with the system's own labels ('estimated') can be submitted")
    entries = []
    for i, entry in enumerate(data["probabilities"]):
        where = f"{path}: probabilities[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("soundscape"), str) \
                or not isinstance(entry.get("estimate"), list):
            problems.append(f"{where}: needs a 'soundscape' string and an 'estimate' list")
            continue
        ests = []
        for j, est in enumerate(entry["estimate"]):
            ewhere = f"{where} ({entry['soundscape']}) estimate[{j}]"
            if not isinstance(est, dict) or not isinstance(est.get("filename"), str) \
                    or not isinstance(est.get("label"), str) or "probability" not in est:
                problems.append(f"{ewhere}: needs 'filename' and 'label' strings and a "
                                f"'probability'")
                continue
            prob = est["probability"]
            if isinstance(prob, bool) or not isinstance(prob, (int, float)) \
                    or not (0.0 <= prob <= 1.0):
                problems.append(f"{path}: probability of {est['filename']} is {prob!r}, "
                                f"expected a number in [0, 1]")
                continue
            ests.append((est["filename"], est["label"], float(prob)))
        entries.append((entry["soundscape"], ests))
    return data, entries


def check_estimates(est_dir, year, soundscape_dir=None):
    """Check an inference output folder before packaging (no audio samples are read).

    Args:
        est_dir: ``<infer out_dir>/<mode>``, holding ``estimates/`` and ``eval_results.json``.
        year: 2025 or 2026 (naming and completeness rules).
        soundscape_dir: the mixtures (``<set>/soundscape``) to check completeness and lengths
            against; without it the mixture list is the one of ``eval_results.json`` and every
            estimate must last 10 s.
    Returns:
        :class:`CheckedEstimates`.
    Raises:
        SubmissionError listing every problem found.
    """
    if year not in constants.YEARS:
        raise SubmissionError(f"year must be one of {constants.YEARS}, got {year!r}")
    if not est_dir or not os.path.isdir(est_dir):
        raise SubmissionError(f"{est_dir}: estimate folder does not exist (expected "
                              f"<infer out_dir>/estimated)")
    wav_dir = os.path.join(est_dir, "estimates")
    if not os.path.isdir(wav_dir):
        raise SubmissionError(f"{wav_dir}: no estimates/ folder (was stage 4 run with this "
                              f"out_dir?)")
    problems, warnings = [], []
    results_path = os.path.join(est_dir, "eval_results.json")
    data, entries = (None, [])
    if os.path.isfile(results_path):
        data, entries = _read_results(results_path, problems)
    elif year == 2026:
        problems.append(f"{results_path}: missing; the 2026 package needs a probability for "
                        f"every estimate")

    if soundscape_dir:
        frames = _mixtures_from_soundscape_dir(soundscape_dir, problems)
    else:
        if data is None:
            raise SubmissionError(problems or [f"{results_path}: missing, and no "
                                               f"--soundscape_dir to take the mixture list from"])
        frames = {name: constants.N_SAMPLES for name, _ in entries}
        _warn(warnings, f"no --soundscape_dir: completeness is checked against the mixtures "
                        f"listed in {results_path} and lengths against "
                        f"{constants.N_SAMPLES} samples ({constants.DURATION_S} s)")
    mixture_ids = set(frames)

    # the files
    on_disk = {}
    for name in sorted(os.listdir(wav_dir)):
        path = os.path.join(wav_dir, name)
        if name.startswith("."):
            problems.append(f"{path}: hidden file in the estimate folder (stray file)")
            continue
        if os.path.isdir(path):
            problems.append(f"{path}: sub-folder in the estimate folder (stray entry)")
            continue
        if not name.endswith(".wav"):
            problems.append(f"{path}: not a .wav file (stray file)")
            continue
        try:
            parsed = parse_source_filename(name, mixture_ids, labels=TASK_LABELS)
        except NamingError as err:
            problems.append(f"{path}: bad estimate name: {err.problem}")
            continue
        if year == 2025 and parsed.slot is not None:
            problems.append(f"{path}: 2025 names carry no slot (expected "
                            f"{parsed.mixture}_{parsed.label}.wav)")
            continue
        on_disk[name] = Estimate(name, parsed.mixture, parsed.label, parsed.slot)

    # the probability file against the files
    listed = {}
    if data is not None:
        seen_mixtures = set()
        for mixture, ests in entries:
            if mixture not in mixture_ids:
                problems.append(f"{results_path}: soundscape {mixture!r} is not a mixture of "
                                f"{soundscape_dir or 'this file'}")
                continue
            if mixture in seen_mixtures:
                problems.append(f"{results_path}: soundscape {mixture!r} is listed twice")
                continue
            seen_mixtures.add(mixture)
            for filename, label, prob in ests:
                if filename in listed:
                    problems.append(f"{results_path}: {filename} is listed twice")
                    continue
                listed[filename] = prob
                est = on_disk.get(filename)
                if est is None:
                    if not os.path.exists(os.path.join(wav_dir, filename)):
                        problems.append(f"{results_path}: lists {filename}, which is not in "
                                        f"{wav_dir}")
                    continue
                if est.mixture != mixture:
                    problems.append(f"{results_path}: {filename} is listed under soundscape "
                                    f"{mixture!r} but its name belongs to {est.mixture!r}")
                if est.label != label:
                    problems.append(f"{results_path}: {filename} has label {label!r} but its "
                                    f"name says {est.label!r}")
                est.probability = prob
        for name in sorted(set(on_disk) - set(listed)):
            problems.append(f"{os.path.join(wav_dir, name)}: not listed in {results_path}")
        if year == 2026:
            for mixture in sorted(mixture_ids - seen_mixtures):
                problems.append(f"{results_path}: mixture {mixture!r} has no entry; a mixture "
                                f"without estimates must be listed with an empty 'estimate' "
                                f"list")

    # per mixture: completeness, slots, audio headers
    estimates = {m: [] for m in sorted(mixture_ids)}
    for est in on_disk.values():
        estimates[est.mixture].append(est)
    for mixture, ests in estimates.items():
        ests.sort(key=lambda e: (-1 if e.slot is None else e.slot, e.label, e.filename))
        if year == 2025 and not ests:
            problems.append(f"{mixture}: no estimate in {wav_dir}; every 2025 mixture holds "
                            f"at least one target, so at least one <mix>_<Label>.wav is "
                            f"required")
        slots = [e.slot for e in ests if e.slot is not None]
        for slot in sorted({s for s in slots if slots.count(s) > 1}):
            names = ", ".join(e.filename for e in ests if e.slot == slot)
            problems.append(f"{wav_dir}: slot {slot} of mixture {mixture!r} is used more than "
                            f"once ({names})")
        for est in ests:
            path = os.path.join(wav_dir, est.filename)
            try:
                sr, channels, n = audio_info(path)
            except AudioError as err:
                problems.append(str(err))
                continue
            if channels != 1:
                problems.append(f"{path}: has {channels} channels, estimates must be mono")
            if sr != constants.SAMPLE_RATE:
                problems.append(f"{path}: sample rate is {sr} Hz, expected "
                                f"{constants.SAMPLE_RATE} Hz")
            if n != frames[mixture]:
                problems.append(f"{path}: {n} samples, the mixture {mixture!r} has "
                                f"{frames[mixture]}")

    if problems:
        raise SubmissionError(problems)
    expected = EVAL_SET_SIZE[year]
    if len(mixture_ids) != expected:
        _warn(warnings, f"{len(mixture_ids)} mixtures, but the {year} evaluation set has "
                        f"{expected:,}: this is not a complete evaluation-set submission "
                        f"(fine for a dry run on another set)")
    checked = CheckedEstimates(year, est_dir, wav_dir, sorted(mixture_ids), frames, estimates,
                               data, warnings)
    logger.info("checked %d estimates of %d mixtures in %s", checked.n_estimates,
                len(checked.mixtures), wav_dir)
    return checked


# ----------------------------------------------------------------------------- writing

def _encode(path, subtype, problems):
    """Read a checked estimate and return its wav bytes, or None after adding a problem."""
    try:
        wave = read_audio(path, sample_rate=constants.SAMPLE_RATE, channels=1, allow_nan=True)
    except AudioError as err:
        problems.append(str(err))
        return None
    if not np.all(np.isfinite(wave)):
        problems.append(f"{path}: contains NaN or infinite samples")
        return None
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if subtype != "FLOAT" and peak > 1.0:
        problems.append(f"{path}: peak {peak:.3f} exceeds 1.0 and would clip in {subtype}; "
                        f"fix the estimate or package with --subtype FLOAT")
        return None
    buf = io.BytesIO()
    sf.write(buf, wave, constants.SAMPLE_RATE, subtype=subtype, format="WAV")
    return buf.getvalue()


def _write_zip(zip_path, folder, checked, subtype, extra_members, compression):
    """Write ``zip_path`` atomically; audio problems abort it (nothing left behind)."""
    tmp = zip_path + ".tmp"
    problems = []
    method = zipfile.ZIP_DEFLATED if compression == "deflated" else zipfile.ZIP_STORED
    try:
        with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True,
                             compresslevel=1 if method == zipfile.ZIP_DEFLATED else None) as zf:
            zf.writestr(f"{folder}/", b"")
            zf.writestr(f"{folder}/eval_out/", b"")
            for mixture in checked.mixtures:
                for est in checked.estimates[mixture]:
                    data = _encode(os.path.join(checked.wav_dir, est.filename), subtype,
                                   problems)
                    if data is not None and not problems:
                        zf.writestr(f"{folder}/eval_out/{est.filename}", data)
            for name, data in extra_members:
                zf.writestr(f"{folder}/{name}", data)
        if problems:
            raise SubmissionError(problems)
        os.replace(tmp, zip_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def eval_results_2026(checked, nparams, config=None):
    """The 2026 ``eval_results.json`` object (keys and types of the official baseline)."""
    if isinstance(nparams, bool) or not isinstance(nparams, int) or nparams <= 0:
        raise SubmissionError(f"nparams must be a positive integer (the number of parameters "
                              f"of the whole system), got {nparams!r}")
    probabilities = []
    for mixture in checked.mixtures:
        probabilities.append({
            "soundscape": mixture,
            "estimate": [{"filename": e.filename, "label": e.label,
                          "probability": float(e.probability)}
                         for e in checked.estimates[mixture]],
        })
    config = dict(config or {})
    for key in ("label_mode", "rtf"):  # what our own eval_results.json adds
        if checked.results and key in checked.results:
            config.setdefault(key, checked.results[key])
    return {"nparams": int(nparams), "probabilities": probabilities, "config": config}


def _read_json(path, what):
    """The JSON value of ``path``; a missing or malformed file is a SubmissionError naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise SubmissionError(f"{path}: {what} does not exist") from None
    except json.JSONDecodeError as err:
        raise SubmissionError(f"{path}: not valid JSON ({err})") from None


def _check_dev_results(path):
    data = _read_json(path, "dev-test results file")
    details = data.get("details") if isinstance(data, dict) else None
    if not isinstance(details, list) or not details or \
            not all(isinstance(d, dict) and isinstance(d.get("soundscape"), str) for d in details):
        raise SubmissionError(f"{path}: not a dev_set_test_results.json (needs a non-empty "
                              f"'details' list of objects with a 'soundscape')")
    return json.dumps(data, indent=4).encode()


def _q(value):
    """A YAML scalar (JSON is valid YAML for strings, numbers, booleans and null)."""
    return json.dumps(value)


DEV_METRICS = {2025: (("CA-SDRi", "CA-SDRi"), ("label_accuracy", "label_prediction_accuracy")),
               2026: (("CAPI-SDRi", "CAPI-SDRi"), ("accuracy_mixture", "accuracy_mixture"),
                      ("accuracy_source", "accuracy_source"))}


def read_dev_summary(path, year):
    """Development-test figures for the meta file from a stage-5 ``summary.json``."""
    data = _read_json(path, "scoring summary")
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise SubmissionError(f"{path}: not a scoring summary (no 'metrics' object)")
    if data.get("year") != year:
        raise SubmissionError(f"{path}: scores year {data.get('year')!r}, packaging {year}")
    if data.get("label_mode") != "estimated" or data.get("anchor"):
        anchor = f" anchor {data['anchor']!r}" if data.get("anchor") else ""
        raise SubmissionError(f"{path}: label_mode {data.get('label_mode')!r}{anchor}; the "
                              f"meta file reports the system's own labels ('estimated')")
    out = {}
    for key, name in DEV_METRICS[year]:
        value = data["metrics"].get(key)
        out[name] = None if value is None else round(float(value), 3)
    return out


def meta_yaml_text(label, year, system_name="", abbreviation="", nparams=None,
                   dev_results=None):
    """The ``<label>.meta.yaml`` template: what is known is filled, the rest is FILL_ME."""
    lastname, institution = label.split("_")[:2]
    fill = _q(PLACEHOLDER)
    abbreviation = abbreviation or PLACEHOLDER
    if len(abbreviation) > 10 and abbreviation != PLACEHOLDER:
        raise SubmissionError(f"abbreviation {abbreviation!r} is longer than 10 characters")
    metric = "CA-SDRi" if year == 2025 else "CAPI-SDRi"
    lines = [
        f"# DCASE{year} Task 4 (S5) system meta information for {label}.",
        "# Written by python -m s5lib.bin.package_submission. Replace every \"FILL_ME\" by hand",
        "# and compare the keys with the organisers' template on the task page before sending:",
        "# the submission block follows the DCASE meta files; the system and results keys are",
        "# this toolkit's reading and may need renaming.",
        "submission:",
        "  # <Last name of corresponding author>_<institute abbreviation>_task4_<index 1-4>",
        f"  label: {_q(label)}",
        "  # name used in the results tables",
        f"  name: {_q(system_name or PLACEHOLDER)}",
        "  # short name for tight tables, at most 10 characters",
        f"  abbreviation: {_q(abbreviation)}",
        "  # all authors, in order; exactly one is corresponding: true",
        "  authors:",
        f"    - lastname: {_q(lastname)}",
        f"      firstname: {fill}",
        f"      email: {fill}",
        "      corresponding: true",
        "      affiliation:",
        f"        abbreviation: {_q(institution)}",
        f"        institute: {fill}",
        f"        department: {fill}",
        f"        location: {fill}",
        "system:",
        "  description:",
        f"    input_sampling_rate: {constants.SAMPLE_RATE}",
        f"    input_channels: {constants.N_FOA_CHANNELS}  # first-order Ambisonics",
        f"    output_sampling_rate: {constants.SAMPLE_RATE}",
        f"    audio_tagging: {fill}  # e.g. M2D + linear head",
        f"    source_separation: {fill}  # e.g. ResUNetK, label-queried",
        f"    external_data: {fill}  # datasets / pre-trained models used beyond the dev set",
        f"    data_augmentation: {fill}",
        f"    ensemble_num_systems: {fill}",
        "  complexity:",
        f"    total_parameters: {_q(nparams if nparams else PLACEHOLDER)}",
        f"  source_code: {fill}  # URL, or \"not public\"",
        "results:",
        "  development_dataset:  # the development test set, estimated labels",
    ]
    names = [name for _, name in DEV_METRICS[year]]
    for name in names:
        value = (dev_results or {}).get(name)
        lines.append(f"    {name}: {_q(PLACEHOLDER if value is None else value)}")
    lines.append(f"# main metric: {metric} (dB); accuracies in %")
    return "\n".join(lines) + "\n"


def package_submission(est_dir, out_dir, year, team, index=1, soundscape_dir=None,
                       system_name="", abbreviation="", nparams=None, config=None,
                       dev_results=None, dev_summary=None, subtype="PCM_16",
                       compression="deflated", overwrite=False, check_only=False):
    """Check ``est_dir`` and write the submission files of ``year`` into ``out_dir``.

    Returns a dict with ``label``, ``zip`` and ``meta`` (paths; None with ``check_only``),
    ``n_mixtures``, ``n_estimates`` and ``warnings``. Raises SubmissionError.
    """
    if subtype not in SUBTYPES:
        raise SubmissionError(f"subtype must be one of {SUBTYPES}, got {subtype!r}")
    if compression not in ("deflated", "stored"):
        raise SubmissionError(f"compression must be 'deflated' or 'stored', got {compression!r}")
    label = submission_label(team, index)
    if abbreviation and len(abbreviation) > 10:
        raise SubmissionError(f"abbreviation {abbreviation!r} is longer than 10 characters")
    if year == 2026 and not check_only:
        if isinstance(nparams, bool) or not isinstance(nparams, int) or nparams <= 0:
            raise SubmissionError(f"2026 needs nparams, the parameter count of the whole "
                                  f"system (--nparams N), got {nparams!r}")
    dev_figures = read_dev_summary(dev_summary, year) if dev_summary else None
    extra = []
    if dev_results:
        if year != 2026:
            raise SubmissionError("--dev_results (dev_set_test_results.json) belongs to the "
                                  "2026 package only")
        extra.append(("dev_set_test_results.json", _check_dev_results(dev_results)))
    folder = archive_folder(label, year)
    zip_path = os.path.join(out_dir, f"{folder}.zip")
    meta_path = os.path.join(out_dir, f"{label}.meta.yaml")
    if not check_only and not overwrite:
        existing = [p for p in (zip_path, meta_path) if os.path.exists(p)]
        if existing:
            raise SubmissionError([f"{p}: exists; pass --overwrite true to replace it"
                                   for p in existing])
    checked = check_estimates(est_dir, year, soundscape_dir)
    warnings = list(checked.warnings)
    if year == 2026 and not dev_results:
        _warn(warnings, "no --dev_results: the organisers' 2026 package also carries "
                        "dev_set_test_results.json (the development test evaluation)")
    result = {"label": label, "zip": None, "meta": None, "n_mixtures": len(checked.mixtures),
              "n_estimates": checked.n_estimates, "warnings": warnings}
    if check_only:
        problems = []
        for mixture in checked.mixtures:
            for est in checked.estimates[mixture]:
                _encode(os.path.join(checked.wav_dir, est.filename), subtype, problems)
        if problems:
            raise SubmissionError(problems)
        return result
    if year == 2026:
        results = eval_results_2026(checked, nparams, config)
        extra.insert(0, ("eval_results.json",
                         json.dumps(results, indent=4, default=str).encode()))
    os.makedirs(out_dir, exist_ok=True)
    _write_zip(zip_path, folder, checked, subtype, extra, compression)
    text = meta_yaml_text(label, year, system_name, abbreviation, nparams, dev_figures)
    tmp = meta_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, meta_path)
    result.update(zip=zip_path, meta=meta_path)
    logger.info("wrote %s (%d estimates of %d mixtures) and %s", zip_path,
                checked.n_estimates, len(checked.mixtures), meta_path)
    return result
