"""Verifier of the DCASE S5 ``dev_set`` folder layout (SPEC §5).

:func:`verify_dev_set` walks a ``dev_set`` tree and collects everything that is missing or
malformed into a :class:`DevSetReport`, so a user sees all problems at once instead of the first
one; :func:`check_dev_set` raises :class:`DataLayoutError` with the readable report when the tree
is not usable. What is checked:

* ``sound_event/{train,valid}/<Class>/**.wav`` for each of the 18 target classes (missing class
  folders are named), ``interference/{train,valid}/**.wav``, ``noise/{train,valid}/*.wav``;
* ``room_ir/{train,valid}/*.sofa``: each file opens as HDF5 (netCDF-4) and has ``Data.IR`` of
  shape (M, 4, N), ``SourcePosition`` with one row per measurement (or one row) of 3 values, and
  ``Data.SamplingRate``;
* ``metadata/valid.json``: a list of ``{"metadata_path", "ref_event"}`` entries whose per-mixture
  JSON files (relative to ``metadata/``) exist and hold ``fg_events`` and ``room``;
* the test set at ``test/`` (2025) or ``synthesized/test/`` (2026) with ``soundscape/*.wav`` and
  ``oracle_target/<mix>_<Label>.wav`` (2026: ``<mix>_<slot>_<Label>.wav``);
* with ``check_audio``: every wav header (32 kHz; mono events and oracle targets, 4-channel noise
  and soundscapes, not empty), read in a thread pool.

Sound files and rooms named inside the per-mixture metadata that cannot be found in the tree (by
file name) are reported as warnings, not problems: the official metadata may write them relative
to directories of the organisers' machines, and the replay code resolves them.
"""
import concurrent.futures
import json
import os
from dataclasses import dataclass, field

import h5py

from s5lib import constants
from s5lib.audio import AudioError, audio_info

SPLITS = ("train", "valid")
MAX_REPORTED_PER_KIND = 20


class DataLayoutError(ValueError):
    """Raised when a dev_set tree is not usable; the message is the full report."""


@dataclass
class DevSetReport:
    """What :func:`verify_dev_set` found in one dev_set tree.

    ``problems`` are messages that make the tree unusable, ``warnings`` are doubts that do not,
    ``counts`` says how many files of each kind were found (e.g. ``"sound_event/train": 7336``).
    ``problem_kinds`` gives the kind of each problem (same order), used to group and cap them.
    """
    root: str
    year: int
    problems: list = field(default_factory=list)
    problem_kinds: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    @property
    def ok(self):
        return not self.problems

    def add(self, kind, message):
        """Record one problem of the given kind."""
        self.problems.append(message)
        self.problem_kinds.append(kind)

    def format(self, max_per_kind=MAX_REPORTED_PER_KIND):
        """A human-readable report; at most ``max_per_kind`` messages of each kind are listed."""
        status = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [f"DCASE {self.year} dev_set at {self.root}: {status}"]
        if self.counts:
            lines.append("Found:")
            lines += [f"  {name}: {value}" for name, value in self.counts.items()]
        if self.problems:
            lines.append("Problems:")
            by_kind = {}
            for kind, message in zip(self.problem_kinds, self.problems):
                by_kind.setdefault(kind, []).append(message)
            for kind, messages in by_kind.items():
                lines += [f"  [{kind}] {message}" for message in messages[:max_per_kind]]
                if len(messages) > max_per_kind:
                    lines.append(f"  [{kind}] ... and {len(messages) - max_per_kind} more")
        if self.warnings:
            lines.append("Warnings:")
            lines += [f"  {message}" for message in self.warnings[:max_per_kind]]
            if len(self.warnings) > max_per_kind:
                lines.append(f"  ... and {len(self.warnings) - max_per_kind} more warnings")
        return "\n".join(lines)


def test_set_dir(year):
    """Where the pre-mixed test set lives inside dev_set for a DCASE year."""
    return "test" if int(year) == 2025 else os.path.join("synthesized", "test")


def _wav_files(directory, recursive=True):
    """Sorted paths of the .wav files under ``directory`` (relative to it)."""
    found = []
    if recursive:
        for current, dirs, files in os.walk(directory):
            dirs.sort()
            found += [os.path.relpath(os.path.join(current, f), directory)
                      for f in files if f.lower().endswith(".wav")]
    else:
        found = [f for f in os.listdir(directory)
                 if f.lower().endswith(".wav") and os.path.isfile(os.path.join(directory, f))]
    return sorted(found)


