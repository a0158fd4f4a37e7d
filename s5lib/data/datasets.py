"""Torch datasets over synthesized and pre-mixed S5 data.

Every item is a dict of fixed-size tensors, so the default collate function batches them:

==================  ===============  =====================================================
key                 shape            meaning
==================  ===============  =====================================================
mixture             (4, N) float     FOA mixture, channels W, Y, Z, X
references          (K, N) float     channel-0 direct-path references, zeros in empty slots
label_index         (K,) long        class index per slot, 18 (= silence) in empty slots
label_vector        (18,) float      multi-hot (counts for 2026 duplicates clipped to 1)
slot_onehot         (K, 18) float    one-hot per slot (flattened: the 54-d ResUNetK query)
active              (K,) bool        slot holds a target
onset, offset       (K,) long        event start / end samples (-1 in empty slots)
position            (K, 3) float     source position relative to the listener (m); 0 if empty
doa                 (K, 3) float     unit direction vector; 0 if empty (KUBIG's target)
n_targets           () long
wet (optional)      (K, C, N)        spatial images of the targets (C rendered channels)
activity (optional) (18, F) float    per-frame class activity (strong labels for SED)
mixture2, ...       (optional)       a second, independent mixture (MixIT pairs)
==================  ===============  =====================================================

Slots follow the metadata order (targets sorted by onset). K is 3 (SPEC §1).

On-the-fly items are seeded by (seed, epoch, index) alone, so the data are the same whatever
the number of workers, processes or GPUs that draw them.
"""
import json
import os

import numpy as np
import torch

from s5lib import constants
from s5lib.audio import read_audio
from s5lib.metrics.naming import NamingError, parse_source_filename
from s5lib.data.synth import FoaSynthesizer, SoundBank, SynthConfig, synth_config_from_metadata

K = constants.MAX_TARGETS


def frame_activity(onsets, offsets, labels, n_samples, n_frames):
    """(18, n_frames) activity: 1 where an event of the class is active in the frame."""
    act = np.zeros((constants.N_CLASSES, n_frames), dtype=np.float32)
    hop = n_samples / n_frames
    for on, off, label in zip(onsets, offsets, labels):
        if label not in constants.CLASS_INDEX or on < 0:
            continue
        first = int(np.floor(on / hop))
        last = int(np.ceil(off / hop))
        act[constants.CLASS_INDEX[label], max(first, 0):min(last, n_frames)] = 1.0
    return act


def pack_targets(labels, references, n_samples, onsets=None, offsets=None, positions=None,
                 wets=None, n_activity_frames=0, with_audio=True):
    """Build the fixed-size target part of an item from per-target lists.

    ``with_audio=False`` leaves out ``references`` and ``wet`` (``references`` and ``wets`` are
    then ignored and may be ``None``): the non-audio fields only, as device synthesis needs.
    """
    if len(labels) > K:
        raise ValueError(f"{len(labels)} targets, at most {K} are supported")
    item = {"references": torch.zeros(K, n_samples)} if with_audio else {}
    item.update({
        "label_index": torch.full((K,), constants.SILENCE_INDEX, dtype=torch.long),
        "label_vector": torch.zeros(constants.N_CLASSES),
        "slot_onehot": torch.zeros(K, constants.N_CLASSES),
        "active": torch.zeros(K, dtype=torch.bool),
        "onset": torch.full((K,), -1, dtype=torch.long),
        "offset": torch.full((K,), -1, dtype=torch.long),
        "position": torch.zeros(K, 3),
        "doa": torch.zeros(K, 3),
        "n_targets": torch.tensor(len(labels), dtype=torch.long),
    })
    for k, label in enumerate(labels):
        c = constants.CLASS_INDEX[label]
        if with_audio:
            item["references"][k] = torch.from_numpy(np.asarray(references[k], dtype=np.float32))
        item["label_index"][k] = c
        item["label_vector"][c] = 1.0
        item["slot_onehot"][k, c] = 1.0
        item["active"][k] = True
        if onsets is not None:
            item["onset"][k] = int(onsets[k])
            item["offset"][k] = int(offsets[k])
        if positions is not None:
            p = torch.as_tensor(np.asarray(positions[k], dtype=np.float32))
            item["position"][k] = p
            item["doa"][k] = p / p.norm().clamp_min(1e-8)
    if with_audio and wets is not None:
        rows = wets[0].shape[0] if len(wets) else constants.N_FOA_CHANNELS
        wet = torch.zeros(K, rows, n_samples)
        for k, w in enumerate(wets):
            wet[k] = torch.from_numpy(w)
        item["wet"] = wet
    if n_activity_frames and onsets is not None:
        item["activity"] = torch.from_numpy(
            frame_activity(onsets, offsets, labels, n_samples, n_activity_frames))
    return item


