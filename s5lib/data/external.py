"""External data merged into a ``dev_set`` bank (the DCASE rules allow FSD50K dev, EARS speech and
Semantic Hearing interferers; KUBIG adds FSD50K dev interferers and EARS speech, SPEC §7.4).

:func:`merge_external` builds a new bank tree of symbolic links (no audio is copied): every file
of the base tree at its own relative path, plus

* each extra sound-event folder, laid out ``<Class>/**.wav`` with the 18 class names, under
  ``sound_event/<split>/<Class>/<name>_<first sub-folder>/...`` (the first sub-folder is the
  clip's group: two same-class targets of a 2026 mixture come from different groups, so for EARS
  laid out ``Speech/p001/*.wav`` the group is the speaker);
* each extra interference folder, laid out ``<class>/**.wav`` (any class names; loose files at
  its top go to a class named after the folder), under ``interference/train/<class>/<name>_...``.

Speaker-level split (KUBIG's EARS rule): an extra sound-event file with a folder, or a file-name
prefix before its first ``_``, in ``valid_speakers`` (e.g. p090, p091, p094, p095, p097, p101, p102, p105, p107) goes to the
``valid`` split, every other one to ``train``, so no speaker is in both. The fixed validation and
test metadata of the base are replayed as they are (they name base files only).

Files must already be pre-processed as the organisers do (mono, 32 kHz; they also drop clips with
a peak below 0.02 or shorter than 0.1 s and trim leading/trailing zeros): every header is read and
each file that is not a 32 kHz mono wav is reported. FSD50K's eval split is not allowed by the
rules: a path component ``eval`` or ``FSD50K.eval_audio`` is an error.
"""
import os
import shutil

from s5lib import constants
from s5lib.audio import AudioError, audio_info

MARKER = ".s5_merged_bank"
EVAL_SPLIT_NAMES = ("eval", "fsd50k.eval_audio")
MAX_LISTED = 20


class ExternalDataError(ValueError):
    """Problems with the external folders; the message lists them all."""


def _wavs(folder):
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(".wav") and not name.startswith("."):
                yield os.path.relpath(os.path.join(current, name), folder)


def _safe_name(text):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".") or "extra"


def _check_header(path):
    try:
        rate, channels, frames = audio_info(path)
    except AudioError as err:
        return f"{path}: {err.problem}"
    wrong = []
    if rate != constants.SAMPLE_RATE:
        wrong.append(f"{rate} Hz (expected {constants.SAMPLE_RATE})")
    if channels != 1:
        wrong.append(f"{channels} channels (expected mono)")
    if frames == 0:
        wrong.append("no samples")
    return f"{path}: {', '.join(wrong)}" if wrong else None


def _link(target, link):
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.lexists(link):
        raise ExternalDataError(f"{link}: two files map to the same place in the merged bank")
    os.symlink(os.path.abspath(target), link)


def _plan_extra(folder, kind, valid_speakers, problems):
    """[(source path, split, class, relative destination under the class folder)]."""
    plan = []
    name = _safe_name(os.path.basename(os.path.normpath(folder)))
    if not os.path.isdir(folder):
        problems.append(f"{folder}: extra {kind} folder does not exist")
        return plan
    valid = {str(s) for s in valid_speakers}
    for rel in _wavs(folder):
        parts = rel.split(os.sep)
        if any(p.lower() in EVAL_SPLIT_NAMES for p in parts[:-1]):
            problems.append(f"{os.path.join(folder, rel)}: from an eval split (FSD50K's eval "
                            "audio is excluded by the challenge rules)")
            continue
        if kind == "sound_event":
            label = parts[0] if len(parts) > 1 else None
            if label not in constants.CLASS_INDEX:
                problems.append(f"{os.path.join(folder, rel)}: not under a folder named after one "
                                f"of the 18 classes (got {label!r}); lay it out <Class>/**.wav")
                continue
            inner = parts[1:]
            split = "valid" if any(p in valid for p in inner[:-1]) or (
                os.path.splitext(inner[-1])[0].split("_")[0] in valid) else "train"
        else:
            label, inner = (parts[0], parts[1:]) if len(parts) > 1 else (name, parts)
            split = "train"
        dest = [f"{name}_{inner[0]}"] + inner[1:]
        plan.append((os.path.join(folder, rel), split, label, os.path.join(*dest)))
    if not plan and not problems:
        problems.append(f"{folder}: no .wav files found")
    return plan


def merge_external(base_root, out_root, sound_event_dirs=(), interference_dirs=(),
                   valid_speakers=()):
    """Build ``out_root``: the bank ``base_root`` plus the extra folders, all as symbolic links.

    Returns a summary dict (counts per kind and split). Raises :class:`ExternalDataError` listing
    every problem (missing folder, wrong layout, wrong header, eval-split file) before anything is
    written; an existing ``out_root`` is replaced only when it is an earlier merged bank.
    """
    base_root, out_root = os.path.abspath(base_root), os.path.abspath(out_root)
    if out_root == base_root or out_root.startswith(base_root + os.sep):
        raise ExternalDataError(f"{out_root}: the merged bank cannot live inside {base_root}")
    problems, plan = [], []
    for kind, folders in (("sound_event", sound_event_dirs), ("interference", interference_dirs)):
        for folder in folders or ():
            plan += [(kind,) + item for item in _plan_extra(str(folder), kind, valid_speakers,
                                                             problems)]
    for kind, source, *_ in plan:
        message = _check_header(source)
        if message:
            problems.append(message)
    if problems:
        listed = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise ExternalDataError("external data: %d problem(s):\n  %s%s" % (
            len(problems), "\n  ".join(listed), more))
    if os.path.exists(out_root):
        if not os.path.isfile(os.path.join(out_root, MARKER)):
            raise ExternalDataError(f"{out_root}: exists and is not a merged bank made by this "
                                    "step; refusing to replace it")
        shutil.rmtree(out_root)  # links only: the files they point to stay
    os.makedirs(out_root)
    for entry in sorted(os.listdir(base_root)):
        if entry not in ("sound_event", "interference"):
            os.symlink(os.path.join(base_root, entry), os.path.join(out_root, entry))
    for kind in ("sound_event", "interference"):
        base = os.path.join(base_root, kind)
        for rel in _wavs(base):
            _link(os.path.join(base, rel), os.path.join(out_root, kind, rel))
    counts = {}
    for kind, source, split, label, dest in plan:
        _link(source, os.path.join(out_root, kind, split, label, dest))
        key = f"{kind}/{split}"
        counts[key] = counts.get(key, 0) + 1
    with open(os.path.join(out_root, MARKER), "w") as f:
        f.write(f"base: {base_root}\n")
    return {"root": out_root, "added": counts}