def _check_wav_header(root, relative_path, channels):
    """None if the file is a 32 kHz wav with ``channels`` channels and samples, else a message."""
    try:
        sample_rate, n_channels, frames = audio_info(os.path.join(root, relative_path))
    except AudioError as err:
        return f"{relative_path}: {err.problem}"
    wrong = []
    if sample_rate != constants.SAMPLE_RATE:
        wrong.append(f"sample rate is {sample_rate} Hz, expected {constants.SAMPLE_RATE} Hz")
    if n_channels != channels:
        expected = "mono" if channels == 1 else f"{channels} channels"
        wrong.append(f"has {n_channels} channel(s), expected {expected}")
    if frames == 0:
        wrong.append("has no samples")
    return f"{relative_path}: {'; '.join(wrong)}" if wrong else None


def _check_sofa(path, relative_path):
    """(problems, n_positions, sample_rate) of one SOFA file, read with h5py only."""
    problems = []
    n_positions, sample_rate = 0, None
    try:
        with h5py.File(path, "r") as sofa:
            if "Data.IR" not in sofa:
                problems.append(f"{relative_path}: no Data.IR variable (no impulse responses)")
            else:
                shape = sofa["Data.IR"].shape
                if len(shape) != 3:
                    problems.append(f"{relative_path}: Data.IR has shape {shape}, "
                                    "expected (positions, 4 receivers, samples)")
                else:
                    n_positions = shape[0]
                    if shape[1] != constants.N_FOA_CHANNELS:
                        problems.append(f"{relative_path}: Data.IR has {shape[1]} receivers, "
                                        f"expected {constants.N_FOA_CHANNELS} (FOA W, Y, Z, X)")
                    if shape[0] == 0 or shape[2] == 0:
                        problems.append(f"{relative_path}: Data.IR is empty (shape {shape})")
            if "SourcePosition" not in sofa:
                problems.append(f"{relative_path}: no SourcePosition variable "
                                "(source positions are required)")
            else:
                shape = sofa["SourcePosition"].shape
                if len(shape) != 2 or shape[1] != 3 or shape[0] not in (1, max(n_positions, 1)):
                    problems.append(f"{relative_path}: SourcePosition has shape {shape}, "
                                    f"expected ({n_positions}, 3) or (1, 3)")
            if "Data.SamplingRate" not in sofa:
                problems.append(f"{relative_path}: no Data.SamplingRate variable")
            else:
                rates = sofa["Data.SamplingRate"][()]
                try:
                    sample_rate = int(round(float(rates.reshape(-1)[0])))
                except (AttributeError, IndexError, TypeError, ValueError):
                    problems.append(f"{relative_path}: unreadable Data.SamplingRate {rates!r}")
    except OSError as err:
        problems.append(f"{relative_path}: not a readable SOFA (HDF5/netCDF-4) file ({err})")
    return problems, n_positions, sample_rate


def _check_folders(report, root):
    """Folder layout; returns the list of (relative wav path, expected channels) to check."""
    wavs = []
    for split in SPLITS:
        split_dir = os.path.join("sound_event", split)
        if not os.path.isdir(os.path.join(root, split_dir)):
            report.add("missing folder", f"{split_dir}/ is missing (target sound events)")
        else:
            missing = [c for c in constants.CLASSES
                       if not os.path.isdir(os.path.join(root, split_dir, c))]
            if missing:
                report.add("missing class folder",
                           f"{split_dir}/ lacks {len(missing)} class folder(s): {', '.join(missing)}")
            n_files = 0
            for label in constants.CLASSES:
                class_dir = os.path.join(split_dir, label)
                if label in missing:
                    continue
                files = _wav_files(os.path.join(root, class_dir))
                if not files:
                    report.add("empty class folder", f"{class_dir}/ holds no .wav files")
                wavs += [(os.path.join(class_dir, f), 1) for f in files]
                n_files += len(files)
            report.counts[split_dir] = f"{n_files} wav in {len(constants.CLASSES) - len(missing)} classes"

        for kind, channels, recursive in (("interference", 1, True), ("noise", 4, False)):
            directory = os.path.join(kind, split)
            if not os.path.isdir(os.path.join(root, directory)):
                report.add("missing folder", f"{directory}/ is missing")
                continue
            files = _wav_files(os.path.join(root, directory), recursive=recursive)
            if not files:
                report.add("empty folder", f"{directory}/ holds no .wav files")
            wavs += [(os.path.join(directory, f), channels) for f in files]
            report.counts[directory] = f"{len(files)} wav"
    return wavs