def mixture_to_item(mix, return_wet=False, n_activity_frames=0, with_references=True,
                    channels=None):
    """Turn a rendered :class:`~s5lib.data.synth.Mixture` into an item dict.

    ``with_references=False``: no ``references`` (nor ``wet``) entry; ``channels``: only these
    mixture channels (e.g. ``[0]`` for a 1-channel tagger). What is kept is unchanged.
    """
    t = mix.targets
    if return_wet and not with_references:
        raise ValueError("wet images come with the references: with_references must be true")
    item = pack_targets(
        [e.label for e in t], [e.reference for e in t], mix.mixture.shape[1],
        onsets=[e.onset for e in t], offsets=[e.offset for e in t],
        positions=[e.position for e in t],
        wets=[e.wet for e in t] if return_wet else None, n_activity_frames=n_activity_frames,
        with_audio=with_references)
    mixture = mix.mixture
    if channels is not None and tuple(int(c) for c in channels) != tuple(mix.channels):
        rows = [list(mix.channels).index(int(c)) for c in channels if int(c) in mix.channels]
        if len(rows) != len(channels):
            raise ValueError(f"channels {list(channels)} were not rendered (the mixture has "
                             f"channels {list(mix.channels)})")
        mixture = mixture[rows]
    item["mixture"] = torch.from_numpy(np.ascontiguousarray(mixture))
    return item


class OnTheFlyMixtures(torch.utils.data.Dataset):
    """Fresh training mixtures drawn from a sound bank split; ``len`` is the epoch size.

    Item ``i`` of epoch ``e`` is drawn from ``np.random.default_rng([seed, e, i])``; call
    :meth:`set_epoch` (the trainer does) to move to the next epoch's mixtures.
    ``with_references=False`` and ``channels`` render only what a model reads (a tagger: no
    references, channel 0); the values kept equal those of the full render.
    """

    def __init__(self, bank_root, split="train", synth: SynthConfig = SynthConfig(),
                 epoch_size=1000, seed=0, return_wet=False, n_activity_frames=0,
                 mixit_pairs=False, cache_audio=True, with_references=True, channels=None):
        self.bank = SoundBank(bank_root, split, cache_audio=cache_audio)
        self.synth = FoaSynthesizer(self.bank, synth)
        self.epoch_size = int(epoch_size)
        self.seed = int(seed)
        self.epoch = 0
        self.return_wet = return_wet
        self.n_activity_frames = n_activity_frames
        self.mixit_pairs = mixit_pairs
        self.with_references = bool(with_references)
        self.channels = None if channels is None else [int(c) for c in channels]

    def __len__(self):
        return self.epoch_size

    def _item(self, metadata):
        mix = self.synth.render(metadata, with_wet=self.return_wet,
                                with_references=self.with_references, channels=self.channels)
        return mixture_to_item(mix, self.return_wet, self.n_activity_frames,
                               self.with_references, self.channels)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def metadata(self, index, stream=0):
        rng = np.random.default_rng([self.seed, self.epoch, int(index), stream])
        return self.synth.sample_metadata(rng)

    def __getitem__(self, index):
        item = self._item(self.metadata(index))
        item["index"] = torch.tensor(int(index))
        if self.mixit_pairs:
            for key, value in self._item(self.metadata(index, stream=1)).items():
                item[key + "2"] = value
        return item


def read_metadata_list(list_path):
    """Read a ``valid.json``: a list of {"metadata_path", "ref_event"}; paths made absolute."""
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"{list_path}: metadata list not found")
    with open(list_path) as f:
        try:
            entries = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{list_path}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{list_path}: expected a JSON list of metadata entries")
    base = os.path.dirname(os.path.abspath(list_path))
    out = []
    for i, e in enumerate(entries):
        if "metadata_path" not in e:
            raise ValueError(f"{list_path}: entry {i} has no metadata_path")
        p = e["metadata_path"]
        candidates = [p, os.path.join(base, p), os.path.join(os.path.dirname(base), p)]
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            raise FileNotFoundError(f"{list_path}: entry {i}: metadata file {p} not found")
        out.append(dict(e, metadata_path=os.path.abspath(found)))
    return out


