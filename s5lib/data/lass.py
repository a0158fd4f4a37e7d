"""Data of language-queried audio source separation (LASS, DCASE 2024 Task 9) at 16 kHz, mono.

Clips and their captions
    :class:`CaptionedClip` (an audio file, its captions and, for the mini bank, its class).
    :func:`bank_clips` lists a split of the embedded mini soundbank (or a DCASE S5 dev_set): the
    target events of the 18 classes, captioned from templates (:mod:`s5lib.data.captions`).
    :func:`read_caption_files` reads the LASS training sets' caption files, paths the user gives:

    * FSD50K with the organisers' auto-captions: ``fsd50k_dev_auto_caption.json``, a JSON object
      ``{"data": [{"wav": "<file>.wav", "caption": "<text>"}, ...]}`` + the ``FSD50K.dev_audio``
      folder;
    * Clotho v2.1: ``clotho_captions_development.csv`` with columns ``file_name, caption_1 ..
      caption_5`` + the ``development`` audio folder;
    * AudioCaps: ``train.csv`` with columns ``audiocap_id, youtube_id, start_time, caption`` + a
      folder of the clips, found as ``<youtube_id>.wav``, ``Y<youtube_id>.wav`` or
      ``<audiocap_id>.wav`` (clips that are no longer on the web are missing in every copy:
      they are counted and skipped).

    A file name from a caption file must stay inside its audio folder (no ``..``, no absolute
    path).

Training mixtures (:class:`LASSMixtures`), the DCASE 2024 LASS baseline's rule (AudioSep's
    segment mixer with two sources): a segment of a target clip, a segment of another clip (of
    another class where classes are known) rescaled to the target's energy (ratio clamped to
    [0.02, 50]) and then by a whole number of dB drawn in [lower_db, higher_db] (−10..10),
    summed; when the mixture peaks above 1 both it and the target are scaled to peak 0.9. The
    query is one of the target's captions. Every item is a pure function of (seed, epoch, index).

Validation / test sets in the challenge's format (:func:`write_lass_set`, :func:`read_lass_set`):
    a CSV with header ``source,noise,snr,caption`` and an audio folder holding ``<source>.wav``
    and ``<noise>.wav``; the mixture is made at evaluation time (:func:`make_eval_mixture`): the
    noise scaled to the given SNR against the source (mean powers), summed, and source and
    mixture scaled to peak 0.9 when the mixture peaks above 1. The organisers'
    ``lass_synthetic_validation.csv`` + ``lass_validation/`` read as they are.
"""
import csv
import dataclasses
import json
import math
import os
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np
import scipy.signal
import soundfile as sf
import torch

from s5lib.audio import AudioError, write_audio
from s5lib.constants import CLASSES
from s5lib.data.captions import caption_for

LASS_SAMPLE_RATE = 16000
LASS_CSV_FIELDS = ("source", "noise", "snr", "caption")
PEAK_AFTER_DECLIP = 0.9


class LASSDataError(ValueError):
    """Bad LASS data: a missing file or folder, a malformed caption file, a path escaping."""


@dataclasses.dataclass(frozen=True)
class CaptionedClip:
    path: str                      # absolute path of the audio file
    captions: Tuple[str, ...]      # empty: captions come from the label's templates
    label: Optional[str] = None    # a class (mini bank) or None (caption-only data sets)