def _check_rooms(report, root):
    for split in SPLITS:
        directory = os.path.join("room_ir", split)
        if not os.path.isdir(os.path.join(root, directory)):
            report.add("missing folder", f"{directory}/ is missing (FOA room responses)")
            continue
        names = sorted(f for f in os.listdir(os.path.join(root, directory)) if f.endswith(".sofa"))
        if not names:
            report.add("empty folder", f"{directory}/ holds no .sofa files")
        n_positions, rates = 0, set()
        for name in names:
            relative_path = os.path.join(directory, name)
            problems, positions, rate = _check_sofa(os.path.join(root, relative_path), relative_path)
            for message in problems:
                report.add("room_ir", message)
            n_positions += positions
            if rate is not None:
                rates.add(rate)
        rate_text = f", sample rate(s) {sorted(rates)} Hz" if rates else ""
        report.counts[directory] = f"{len(names)} sofa, {n_positions} positions{rate_text}"


def _check_metadata(report, root, known_wav_names):
    list_path = os.path.join("metadata", "valid.json")
    if not os.path.isfile(os.path.join(root, list_path)):
        report.add("metadata", f"{list_path} is missing (fixed validation mixtures)")
        return
    try:
        with open(os.path.join(root, list_path)) as f:
            entries = json.load(f)
    except (OSError, ValueError) as err:
        report.add("metadata", f"{list_path}: not readable JSON ({err})")
        return
    if not isinstance(entries, list):
        report.add("metadata", f"{list_path}: expected a JSON list, got {type(entries).__name__}")
        return
    report.counts[list_path] = f"{len(entries)} mixtures"
    unknown_sources, unknown_rooms = set(), set()
    room_names = set()
    for split in SPLITS:
        directory = os.path.join(root, "room_ir", split)
        if os.path.isdir(directory):
            room_names.update(os.listdir(directory))
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "metadata_path" not in entry or "ref_event" not in entry:
            report.add("metadata", f"{list_path}: entry {index} lacks metadata_path or ref_event")
            continue
        relative_path = os.path.join("metadata", entry["metadata_path"])
        try:
            with open(os.path.join(root, relative_path)) as f:
                meta = json.load(f)
        except FileNotFoundError:
            report.add("metadata", f"{relative_path} (entry {index} of {list_path}) is missing")
            continue
        except (OSError, ValueError) as err:
            report.add("metadata", f"{relative_path}: not readable JSON ({err})")
            continue
        if not isinstance(meta, dict) or "fg_events" not in meta or "room" not in meta:
            report.add("metadata", f"{relative_path}: lacks fg_events or room")
            continue
        if os.path.basename(str(meta["room"])) not in room_names:
            unknown_rooms.add(str(meta["room"]))
        for group in ("fg_events", "int_events", "bg_events"):
            for event in meta.get(group) or []:
                source = event.get("source_file") if isinstance(event, dict) else None
                if source and os.path.basename(source) not in known_wav_names:
                    unknown_sources.add(source)
    if unknown_rooms:
        report.warnings.append(f"{len(unknown_rooms)} room(s) named in the validation metadata "
                               f"are not in room_ir/, e.g. {sorted(unknown_rooms)[0]}")
    if unknown_sources:
        report.warnings.append(f"{len(unknown_sources)} source file(s) named in the validation "
                               f"metadata are not in the tree, e.g. {sorted(unknown_sources)[0]}")