class MetadataMixtures(torch.utils.data.Dataset):
    """Fixed mixtures replayed from metadata files (the validation set).

    ``bank_root`` is the dev_set root; ``split`` the sound bank split the metadata draws from.
    ``cache_mb`` > 0 keeps rendered items in memory, up to that many megabytes (the first
    items asked for; the rest are rendered every time): a validation run every few hundred
    updates then costs model time only. The items are fixed by their metadata files, so a cached
    item equals a fresh render.
    """

    def __init__(self, list_path, bank_root, split="valid", year=None, return_wet=False,
                 n_activity_frames=0, cache_audio=True, cache_mb=0):
        self.entries = read_metadata_list(list_path)
        self.bank = SoundBank(bank_root, split, cache_audio=cache_audio)
        self.year = year
        self.return_wet = return_wet
        self.n_activity_frames = n_activity_frames
        self._synths = {}
        self.cache_bytes = int(float(cache_mb) * 2 ** 20)
        self._cache, self._cached_bytes = {}, 0

    def __len__(self):
        return len(self.entries)

    def name(self, index):
        return os.path.splitext(os.path.basename(self.entries[index]["metadata_path"]))[0]

    def load_metadata(self, index):
        path = self.entries[index]["metadata_path"]
        with open(path) as f:
            return json.load(f)

    def __getitem__(self, index):
        index = int(index)
        if index in self._cache:
            return dict(self._cache[index])
        item = self._render(index)
        size = sum(v.numel() * v.element_size() for v in item.values())
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[index] = item
            self._cached_bytes += size
            return dict(item)
        return item

    def _render(self, index):
        meta = self.load_metadata(index)
        overrides = {"year": self.year} if self.year else {}
        cfg = synth_config_from_metadata(meta, **overrides)
        key = json.dumps(cfg.to_dict(), sort_keys=True)
        synth = self._synths.get(key)
        if synth is None:
            synth = self._synths[key] = FoaSynthesizer(self.bank, cfg)
        mix = synth.render(meta, with_wet=self.return_wet)
        item = mixture_to_item(mix, self.return_wet, self.n_activity_frames)
        item["index"] = torch.tensor(int(index))
        return item


class PremixedMixtures(torch.utils.data.Dataset):
    """Pre-mixed test set: ``soundscape/<mix>.wav`` plus ``oracle_target/`` references."""

    def __init__(self, test_dir, year=2025, with_references=True):
        self.test_dir = test_dir
        self.year = year
        sdir = os.path.join(test_dir, "soundscape")
        if not os.path.isdir(sdir):
            raise FileNotFoundError(f"{sdir}: soundscape folder not found")
        self.names = sorted(f[:-4] for f in os.listdir(sdir) if f.endswith(".wav"))
        if not self.names:
            raise FileNotFoundError(f"{sdir}: no wav files")
        self.refs = {n: [] for n in self.names}
        if with_references:
            rdir = os.path.join(test_dir, "oracle_target")
            if not os.path.isdir(rdir):
                raise FileNotFoundError(f"{rdir}: oracle_target folder not found")
            ids = set(self.names)
            for f in sorted(os.listdir(rdir)):
                if not f.endswith(".wav"):
                    continue
                try:
                    parsed = parse_source_filename(f, ids)
                except NamingError as err:
                    raise ValueError(f"{rdir}: {err}") from None
                slot = parsed.slot if parsed.slot is not None else len(self.refs[parsed.mixture])
                self.refs[parsed.mixture].append((slot, parsed.label, os.path.join(rdir, f)))
            for n in self.names:
                self.refs[n].sort()

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        sr = constants.SAMPLE_RATE
        mix = read_audio(os.path.join(self.test_dir, "soundscape", name + ".wav"),
                         sample_rate=sr, channels=constants.N_FOA_CHANNELS)
        refs = [(label, read_audio(path, sample_rate=sr, channels=1))
                for _, label, path in self.refs[name] if label != constants.SILENCE]
        for label, ref in refs:
            if ref.shape[0] != mix.shape[1]:
                raise ValueError(f"{name}: reference {label} has {ref.shape[0]} samples, "
                                 f"mixture has {mix.shape[1]}")
        item = pack_targets([r[0] for r in refs], [r[1] for r in refs], mix.shape[1])
        item["mixture"] = torch.from_numpy(mix)
        item["index"] = torch.tensor(int(index))
        return item
