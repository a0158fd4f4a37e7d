"""File names of references and estimates (SPEC §5), and the 2026 probability file.

Facts checked against the official baselines (nttcslab/dcase2025_task4_baseline and
nttcslab/dcase2026_task4_baseline, read for facts only):

* 2025 writes one estimate per non-silence output as ``<mix>_<Label>.wav``.
* 2026 writes ``<mix>_<slot>_<Label>.wav``. ``slot`` is the 0-based index of the model's
  output position (the n-th of its fixed number of output sources). Silent outputs are not
  written, so slots of one mixture may have gaps (``_0_`` and ``_2_`` without ``_1_``), and
  two estimates of the same class differ only by their slot.
* The official loader accepts both forms for both estimates and references (slot optional,
  regular expression ``^<mix>(?:_(\\d+))?_(.+)\\.wav$``) and asserts the label is one of the 18
  classes. It attributes files to a mixture by prefix (``startswith``); here a name is parsed
  against the full set of known mixture ids so that ids which are prefixes of each other
  (``mix_1`` / ``mix_10``) and ids containing underscores are handled exactly, and a name
  that fits two ways is reported as ambiguous instead of guessed.
* 2026 submissions carry ``eval_results.json`` beside the estimate folder ``eval_out/``::

      {"nparams": <int>,
       "probabilities": [{"soundscape": "<mix>",
                          "estimate": [{"filename": "<mix>_<slot>_<Label>.wav",
                                        "label": "<Label>", "probability": <float>}, ...]},
                         ...],
       "config": {...}}

  The official checks: file names in it are unique and equal the set of wav files written.
  (The dev-test evaluation writes ``dev_set_test_results.json`` with ``"CAPI-SDRi": {"mean"}``,
  ``"label_metrics": {"accuracy_mix", "accuracy_src"}`` and a ``details`` list of
  ``{soundscape, ref_labels, est_labels, probabilities, metrics}`` per mixture.)

Here the label ``silence`` is accepted in a name (and later dropped by the measures).
"""
import json
import os
import re
from dataclasses import dataclass
from typing import Optional

from s5lib.constants import CLASSES, SILENCE

VALID_LABELS = frozenset(CLASSES) | {SILENCE}
_SLOT_LABEL = re.compile(r"^(\d+)_(.+)$")


class NamingError(ValueError):
    """A file name that does not fit ``<mix>_<Label>.wav`` / ``<mix>_<slot>_<Label>.wav``."""

    def __init__(self, filename, problem):
        self.filename = filename
        self.problem = problem
        super().__init__(f"{filename}: {problem}")


@dataclass(frozen=True)
class SourceName:
    """A parsed source file name; ``slot`` is None for the 2025 scheme."""
    filename: str
    mixture: str
    label: str
    slot: Optional[int] = None


def source_filename(mixture, label, slot=None):
    """``<mix>_<Label>.wav`` (slot None, 2025) or ``<mix>_<slot>_<Label>.wav`` (2026)."""
    if slot is None:
        return f"{mixture}_{label}.wav"
    return f"{mixture}_{int(slot)}_{label}.wav"


def parse_source_filename(filename, mixture_ids, labels=VALID_LABELS):
    """Parse a source file name against the known mixture ids and labels.

    Args:
        filename: base name, e.g. ``soundscape_0001_2_Speech.wav``.
        mixture_ids: set of known mixture ids (the stems of ``soundscape/*.wav``).
        labels: accepted labels.
    Returns:
        :class:`SourceName`.
    Raises:
        NamingError saying what is wrong (not a wav, no known mixture, unknown label,
        ambiguous).
    """
    if not filename.endswith(".wav"):
        raise NamingError(filename, "not a .wav file")
    stem = filename[:-len(".wav")]
    parses, rests = [], []
    for pos, char in enumerate(stem):
        if char != "_" or stem[:pos] not in mixture_ids:
            continue
        mixture, rest = stem[:pos], stem[pos + 1:]
        rests.append(rest)
        if rest in labels:
            parses.append(SourceName(filename, mixture, rest, None))
        match = _SLOT_LABEL.match(rest)
        if match and match.group(2) in labels:
            parses.append(SourceName(filename, mixture, match.group(2), int(match.group(1))))
    if len(parses) == 1:
        return parses[0]
    if len(parses) > 1:
        readings = ", ".join(f"mixture {p.mixture!r} slot {p.slot} label {p.label!r}"
                             for p in parses)
        raise NamingError(filename, f"ambiguous name, fits {readings}")
    if not rests:
        raise NamingError(filename, "does not start with '<mix>_' for any mixture in "
                                    "soundscape/")
    label = _SLOT_LABEL.match(rests[-1]).group(2) if _SLOT_LABEL.match(rests[-1]) else rests[-1]
    raise NamingError(filename, f"unknown label {label!r} (expected <mix>_<Label>.wav or "
                                f"<mix>_<slot>_<Label>.wav with one of the 18 classes)")


def read_probabilities(path):
    """Read estimate probabilities: file name -> probability.

    Accepts the official ``eval_results.json`` layout (see the module docstring) or a plain
    JSON object ``{"<file name>": probability}``. Raises ValueError naming the file for a
    malformed file or a file name listed twice.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: probability file does not exist")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    pairs = []
    if isinstance(data, dict) and isinstance(data.get("probabilities"), list):
        for entry in data["probabilities"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("estimate"), list):
                raise ValueError(f"{path}: each item of 'probabilities' needs an 'estimate' list")
            for est in entry["estimate"]:
                if not isinstance(est, dict) or "filename" not in est or "probability" not in est:
                    raise ValueError(f"{path}: estimate entries need 'filename' and "
                                     f"'probability', got {est!r}")
                pairs.append((est["filename"], est["probability"]))
    elif isinstance(data, dict):
        pairs = list(data.items())
    else:
        raise ValueError(f"{path}: expected the eval_results.json layout or a "
                         f"{{file name: probability}} object")
    probs, duplicated = {}, []
    for name, prob in pairs:
        if isinstance(prob, bool) or not isinstance(prob, (int, float)):
            raise ValueError(f"{path}: probability of {name!r} is not a number ({prob!r})")
        if name in probs:
            duplicated.append(name)
        probs[name] = float(prob)
    if duplicated:
        raise ValueError(f"{path}: file name(s) listed more than once: {sorted(set(duplicated))}")
    return probs