def _check_test_set(report, root, year):
    test_dir = test_set_dir(year)
    if not os.path.isdir(os.path.join(root, test_dir)):
        other = test_set_dir(2026 if int(year) == 2025 else 2025)
        hint = ""
        if os.path.isdir(os.path.join(root, other)):
            hint = f" (found {other}/ instead: is this a dev_set of the other year?)"
        report.add("test set", f"{test_dir}/ is missing{hint}")
        return []
    wavs = []
    mixtures = []
    for sub in ("soundscape", "oracle_target"):
        if not os.path.isdir(os.path.join(root, test_dir, sub)):
            report.add("test set", f"{os.path.join(test_dir, sub)}/ is missing")
    soundscape_dir = os.path.join(test_dir, "soundscape")
    if os.path.isdir(os.path.join(root, soundscape_dir)):
        mixtures = [f[:-4] for f in _wav_files(os.path.join(root, soundscape_dir), recursive=False)]
        if not mixtures:
            report.add("test set", f"{soundscape_dir}/ holds no .wav files")
        wavs += [(os.path.join(soundscape_dir, m + ".wav"), 4) for m in mixtures]
        report.counts[soundscape_dir] = f"{len(mixtures)} wav"
    oracle_dir = os.path.join(test_dir, "oracle_target")
    if os.path.isdir(os.path.join(root, oracle_dir)):
        targets = _wav_files(os.path.join(root, oracle_dir), recursive=False)
        report.counts[oracle_dir] = f"{len(targets)} wav"
        wavs += [(os.path.join(oracle_dir, t), 1) for t in targets]
        per_mixture = {m: 0 for m in mixtures}
        for name in targets:
            stem = name[:-4]
            mixture, _, label = stem.rpartition("_")
            if int(year) == 2026:
                mixture, _, slot = mixture.rpartition("_")
                if not slot.isdigit():
                    report.add("test set", f"{os.path.join(oracle_dir, name)}: expected the "
                               "2026 name <mixture>_<slot>_<Label>.wav")
                    continue
            if label not in constants.CLASS_INDEX:
                report.add("test set", f"{os.path.join(oracle_dir, name)}: '{label}' is not one "
                           "of the 18 target classes")
            elif mixture not in per_mixture:
                report.add("test set", f"{os.path.join(oracle_dir, name)}: no soundscape "
                           f"{mixture}.wav for this oracle target")
            else:
                per_mixture[mixture] += 1
        for mixture, count in per_mixture.items():
            if count > constants.MAX_TARGETS:
                report.add("test set", f"{soundscape_dir}/{mixture}.wav has {count} oracle "
                           f"targets, at most {constants.MAX_TARGETS} expected")
            elif count == 0 and int(year) == 2025:  # 2026 allows mixtures without targets
                report.add("test set", f"{soundscape_dir}/{mixture}.wav has no oracle target")
    return wavs


def verify_dev_set(root, year=2025, check_audio=True, num_threads=8, progress=False):
    """Check a DCASE ``dev_set`` tree; returns a :class:`DevSetReport` (never raises for bad data).

    Args:
        root: the ``dev_set`` directory.
        year: 2025 or 2026 (where the test set lives, how oracle targets are named).
        check_audio: also read every wav header (rate, channels, length).
        num_threads: threads reading wav headers.
        progress: show a progress bar while reading headers.
    """
    if int(year) not in constants.YEARS:
        raise ValueError(f"year must be one of {constants.YEARS}, got {year}")
    root = os.path.abspath(str(root))
    report = DevSetReport(root=root, year=int(year))
    if not os.path.isdir(root):
        report.add("missing folder", f"{root} does not exist or is not a directory")
        return report

    wavs = _check_folders(report, root)
    _check_rooms(report, root)
    wavs += _check_test_set(report, root, year)
    _check_metadata(report, root, {os.path.basename(path) for path, _ in wavs})

    if check_audio and wavs:
        with concurrent.futures.ThreadPoolExecutor(max(1, int(num_threads))) as pool:
            results = pool.map(lambda item: _check_wav_header(root, *item), wavs, chunksize=64)
            if progress:
                from tqdm import tqdm
                results = tqdm(results, total=len(wavs), desc="wav headers", unit="file")
            for (path, _), message in zip(wavs, results):
                if message is not None:
                    top = os.path.join(*path.split(os.sep)[:2])
                    report.add(f"audio {top}", message)
    return report


def check_dev_set(root, year=2025, check_audio=True):
    """Verify a dev_set tree and raise :class:`DataLayoutError` with the report if it is unusable."""
    report = verify_dev_set(root, year, check_audio=check_audio)
    if not report.ok:
        raise DataLayoutError(report.format())
    return report