# ----------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------
def load_mono(path, sample_rate=LASS_SAMPLE_RATE):
    """A file as a float32 mono signal at ``sample_rate`` (channel mean, polyphase resampling)."""
    if not os.path.isfile(path):
        raise LASSDataError(f"{path}: audio file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"unreadable audio data ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "holds no samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(path, "contains NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float32)
    if rate != sample_rate:
        g = math.gcd(int(rate), int(sample_rate))
        mono = scipy.signal.resample_poly(mono, sample_rate // g, rate // g).astype(np.float32)
    return mono


def _inside(folder, name, source):
    """``folder/name``, refusing names that would leave ``folder``."""
    if not name or os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise LASSDataError(f"{source}: file name {name!r} leaves its audio folder {folder}")
    return os.path.join(folder, name)


# ----------------------------------------------------------------------------------------------
# Clips
# ----------------------------------------------------------------------------------------------
def bank_clips(bank_root, split="train", classes=CLASSES):
    """The target clips of one split of a soundbank (``sound_event/<split>/<Class>/**.wav``)."""
    base = os.path.join(bank_root, "sound_event", split)
    if not os.path.isdir(base):
        raise LASSDataError(f"{base}: folder missing (a soundbank split holds sound_event/<split>/)")
    clips = []
    for label in classes:
        folder = os.path.join(base, label)
        if not os.path.isdir(folder):
            raise LASSDataError(f"{folder}: no folder for class {label}")
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(".wav"):
                    clips.append(CaptionedClip(os.path.join(dirpath, name), (), label))
    if not clips:
        raise LASSDataError(f"{base}: no clips")
    return clips


def _read_fsd50k(json_path, audio_dir):
    with open(json_path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise LASSDataError(f"{json_path}: not valid JSON ({err})") from None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise LASSDataError(f"{json_path}: expected an object with a 'data' list of "
                            "{{'wav': ..., 'caption': ...}} entries")
    clips = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "wav" not in entry or "caption" not in entry:
            raise LASSDataError(f"{json_path}: entry {i} lacks 'wav' or 'caption'")
        clips.append((_inside(audio_dir, str(entry["wav"]), json_path), (str(entry["caption"]),)))
    return clips


def _csv_rows(path, required):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise LASSDataError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        return list(reader)


def _read_clotho(csv_path, audio_dir):
    rows = _csv_rows(csv_path, ("file_name", "caption_1"))
    clips = []
    for row in rows:
        captions = tuple(row[k].strip() for k in sorted(row) if k and k.startswith("caption_")
                         and row[k] and row[k].strip())
        clips.append((_inside(audio_dir, row["file_name"], csv_path), captions))
    return clips


def _read_audiocaps(csv_path, audio_dir):
    rows = _csv_rows(csv_path, ("audiocap_id", "youtube_id", "caption"))
    by_file = {}
    for row in rows:
        names = (f"{row['youtube_id']}.wav", f"Y{row['youtube_id']}.wav", f"{row['audiocap_id']}.wav")
        paths = [_inside(audio_dir, n, csv_path) for n in names]
        found = next((p for p in paths if os.path.isfile(p)), paths[0])
        by_file.setdefault(found, []).append(row["caption"].strip())
    return [(path, tuple(caps)) for path, caps in by_file.items()]


CAPTION_READERS = {"fsd50k": _read_fsd50k, "clotho": _read_clotho, "audiocaps": _read_audiocaps}


def read_caption_files(sources: Sequence[dict]):
    """Clips of the LASS training sets. ``sources``: a list of ``{"type": fsd50k | clotho |
    audiocaps, "captions": <caption file>, "audio_dir": <folder>}``. Returns (clips, report) with
    report ``{type: {"clips": n, "missing": m}}``; a set of which no audio file exists is an error."""
    clips, report = [], {}
    for i, source in enumerate(sources):
        kind = source.get("type")
        if kind not in CAPTION_READERS:
            raise LASSDataError(f"lass data source {i}: type must be one of {sorted(CAPTION_READERS)}, "
                                f"got {kind!r}")
        captions, audio_dir = source.get("captions", ""), source.get("audio_dir", "")
        if not os.path.isfile(captions):
            raise LASSDataError(f"lass data source {i} ({kind}): caption file {captions!r} not found")
        if not os.path.isdir(audio_dir):
            raise LASSDataError(f"lass data source {i} ({kind}): audio folder {audio_dir!r} not found")
        found = missing = 0
        for path, caps in CAPTION_READERS[kind](captions, audio_dir):
            if not caps:
                continue
            if os.path.isfile(path):
                clips.append(CaptionedClip(os.path.abspath(path), caps, None))
                found += 1
            else:
                missing += 1
        if found == 0:
            raise LASSDataError(f"lass data source {i} ({kind}): none of the {missing} files of "
                                f"{captions} is in {audio_dir}")
        report[f"{i}:{kind}"] = {"clips": found, "missing": missing}
    return clips, report


# ----------------------------------------------------------------------------------------------
# Mixing rules
# ----------------------------------------------------------------------------------------------
def energy_matched(noise, reference):
    """``noise`` scaled to the mean power of ``reference`` (amplitude ratio clamped [0.02, 50])."""
    ratio = math.sqrt(float(np.mean(noise.astype(np.float64) ** 2))
                      / max(float(np.mean(reference.astype(np.float64) ** 2)), 1e-10))
    ratio = min(max(ratio, 0.02), 50.0)
    return (noise / ratio).astype(np.float32)


def declip(target, mixture):
    """Scale both to peak 0.9 when the mixture peaks above 1 (both rules' last step)."""
    peak = float(np.max(np.abs(mixture))) if mixture.size else 0.0
    if peak > 1.0:
        scale = PEAK_AFTER_DECLIP / peak
        return (target * scale).astype(np.float32), (mixture * scale).astype(np.float32)
    return target, mixture


def make_train_mixture(target, noise, gain_db):
    """The training rule: (target, mixture) with ``noise`` at the target's energy + ``gain_db``."""
    noise = energy_matched(noise, target) * np.float32(10.0 ** (gain_db / 20.0))
    return declip(target.astype(np.float32), (target + noise).astype(np.float32))


def make_eval_mixture(source, noise, snr_db):
    """The challenge evaluator's rule: (source, mixture) with ``noise`` at ``snr_db`` below the
    source (mean powers), then the declipping step."""
    if source.shape != noise.shape:
        length = max(source.shape[-1], noise.shape[-1])
        source = np.pad(source, (0, length - source.shape[-1]))
        noise = np.pad(noise, (0, length - noise.shape[-1]))
    source_power = float(np.mean(source.astype(np.float64) ** 2))
    noise_power = float(np.mean(noise.astype(np.float64) ** 2))
    if noise_power <= 0:
        raise LASSDataError("the noise clip of a pair is silent: its SNR cannot be set")
    scale = math.sqrt(source_power / (10.0 ** (snr_db / 10.0)) / noise_power)
    source = source.astype(np.float32).copy()
    return declip(source, (source + noise * np.float32(scale)).astype(np.float32))


def _segment(signal, length, rng):
    """A random ``length``-sample window of ``signal``; a shorter signal is placed at a random
    offset in zeros."""
    if signal.shape[-1] >= length:
        start = int(rng.integers(signal.shape[-1] - length + 1))
        return signal[start:start + length]
    out = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(length - signal.shape[-1] + 1))
    out[start:start + signal.shape[-1]] = signal
    return out


class LASSMixtures(torch.utils.data.Dataset):
    """On-the-fly LASS training pairs: ``{"mixture": (1, T), "target": (T,), "caption": str}``.

    ``clips``: :class:`CaptionedClip` list; clips without captions are captioned from their label
    (``caption_set`` of :mod:`s5lib.data.captions`, ``train`` by default). The noise clip is of
    another class when both have one. ``cache_audio`` keeps the decoded clips in memory (the mini
    bank); real data sets read each clip when used.
    """

    def __init__(self, clips: List[CaptionedClip], segment_seconds=5.0, epoch_size=10000, seed=0,
                 lower_db=-10, higher_db=10, caption_set="train", sample_rate=LASS_SAMPLE_RATE,
                 cache_audio=True, min_target_rms=1e-4):
        if len(clips) < 2:
            raise LASSDataError(f"LASS training needs at least 2 clips, got {len(clips)}")
        for clip in clips:
            if not clip.captions and clip.label is None:
                raise LASSDataError(f"{clip.path}: neither captions nor a class to caption from")
        if int(lower_db) > int(higher_db):
            raise LASSDataError(f"lower_db {lower_db} is above higher_db {higher_db}")
        self.clips = list(clips)
        self.length = int(round(segment_seconds * sample_rate))
        self.epoch_size, self.seed = int(epoch_size), int(seed)
        self.lower_db, self.higher_db = int(lower_db), int(higher_db)
        self.caption_set, self.sample_rate = caption_set, int(sample_rate)
        self.cache_audio = cache_audio
        self.min_target_rms = float(min_target_rms)
        self._cache = {}
        self.epoch = 0
        labels = [c.label for c in self.clips]
        self._others = {}  # label -> indices of the clips of every other class
        if None not in labels and len(set(labels)) > 1:
            for label in set(labels):
                self._others[label] = [i for i, other in enumerate(labels) if other != label]

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return self.epoch_size

    def audio(self, index):
        clip = self.clips[index]
        data = self._cache.get(clip.path)
        if data is None:
            data = load_mono(clip.path, self.sample_rate)
            if self.cache_audio:
                self._cache[clip.path] = data
        return data

    def _noise_index(self, rng, target_index):
        others = self._others.get(self.clips[target_index].label)
        if others:
            return others[int(rng.integers(len(others)))]
        choice = int(rng.integers(len(self.clips) - 1))
        return choice + (choice >= target_index)

    def caption(self, index, rng, key):
        clip = self.clips[index]
        if clip.captions:
            return clip.captions[int(rng.integers(len(clip.captions)))]
        return caption_for(clip.label, self.seed, key, self.caption_set)

    def __getitem__(self, key):
        if isinstance(key, tuple):  # (epoch, index) from the trainer's persistent workers
            epoch, index = key
        else:
            epoch, index = self.epoch, key
        token = f"lass|{self.seed}|{epoch}|{index}".encode()
        rng = np.random.default_rng(zlib.crc32(token))
        for _ in range(8):  # a silent window of the target carries no query to learn from
            target_index = int(rng.integers(len(self.clips)))
            target = _segment(self.audio(target_index), self.length, rng)
            if np.sqrt(np.mean(target.astype(np.float64) ** 2)) >= self.min_target_rms:
                break
        noise = _segment(self.audio(self._noise_index(rng, target_index)), self.length, rng)
        gain_db = int(rng.integers(self.lower_db, self.higher_db + 1))
        target, mixture = make_train_mixture(target, noise, gain_db)
        return {"mixture": torch.from_numpy(mixture)[None], "target": torch.from_numpy(target),
                "caption": self.caption(target_index, rng, (epoch, index))}

    def mixit_item(self, key):
        """Two independent pairs of this set (items ``index`` and ``index + epoch_size``) as a
        MixIT example: ``mixture`` = their sum (scaled to peak 0.9 when above 1), ``mixture1`` /
        ``mixture2`` the two mixtures (scaled alike) and ``caption``, ``caption2`` their
        captions; no isolated source."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        first = self[(epoch, index)]
        second = self[(epoch, index + self.epoch_size)]
        mix1, mix2 = first["mixture"][0].numpy(), second["mixture"][0].numpy()
        peak = float(np.max(np.abs(mix1 + mix2)))
        scale = np.float32(PEAK_AFTER_DECLIP / peak if peak > 1.0 else 1.0)
        mix1, mix2 = mix1 * scale, mix2 * scale
        return {"mixture": torch.from_numpy(mix1 + mix2)[None],
                "mixture1": torch.from_numpy(mix1), "mixture2": torch.from_numpy(mix2),
                "caption": first["caption"], "caption2": second["caption"]}


class MixITPairs(torch.utils.data.Dataset):
    """A :class:`LASSMixtures` served as MixIT examples (:meth:`LASSMixtures.mixit_item`)."""

    def __init__(self, pairs: LASSMixtures):
        self.pairs = pairs

    def set_epoch(self, epoch):
        self.pairs.set_epoch(epoch)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, key):
        return self.pairs.mixit_item(key)


# ----------------------------------------------------------------------------------------------
# Validation / test sets in the challenge's format
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LASSPair:
    source: str
    noise: str
    snr: int
    caption: str


def read_lass_set(csv_path, audio_dir):
    """The pairs of a ``source,noise,snr,caption`` CSV whose audio lies in ``audio_dir``."""
    if not os.path.isfile(csv_path):
        raise LASSDataError(f"{csv_path}: LASS pair list not found")
    if not os.path.isdir(audio_dir):
        raise LASSDataError(f"{audio_dir}: LASS audio folder not found")
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:4]] != list(LASS_CSV_FIELDS):
            raise LASSDataError(f"{csv_path}: header must be {','.join(LASS_CSV_FIELDS)}, got {header}")
        pairs = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 4:
                raise LASSDataError(f"{csv_path}:{line}: expected 4 fields, got {row}")
            source, noise, snr, caption = row[0], row[1], row[2], ",".join(row[3:])
            try:
                snr = int(float(snr))
            except ValueError:
                raise LASSDataError(f"{csv_path}:{line}: snr {snr!r} is not a number") from None
            for name in (source, noise):
                path = _inside(audio_dir, f"{name}.wav", csv_path)
                if not os.path.isfile(path):
                    raise LASSDataError(f"{csv_path}:{line}: {path} not found")
            if not caption.strip():
                raise LASSDataError(f"{csv_path}:{line}: empty caption")
            pairs.append(LASSPair(source, noise, snr, caption))
    if not pairs:
        raise LASSDataError(f"{csv_path}: no pairs")
    return pairs


def write_lass_set(out_dir, clips: List[CaptionedClip], n_pairs, seed=0, clip_seconds=4.0,
                   snr_range=(-10, 10), caption_set="heldout", sample_rate=LASS_SAMPLE_RATE):
    """A LASS set from captioned or labelled clips: ``out_dir/pairs.csv`` + ``out_dir/audio/``.

    Each pair: a source clip and a noise clip of another class, both cut (from their start) or
    zero-padded to ``clip_seconds`` and written at 16 kHz, an integer SNR drawn in ``snr_range``
    and a caption of the source from ``caption_set`` (held-out templates by default). Pure
    function of the arguments. Returns the list of :class:`LASSPair`.
    """
    rng = np.random.default_rng(zlib.crc32(f"lass_set|{seed}".encode()))
    audio_dir = os.path.join(out_dir, "audio")
    os.makedirs(audio_dir, exist_ok=True)
    length = int(round(clip_seconds * sample_rate))
    written = {}

    def name_of(index):
        if index not in written:
            signal = load_mono(clips[index].path, sample_rate)[:length]
            signal = np.pad(signal, (0, length - signal.shape[0]))
            stem = os.path.splitext(os.path.basename(clips[index].path))[0]
            name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)
            if clips[index].label and not name.startswith(clips[index].label):
                name = f"{clips[index].label}_{name}"
            if name in written.values():  # two clips with one file name in different folders
                name = f"{name}_{index:05d}"
            write_audio(os.path.join(audio_dir, name + ".wav"), signal, sample_rate)
            written[index] = name
        return written[index]

    labels = [c.label for c in clips]
    pairs = []
    for p in range(int(n_pairs)):
        source = int(rng.integers(len(clips)))
        others = [i for i in range(len(clips)) if labels[i] != labels[source] or labels[i] is None]
        others = [i for i in others if i != source]
        noise = others[int(rng.integers(len(others)))]
        snr = int(rng.integers(snr_range[0], snr_range[1] + 1))
        clip = clips[source]
        if clip.captions:
            caption = clip.captions[int(rng.integers(len(clip.captions)))]
        else:
            caption = caption_for(clip.label, seed, ("set", p), caption_set)
        pairs.append(LASSPair(name_of(source), name_of(noise), snr, caption))
    with open(os.path.join(out_dir, "pairs.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(LASS_CSV_FIELDS)
        for pair in pairs:
            writer.writerow([pair.source, pair.noise, pair.snr, pair.caption])
    return pairs


def load_pair(pair: LASSPair, audio_dir, sample_rate=LASS_SAMPLE_RATE):
    """(source, mixture) float32 at ``sample_rate``, made by :func:`make_eval_mixture`."""
    source = load_mono(os.path.join(audio_dir, f"{pair.source}.wav"), sample_rate)
    noise = load_mono(os.path.join(audio_dir, f"{pair.noise}.wav"), sample_rate)
    return make_eval_mixture(source, noise, pair.snr)



LASS_SETS_DEFAULTS = {"valid_pairs": 100, "test_pairs": 200, "clip_seconds": 4.0,
                      "snr": [-10, 10], "caption_set": "heldout"}


def write_lass_sets(bank_root, out_dir, settings, seed=0, split="valid"):
    """The mini bank's LASS validation and test sets: the clips of one bank split, alternating
    per class between the two sets (no clip in both), written in the challenge's format under
    ``out_dir/{valid,test}``. ``settings``: :data:`LASS_SETS_DEFAULTS` overrides. Returns
    ``{"lass_valid": {...}, "lass_test": {...}}`` for ``dataset.json``."""
    values = dict(LASS_SETS_DEFAULTS)
    unknown = sorted(set(settings) - set(values))
    if unknown:
        raise LASSDataError(f"lass: unknown option(s) {unknown}; known: {sorted(values)}")
    values.update(settings)
    clips = bank_clips(bank_root, split)
    rank = {}
    halves = ([], [])
    for clip in clips:
        n = rank.get(clip.label, 0)
        rank[clip.label] = n + 1
        halves[n % 2].append(clip)
    entries = {}
    for name, part, n_pairs, offset in (("valid", halves[0], values["valid_pairs"], 0),
                                        ("test", halves[1], values["test_pairs"], 1)):
        folder = os.path.join(out_dir, name)
        pairs = write_lass_set(folder, part, int(n_pairs), seed=int(seed) * 2 + offset,
                               clip_seconds=float(values["clip_seconds"]),
                               snr_range=tuple(int(v) for v in values["snr"]),
                               caption_set=values["caption_set"])
        entries[f"lass_{name}"] = {"csv": os.path.join(folder, "pairs.csv"),
                                   "audio_dir": os.path.join(folder, "audio"),
                                   "pairs": len(pairs), "clips": len(part)}
    return entries
