"""First-Order Ambisonics mixture synthesis for S5 (SPEC §3 and §6), both rule sets.

Two steps, kept apart so that a mixture can always be rebuilt from its metadata:

* :meth:`FoaSynthesizer.sample_metadata` draws a mixture description (events, SNRs, onsets,
  source positions, room, background) from a ``numpy.random.Generator`` and returns it as a
  dict in the DCASE per-mixture JSON format (``config``, ``fg_events``, ``int_events``,
  ``bg_events``, ``room``);
* :meth:`FoaSynthesizer.render` turns such a dict into audio. It uses nothing but the dict
  and the sound bank, so replaying a saved metadata file rebuilds the mixture bit-exactly. It
  renders only what is asked for (``channels``, ``with_references``, ``with_wet``); what it
  renders equals the same part of the full render bit for bit.

Level and reference conventions (SPEC §6), per event:

1. the mono source segment (``int(source_time*sr)`` for ``int(event_duration*sr)`` frames,
   channel mean) is divided by its peak in float32;
2. it is convolved (full length) with the 4-channel room response at the event position;
3. the whole wet event is scaled so its mean power over 4 channels and the full convolution
   length is ``ref_db + snr`` dB (the RIR normaliser of the reference synthesizers is one scalar
   per RIR and cancels here, so it is not applied). The energy is computed without the wet
   signal, by Parseval: ``sum_c |x * h_c|^2 = 1/M sum_k |X_k|^2 sum_c |H_c,k|^2`` at an FFT
   length ``M`` that holds the whole linear convolution, with the responses' summed power
   spectrum cached per room position, so a render of fewer channels gets the same gain, bit
   for bit, without convolving the others;
4. the channel-0 reference ("oracle target") is the source convolved with the channel-0 RIR
   kept from 192 samples before to 1600 samples after its peak, with the same gain;
5. both are placed at ``int(event_time*sr)`` and cut at the mixture end.

How (SPEC §6 fixes the values, not the arithmetic): an event is transformed once, at an FFT
length of the ladder :func:`fft_length` that holds its whole convolution; the responses'
spectra at that length (and their Parseval weights, and the reference window's spectrum) are
cached per room position (:meth:`SoundBank.room_spectra`), so an event costs one forward FFT
and one inverse FFT per rendered row (each mixture channel, the reference).

The peak of step 4 is ``argmax`` of the signed RIR (2025), of ``|RIR|`` (2026), or the
direct-path delay known from the room geometry (``peak: geometry``) when the SOFA file
carries it (the embedded mini soundbank does; rounded to the nearest sample).
"""
import collections
import dataclasses
import math
import os
from typing import Optional

import h5py
import numpy as np
import scipy.fft
import scipy.signal

from s5lib import constants
from s5lib.audio import AudioError, audio_info, read_audio
from s5lib.metrics.doa import angular_error_deg

EVENT_KEYS = ("label", "source_file", "source_time", "event_time", "event_duration", "snr",
              "role", "pitch_shift", "time_stretch", "event_position")


class SynthesisError(ValueError):
    """A mixture cannot be drawn or rendered (the message says why and names the file)."""


@dataclasses.dataclass
class SynthConfig:
    """Every setting that changes a synthesized mixture.

    ``None`` fields take the value of the rule set of ``year`` (see :meth:`resolved`).
    """
    year: int = 2025
    sample_rate: int = constants.SAMPLE_RATE
    duration: float = float(constants.DURATION_S)
    ref_db: Optional[float] = None  # -50 (2025), -55 (2026)
    n_targets: Optional[tuple] = None  # inclusive range; (1, 3) for 2025, (0, 3) for 2026
    n_interferers: tuple = (1, 2)  # the training configs use 1-2; valid/test sets 0-2
    target_snr: tuple = (5.0, 20.0)
    interferer_snr: tuple = (0.0, 15.0)
    max_event_overlap: int = 3
    max_event_dur: float = 10.0
    dupse_rate: Optional[float] = None  # 2026 only (0.5); 0 disables same-class duplicates
    dup_min_angle_deg: float = 60.0
    direct_path_ms: tuple = (6.0, 50.0)
    peak: Optional[str] = None  # 'signed' (2025), 'abs' (2026) or 'geometry'
    noise_fill: Optional[str] = None  # 'repeat' (2025, numpy repeat semantics) or 'tile' (2026)
    max_sample_attempts: int = 200

    def resolved(self):
        cfg = dataclasses.replace(self)
        if cfg.year not in constants.YEARS:
            raise SynthesisError(f"year must be one of {constants.YEARS}, got {cfg.year}")
        is_2025 = cfg.year == 2025
        if cfg.ref_db is None:
            cfg.ref_db = constants.REF_DB[cfg.year]
        if cfg.n_targets is None:
            cfg.n_targets = (1, 3) if is_2025 else (0, 3)
        if cfg.dupse_rate is None:
            cfg.dupse_rate = 0.0 if is_2025 else 0.5
        if cfg.peak is None:
            cfg.peak = "signed" if is_2025 else "abs"
        if cfg.noise_fill is None:
            cfg.noise_fill = "repeat" if is_2025 else "tile"
        cfg.n_targets = tuple(int(v) for v in cfg.n_targets)
        cfg.n_interferers = tuple(int(v) for v in cfg.n_interferers)
        if cfg.peak not in ("signed", "abs", "geometry"):
            raise SynthesisError(f"peak must be signed, abs or geometry, got {cfg.peak!r}")
        if cfg.noise_fill not in ("repeat", "tile"):
            raise SynthesisError(f"noise_fill must be repeat or tile, got {cfg.noise_fill!r}")
        if not 0 <= cfg.n_targets[0] <= cfg.n_targets[1] <= constants.MAX_TARGETS:
            raise SynthesisError(f"n_targets must lie within 0..{constants.MAX_TARGETS}: {cfg.n_targets}")
        if is_2025 and cfg.n_targets[0] < 1:
            raise SynthesisError("the 2025 rules have 1-3 targets per mixture")
        return cfg

    @property
    def n_samples(self):
        return int(round(self.duration * self.sample_rate))

    def to_dict(self):
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Sound bank: what a dev_set split holds
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Clip:
    path: str  # relative to the bank root, '/'-separated
    label: Optional[str]
    group: str  # first-level sub-folder under the class folder (the file itself when flat)
    frames: int
    sample_rate: int


def _list_wavs(folder):
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(".wav"):
                out.append(os.path.join(dirpath, name))
    return out


class SoundBank:
    """Index of one split of a DCASE ``dev_set`` tree (targets, interferers, noise, rooms).

    Audio is read on demand (only the needed segment); ``cache_audio`` keeps whole clips in
    memory, which is what makes the small embedded bank fast to synthesize from. Room
    responses are read one position at a time from the SOFA files and kept in an LRU cache.
    """

    def __init__(self, root, split="train", cache_audio=False, ir_cache_size=512,
                 spectrum_cache_mb=None):
        self.root = os.path.abspath(root)
        self.split = split
        self.cache_audio = cache_audio
        self._audio_cache = {}
        self._ir_cache = collections.OrderedDict()
        self._ir_cache_size = ir_cache_size
        # room-response spectra at the mixtures' FFT length, LRU by size (room_spectra)
        self._spectrum_cache = collections.OrderedDict()
        self._spectrum_cache_used = 0
        self._spectrum_cache_limit = int(spectrum_cache_limit_mb(spectrum_cache_mb) * 2 ** 20)
        self._room_cache = {}
        self.targets = self._scan_classes(os.path.join("sound_event", split), require=constants.CLASSES)
        self.interferers = self._scan_classes(os.path.join("interference", split))
        noise_dir = os.path.join(self.root, "noise", split)
        self.noises = [self._clip(p, None, os.path.basename(p)) for p in _list_wavs(noise_dir)]
        room_dir = os.path.join(self.root, "room_ir", split)
        self.rooms = sorted(os.path.relpath(os.path.join(d, f), self.root).replace(os.sep, "/")
                            for d, _, fs in os.walk(room_dir) for f in fs if f.endswith(".sofa"))
        if not self.rooms:
            raise SynthesisError(f"{room_dir}: no .sofa room responses found")
        if not self.noises:
            raise SynthesisError(f"{noise_dir}: no background noise wav files found")

    def _clip(self, abspath, label, group):
        sr, _, frames = audio_info(abspath)
        rel = os.path.relpath(abspath, self.root).replace(os.sep, "/")
        return Clip(rel, label, group, frames, sr)

    def _scan_classes(self, rel_dir, require=()):
        base = os.path.join(self.root, rel_dir)
        if not os.path.isdir(base):
            raise SynthesisError(f"{base}: folder missing")
        classes = {}
        for name in sorted(os.listdir(base)):
            cdir = os.path.join(base, name)
            if not os.path.isdir(cdir):
                continue
            clips = []
            for path in _list_wavs(cdir):
                first = os.path.relpath(path, cdir).split(os.sep)[0]
                clips.append(self._clip(path, name, first))
            if clips:
                classes[name] = clips
        missing = [c for c in require if c not in classes]
        if missing:
            raise SynthesisError(f"{base}: no clips for class(es) {', '.join(missing)}")
        return classes

    # -- audio --------------------------------------------------------------------------------
    def resolve(self, source_file):
        """Find a metadata ``source_file`` (absolute, relative to the root, or to a sub-tree)."""
        if os.path.isabs(source_file) and os.path.isfile(source_file):
            return source_file
        parts = source_file.replace("\\", "/").split("/")
        for start in range(len(parts)):
            candidate = os.path.join(self.root, *parts[start:])
            if os.path.isfile(candidate):
                return candidate
        raise SynthesisError(f"{source_file}: audio file not found under {self.root}")

    def read_segment(self, source_file, start, frames, sample_rate):
        path = self.resolve(source_file)
        if self.cache_audio:
            data = self._audio_cache.get(path)
            if data is None:
                data = read_audio(path, sample_rate=sample_rate)
                self._audio_cache[path] = data
            seg = data[..., start:start + frames] if frames >= 0 else data[..., start:]
            return seg
        return read_audio(path, sample_rate=sample_rate, start=start, frames=frames)

    # -- rooms --------------------------------------------------------------------------------
    def room_positions(self, room):
        """(cartesian positions (M,3), raw SourcePosition (M,3), direct delays or None, sr)."""
        info = self._room_cache.get(room)
        if info is None:
            path = self.resolve(room)
            try:
                with h5py.File(path, "r") as f:
                    raw = np.asarray(f["SourcePosition"][()], dtype=np.float64)
                    ptype = f["SourcePosition"].attrs.get("Type", b"cartesian")
                    ptype = ptype.decode() if isinstance(ptype, bytes) else str(ptype)
                    n_pos = f["Data.IR"].shape[0]
                    n_rec = f["Data.IR"].shape[1]
                    sr = int(np.asarray(f["Data.SamplingRate"][()]).reshape(-1)[0])
                    delay = (np.asarray(f["DirectPathDelay"][()], dtype=np.float64)
                             if "DirectPathDelay" in f else None)
            except (OSError, KeyError) as err:
                raise SynthesisError(f"{path}: not a readable SOFA room response file ({err})") from None
            if n_rec != constants.N_FOA_CHANNELS:
                raise SynthesisError(f"{path}: has {n_rec} receivers, expected 4 (FOA)")
            if raw.shape[0] == 1 and n_pos > 1:
                raw = np.repeat(raw, n_pos, axis=0)
            if ptype.lower().startswith("spherical"):
                az, el, r = np.deg2rad(raw[:, 0]), np.deg2rad(raw[:, 1]), raw[:, 2]
                cart = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az),
                                 r * np.sin(el)], axis=1)
            else:
                # SourcePosition is already relative to the microphone in the DCASE rooms
                # (SpatialScaper's writer keeps the room position in ListenerPosition)
                cart = raw.copy()
            info = (cart, raw, delay, sr, path)
            self._room_cache[room] = info
        return info[:4]

    def _spectrum_cached(self, key, compute):
        entry = self._spectrum_cache.get(key)
        if entry is not None:
            self._spectrum_cache.move_to_end(key)
            return entry[0]
        value = compute()
        size = _nbytes(value)
        self._spectrum_cache[key] = (value, size)
        self._spectrum_cache_used += size
        while self._spectrum_cache_used > self._spectrum_cache_limit and len(self._spectrum_cache) > 1:
            _, (_, dropped) = self._spectrum_cache.popitem(last=False)
            self._spectrum_cache_used -= dropped
        return value

    def room_spectra(self, room, index, sample_rate, nfft):
        """The response at ``index`` of ``room`` at FFT length ``nfft``, cached.

        Returns ``(spectra, power)``: a tuple of 4 complex64 ``rfft`` rows (one freshly
        allocated 1-D array per channel: a channel's arithmetic must not depend on the memory
        layout of the others) and the Parseval weights of the level rule (float32),
        ``w_k / nfft * sum_c |H_c,k|^2`` (``w_k`` 2, or 1 at DC and Nyquist), so that the
        energy of the full 4-channel convolution with a source of spectrum ``X`` is
        ``sum_k |X_k|^2 power_k`` when ``nfft`` holds the whole convolution.
        """
        def compute():
            ir = self.room_ir(room, index, sample_rate)
            spectra = tuple(scipy.fft.rfft(np.array(ir[c]), nfft) for c in range(ir.shape[0]))
            power = np.zeros(nfft // 2 + 1, dtype=np.float64)
            for spec in spectra:
                power += np.square(spec.real, dtype=np.float64) + np.square(spec.imag, dtype=np.float64)
            power[1:(nfft + 1) // 2] *= 2.0  # the bins rfft leaves out (their conjugates)
            return spectra, (power / nfft).astype(np.float32)  # float32: 10 % less memory
        return self._spectrum_cached((room, int(index), int(nfft)), compute)

    def window_spectrum(self, room, index, sample_rate, nfft, start, stop):
        """complex64 ``rfft`` at ``nfft`` of channel 0 of the response at ``index`` kept on
        samples ``[start, stop)`` (zero elsewhere): the direct-path reference filter, cached."""
        def compute():
            ir0 = self.room_ir(room, index, sample_rate)[0]
            window = np.zeros(nfft, dtype=np.float32)
            window[start:stop] = ir0[start:stop]
            return scipy.fft.rfft(window)
        return self._spectrum_cached((room, int(index), int(nfft), int(start), int(stop)), compute)

    def room_ir(self, room, index, sample_rate):
        key = (room, int(index))
        ir = self._ir_cache.get(key)
        if ir is not None:
            self._ir_cache.move_to_end(key)
            return ir
        _, _, _, sr = self.room_positions(room)
        path = self._room_cache[room][4]
        with h5py.File(path, "r") as f:
            ir = np.asarray(f["Data.IR"][int(index)], dtype=np.float32)
        if not np.all(np.isfinite(ir)):
            raise SynthesisError(f"{path}: room response {index} contains NaN or infinite values")
        if sr != sample_rate:
            g = math.gcd(int(sr), int(sample_rate))
            ir = scipy.signal.resample_poly(ir, sample_rate // g, sr // g, axis=-1).astype(np.float32)
        self._ir_cache[key] = ir
        if len(self._ir_cache) > self._ir_cache_size:
            self._ir_cache.popitem(last=False)
        return ir


# --------------------------------------------------------------------------------------------
# Rendered mixture
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RenderedEvent:
    label: str
    role: str  # 'target' or 'interferer'
    wet: Optional[np.ndarray]  # (C, N) spatial image in the mixture (None: with_wet=False)
    reference: Optional[np.ndarray]  # (N,) channel-0 direct-path reference (targets only)
    onset: int  # first sample of the event in the mixture
    offset: int  # one past the last sample of the dry event (onset + event frames)
    position: np.ndarray  # (3,) cartesian, relative to the listener
    group: str  # first-level sub-folder of the source clip


@dataclasses.dataclass
class Mixture:
    mixture: np.ndarray  # (C, N) float32; C = len(channels), 4 for a full render
    targets: list  # RenderedEvent, in fg_events order
    interferers: list
    noise: np.ndarray  # (C, N)
    metadata: dict
    channels: tuple = tuple(range(constants.N_FOA_CHANNELS))  # the FOA channels of the rows

    @property
    def labels(self):
        return [t.label for t in self.targets]


def _channel_list(channels):
    """``channels`` (None: all four) as a tuple of FOA channel indices, checked."""
    if channels is None:
        return tuple(range(constants.N_FOA_CHANNELS))
    chans = tuple(int(c) for c in channels)
    if not chans or any(not 0 <= c < constants.N_FOA_CHANNELS for c in chans) \
            or len(set(chans)) != len(chans):
        raise SynthesisError(f"channels must be distinct FOA channel indices 0-3, got {list(channels)}")
    return chans


def doa_of(position):
    """(azimuth, elevation) in radians of a cartesian position relative to the listener."""
    x, y, z = (float(v) for v in position)
    return math.atan2(y, x), math.atan2(z, math.hypot(x, y))


angle_between = angular_error_deg  # degrees between two directions (s5lib.metrics.doa)


def mean_power_db(x):
    p = float(np.mean(np.square(x, dtype=np.float64)))
    return 10.0 * math.log10(p) if p > 0 else -math.inf


def background_power(segment):
    """Mean power of a background segment, float32 throughout (the gain rule of SPEC §6)."""
    return np.mean(np.square(segment, dtype=np.float32), dtype=np.float32)


def fft_length(n):
    """The FFT length an event of ``n`` convolution samples is rendered at: the next of
    ``2^k * (1, 5/4, 3/2, 7/4)`` (at most 25 % longer than ``n``, about as fast as the
    smoothest lengths), so that few lengths occur and the responses' spectra can be cached."""
    n = max(int(n), 1)
    k = max(n.bit_length() - 3, 0)
    while True:
        for factor in (4, 5, 6, 7):
            length = factor << k
            if length >= n:
                return length
        k += 1


def _nbytes(value):
    return sum(_nbytes(v) for v in value) if isinstance(value, tuple) else value.nbytes


SPECTRUM_CACHE_ENV = "S5_SPECTRUM_CACHE_MB"
DEFAULT_SPECTRUM_CACHE_MB = 1024


def spectrum_cache_limit_mb(value=None):
    """Size bound of a bank's room-spectrum cache in MiB: ``value``, else the environment
    variable ``S5_SPECTRUM_CACHE_MB``, else 1024 (the mini bank's 72 training positions take
    ~400-800 MiB at the lengths their events need; an event that misses the cache costs 4 more
    forward FFTs)."""
    if value is None:
        raw = os.environ.get(SPECTRUM_CACHE_ENV)
        if raw is None or raw.strip() == "":
            return float(DEFAULT_SPECTRUM_CACHE_MB)
        try:
            value = float(raw)
        except ValueError:
            raise SynthesisError(f"{SPECTRUM_CACHE_ENV}={raw!r} is not a number of MiB") from None
    value = float(value)
    if not value >= 0:
        raise SynthesisError(f"spectrum cache size must be >= 0 MiB, got {value}")
    return value


class FoaSynthesizer:
    """Draws and renders FOA mixtures from a :class:`SoundBank` (one split)."""

    def __init__(self, bank: SoundBank, config: SynthConfig = SynthConfig()):
        self.bank = bank
        self.cfg = config.resolved()
        self._background_powers = {}

    # ------------------------------------------------------------------------------ sampling
    def sample_metadata(self, rng: np.random.Generator, n_targets=None, n_interferers=None):
        """Draw one mixture description (DCASE per-mixture JSON format)."""
        cfg, bank = self.cfg, self.bank
        sr = cfg.sample_rate
        if n_targets is None:
            n_targets = int(rng.integers(cfg.n_targets[0], cfg.n_targets[1] + 1))
        if n_interferers is None:
            n_interferers = int(rng.integers(cfg.n_interferers[0], cfg.n_interferers[1] + 1))
        room = bank.rooms[int(rng.integers(len(bank.rooms)))]
        cart, raw, _, _ = bank.room_positions(room)
        labels = self._draw_target_labels(rng, n_targets)

        placed = []  # (onset_s, end_s) of events placed so far, for the overlap rule
        used_positions = set()
        fg_events, int_events = [], []
        chosen = []  # (label, group, position index) of targets
        for label in labels:
            same = [c for c in chosen if c[0] == label]
            clip = self._draw_clip(rng, bank.targets[label], exclude_groups={c[1] for c in same})
            pos_idx = self._draw_position(rng, cart, used_positions,
                                          avoid=[cart[c[2]] for c in same])
            used_positions.add(pos_idx)
            chosen.append((label, clip.group, pos_idx))
            event = self._draw_event(rng, clip, "foreground", cfg.target_snr, raw[pos_idx], placed)
            fg_events.append(event)
        int_classes = sorted(bank.interferers)
        for _ in range(n_interferers):
            if not int_classes:
                break
            label = int_classes[int(rng.integers(len(int_classes)))]
            clip = self._draw_clip(rng, bank.interferers[label])
            pos_idx = self._draw_position(rng, cart, used_positions, avoid=[])
            used_positions.add(pos_idx)
            role = "foreground" if cfg.year == 2025 else "interference"
            int_events.append(self._draw_event(rng, clip, role, cfg.interferer_snr, raw[pos_idx], placed))
        noise = bank.noises[int(rng.integers(len(bank.noises)))]
        noise_dur = noise.frames / noise.sample_rate
        source_time = math.floor(rng.uniform(0, noise_dur - cfg.duration)) if noise_dur > cfg.duration else 0
        bg = dict(label=None, source_file=noise.path, source_time=source_time, event_time=0,
                  event_duration=cfg.duration, snr=0, role="background", pitch_shift=None,
                  time_stretch=None, event_position=None)
        fg_events.sort(key=lambda e: e["event_time"])
        config = cfg.to_dict()
        config.update(split=bank.split, ref_channel=0, sr=sr,
                      spatialize_direct_path_time_ms=list(cfg.direct_path_ms))
        return {"config": config, "fg_events": fg_events, "int_events": int_events,
                "bg_events": [bg], "room": room}

    def _draw_target_labels(self, rng, n):
        cfg = self.cfg
        classes = list(constants.CLASSES)
        n_dup = 0
        if n >= 2 and cfg.dupse_rate > 0 and rng.random() < cfg.dupse_rate:
            n_dup = int(rng.integers(1, min(n - 1, 2) + 1))
        unique = [classes[i] for i in rng.choice(len(classes), size=n - n_dup, replace=False)]
        labels = list(unique)
        for _ in range(n_dup):
            # a duplicate needs another first-level sub-folder than every source of its class
            options = [c for c in unique
                       if len({cl.group for cl in self.bank.targets[c]}) > labels.count(c)]
            if not options:
                break
            labels.append(options[int(rng.integers(len(options)))])
        return labels

    def _draw_clip(self, rng, clips, exclude_groups=()):
        if exclude_groups:
            clips = [c for c in clips if c.group not in exclude_groups]
            if not clips:
                raise SynthesisError("no clip left in another sub-folder for a duplicate source")
        return clips[int(rng.integers(len(clips)))]

    def _draw_position(self, rng, cart, used, avoid):
        """A measured position, unused if possible, > dup_min_angle from every ``avoid``."""
        n = len(cart)
        ok = [i for i in range(n) if i not in used
              and all(angle_between(cart[i], a) > self.cfg.dup_min_angle_deg for a in avoid)]
        if not ok:
            ok = [i for i in range(n)
                  if all(angle_between(cart[i], a) > self.cfg.dup_min_angle_deg for a in avoid)]
        if not ok:
            raise SynthesisError(f"no room position is more than {self.cfg.dup_min_angle_deg} "
                                 "degrees away from the other sources of the class")
        return ok[int(rng.integers(len(ok)))]

    def _draw_event(self, rng, clip, role, snr_range, position, placed):
        cfg = self.cfg
        if clip.sample_rate != cfg.sample_rate:
            raise AudioError(os.path.join(self.bank.root, clip.path),
                             f"sample rate is {clip.sample_rate} Hz, expected {cfg.sample_rate} Hz")
        clip_dur = clip.frames / clip.sample_rate
        dur = min(clip_dur, cfg.max_event_dur, cfg.duration)
        for attempt in range(cfg.max_sample_attempts):
            if attempt and attempt % 20 == 0:
                dur *= 0.7  # cannot fit under the overlap limit: shorten the event
            onset = float(rng.uniform(0, cfg.duration - dur))
            if self._overlap_ok(placed, onset, onset + dur):
                break
        else:
            raise SynthesisError(f"could not place an event under the overlap limit "
                                 f"{cfg.max_event_overlap} after {cfg.max_sample_attempts} attempts")
        source_time = float(rng.uniform(0, clip_dur - dur)) if clip_dur > dur else 0.0
        placed.append((onset, onset + dur))
        lo, hi = snr_range
        return dict(label=clip.label, source_file=clip.path, source_time=source_time,
                    event_time=onset, event_duration=dur, snr=float(rng.uniform(lo, hi)),
                    role=role, pitch_shift=None, time_stretch=None,
                    event_position=[[float(v) for v in position]])

    def _overlap_ok(self, placed, start, end):
        # the number of active events only grows at an onset, so checking at the new event's
        # start and at every onset inside it is enough
        points = [start] + [s for s, _ in placed if start < s < end]
        for t in points:
            active = sum(1 for s, e in placed if s <= t < e)
            if active + 1 > self.cfg.max_event_overlap:
                return False
        return True

    # ----------------------------------------------------------------------------- rendering
    def render(self, metadata, with_wet=True, with_references=True, channels=None):
        """Rebuild the mixture described by ``metadata`` (float32, bit-exact on replay).

        Only what is asked for is rendered, and it equals the same part of the full render bit
        for bit: ``with_references=False`` skips the targets' direct-path references
        (``reference`` is then None; what a tagger needs); ``channels`` (e.g. ``[0]``) renders
        only these mixture channels (``mixture``, ``noise`` and the wet images then have
        ``len(channels)`` rows, in that order); ``with_wet=False`` keeps no wet image per event.
        """
        n = self.cfg.n_samples
        chans = _channel_list(channels)
        room = metadata["room"]
        cart, raw, delays, _ = self.bank.room_positions(room)
        noise = self._render_background(metadata.get("bg_events", []), n, chans)
        # an fg event of a non-target class is an interferer (older metadata kept them there)
        fg = [ev for ev in metadata["fg_events"] if ev["label"] in constants.CLASS_INDEX]
        other = [ev for ev in metadata["fg_events"] if ev["label"] not in constants.CLASS_INDEX]
        events = [(ev, "target") for ev in fg] + \
            [(ev, "interferer") for ev in other + list(metadata.get("int_events", []))]
        mixture = noise.copy()
        # each event is added to the mixture as it is rendered (background, targets,
        # interferers: the summation order of the reference synthesizers)
        rendered = [self._render_event(ev, room, cart, raw, delays, role, chans, mixture, with_wet,
                                       with_references and role == "target")
                    for ev, role in events]
        n_targets = len(fg)
        return Mixture(mixture=mixture, targets=rendered[:n_targets],
                       interferers=rendered[n_targets:], noise=noise, metadata=metadata,
                       channels=chans)

    def background_segment(self, ev, n, channels=None):
        """The unscaled (4, n) float32 background segment of the background event ``ev``
        (only the rows of ``channels`` when given).

        Rule (SPEC §6): a clip shorter than ``n`` is extended by ``noise_fill`` (``repeat``:
        numpy ``repeat`` of every sample, 2025; ``tile``: the clip over and over, 2026) and cut
        at ``n``; a longer one is cropped at ``int(source_time) * sr``. A clip without 4
        channels and a crop running past the clip end are errors naming the file.
        """
        cfg = self.cfg
        path = self.bank.resolve(ev["source_file"])
        data = self.bank.read_segment(ev["source_file"], 0, -1, cfg.sample_rate)
        if data.ndim != 2 or data.shape[0] != constants.N_FOA_CHANNELS:
            raise AudioError(path, f"background noise must have 4 channels, has "
                             f"{1 if data.ndim == 1 else data.shape[0]}")
        if channels is not None:
            data = data[list(channels)]
        length = data.shape[1]
        if length < n:
            if cfg.noise_fill == "repeat":
                data = np.repeat(data, int(math.ceil(n / length)), axis=1)
            else:
                data = np.tile(data, (1, int(math.ceil(n / length))))
            seg = data[:, :n]
        else:
            start = int(ev.get("source_time") or 0) * cfg.sample_rate
            seg = data[:, start:start + n]
            if seg.shape[1] < n:
                raise SynthesisError(f"{path}: background crop at {ev.get('source_time')} s "
                                     f"is shorter than {cfg.duration} s")
        return seg

    def background_power(self, ev, n):
        """float32 mean power over the 4 channels of the background segment of ``ev`` (the
        gain rule of SPEC §6), cached per clip and crop; a silent segment is an error naming
        the file."""
        key = (ev["source_file"], int(ev.get("source_time") or 0), int(n))
        power = self._background_powers.get(key)
        if power is None:
            power = background_power(self.background_segment(ev, n))
            if not power > 0:
                raise AudioError(self.bank.resolve(ev["source_file"]), "background noise is silent")
            if len(self._background_powers) >= 100_000:
                self._background_powers.clear()
            self._background_powers[key] = power
        return power

    def _render_background(self, bg_events, n, chans=None):
        cfg = self.cfg
        chans = _channel_list(chans)
        out = np.zeros((len(chans), n), dtype=np.float32)
        for ev in bg_events:
            power = self.background_power(ev, n)  # over all 4 channels, whatever is rendered
            gain = np.float32(math.sqrt(10 ** ((cfg.ref_db + float(ev.get("snr") or 0)) / 10) / power))
            out += self.background_segment(ev, n, chans) * gain
        return out

    def _position_index(self, room, cart, raw, position):
        pos = np.asarray(position, dtype=np.float64).reshape(-1, 3)[0]
        if self.cfg.year == 2025:  # nearest measured position (raw SourcePosition)
            return int(np.argmin(np.sum((raw - pos[None, :]) ** 2, axis=1)))
        match = np.flatnonzero(np.all(np.isclose(raw, pos[None, :], atol=1e-6, rtol=0), axis=1))
        if match.size == 0:
            raise SynthesisError(f"{room}: no measured position matches {pos.tolist()}")
        return int(match[0])

    def _reference_window(self, ir0, delay):
        """Channel 0 of a response kept on its direct-path window (zero elsewhere)."""
        lo, end = self._reference_span(ir0, delay)
        window = np.zeros_like(ir0)
        window[lo:end] = ir0[lo:end]
        return window

    def _reference_span(self, ir0, delay):
        """``[start, stop)`` of the direct-path window of channel 0 ``ir0`` (SPEC §6 step 4),
        clipped to the response."""
        cfg = self.cfg
        sr = cfg.sample_rate
        before = int(cfg.direct_path_ms[0] * sr / 1000)
        after = int(cfg.direct_path_ms[1] * sr / 1000)
        if cfg.peak == "geometry" and delay is not None:
            peak = int(round(delay))
        elif cfg.peak == "signed":
            peak = int(np.argmax(ir0))
        else:
            peak = int(np.argmax(np.abs(ir0)))
        end = peak + after + (1 if cfg.year == 2026 else 0)
        return max(peak - before, 0), min(end, ir0.shape[0])

    def dry_source(self, ev):
        """The mono, peak-normalised float32 source segment of event ``ev`` (SPEC §6 step 1).

        ``int(event_duration * sr)`` frames read from ``int(source_time * sr)`` (fewer when the
        clip ends earlier), averaged over channels, divided by its peak in float32. A silent
        segment is an error naming the file.
        """
        bank, sr = self.bank, self.cfg.sample_rate
        start = int(ev["source_time"] * sr)
        frames = int(ev["event_duration"] * sr)
        x = bank.read_segment(ev["source_file"], start, frames, sr)
        if x.ndim == 2:
            x = x.mean(axis=0, dtype=np.float32)
        x = np.asarray(x[:frames], dtype=np.float32)
        peak = np.max(np.abs(x)) if x.size else 0.0
        if not peak > 0:
            raise AudioError(bank.resolve(ev["source_file"]),
                             f"segment at {ev['source_time']:.3f} s for {ev['event_duration']:.3f} s is silent")
        return x / np.float32(peak)

    def event_gain(self, spec_x, n_source, ir_length, power_h, level_db):
        """The float gain that brings the full-length 4-channel wet event to ``level_db``.

        ``spec_x``: the ``rfft`` of the source (``n_source`` samples) at an FFT length holding
        its whole convolution with the response (``ir_length`` taps); ``power_h``: the
        response's Parseval weights at that length (:meth:`SoundBank.room_spectra`). None when
        the wet event is silent.
        """
        # float32 products, summed in float64: within 2e-8 of an all-float64 sum (below the
        # float32 gain's own rounding) at a third of the memory traffic
        weighted = np.square(spec_x.real)
        weighted += np.square(spec_x.imag)
        weighted *= power_h
        energy = float(np.sum(weighted, dtype=np.float64))
        full = n_source + ir_length - 1
        power = energy / (constants.N_FOA_CHANNELS * full)
        if not power > 0:
            return None
        return math.sqrt(10 ** (level_db / 10) / power)

    def _render_event(self, ev, room, cart, raw, delays, role, chans, mixture, with_wet,
                      with_reference):
        """Render one event into ``mixture`` (the rows of ``chans``); returns its RenderedEvent
        (wet image and reference only when asked for)."""
        cfg, bank = self.cfg, self.bank
        sr, n = cfg.sample_rate, cfg.n_samples
        x = self.dry_source(ev)
        frames = int(ev["event_duration"] * sr)
        idx = self._position_index(room, cart, raw, ev["event_position"])
        ir = bank.room_ir(room, idx, sr)
        ir_length = ir.shape[1]
        full = x.shape[0] + ir_length - 1
        nfft = fft_length(full)
        spectra, power_h = bank.room_spectra(room, idx, sr, nfft)
        spec = scipy.fft.rfft(x, nfft)
        gain = self.event_gain(spec, x.shape[0], ir_length, power_h, cfg.ref_db + float(ev["snr"]))
        if gain is None:
            raise SynthesisError(f"{room}: event {ev['source_file']} is silent after spatialisation")
        spec = np.multiply(spec, np.float32(gain), dtype=np.complex64)
        onset = int(ev["event_time"] * sr)
        stop = min(onset + full, n)
        wet_out = np.zeros((len(chans), n), dtype=np.float32) if with_wet else None
        if stop > onset:
            for row, channel in enumerate(chans):
                part = scipy.fft.irfft(np.multiply(spec, spectra[channel]), nfft)[:stop - onset]
                mixture[row, onset:stop] += part
                if wet_out is not None:
                    wet_out[row, onset:stop] = part
        reference = None
        if with_reference:
            delay = None if delays is None else float(delays[idx])
            start, end = self._reference_span(ir[0], delay)
            reference = np.zeros(n, dtype=np.float32)
            if stop > onset:
                window = bank.window_spectrum(room, idx, sr, nfft, start, end)
                reference[onset:stop] = scipy.fft.irfft(np.multiply(spec, window), nfft)[:stop - onset]
        return RenderedEvent(label=ev["label"], role=role,
                             wet=wet_out, reference=reference, onset=onset,
                             offset=min(onset + frames, n), position=cart[idx].copy(),
                             group=self._group_of(ev))

    def _group_of(self, ev):
        parts = ev["source_file"].replace("\\", "/").split("/")
        label = ev["label"]
        if label in parts:
            rest = parts[parts.index(label) + 1:]
            return rest[0] if rest else parts[-1]
        return parts[-1]

    def target_positions(self, metadata):
        """(label, cartesian position relative to the listener) of each target of a metadata
        dict, in the slot order of :meth:`render` (its ``fg_events`` of target classes), without
        rendering: the positions the DoA targets and the DoA error use."""
        room = metadata["room"]
        cart, raw, _, _ = self.bank.room_positions(room)
        return [(ev["label"], cart[self._position_index(room, cart, raw, ev["event_position"])].copy())
                for ev in metadata["fg_events"] if ev["label"] in constants.CLASS_INDEX]

    # ------------------------------------------------------------------------------- helpers
    def synthesize(self, rng, **kwargs):
        """Draw and render in one go; returns a :class:`Mixture`."""
        return self.render(self.sample_metadata(rng, **kwargs))


def synth_config_from_metadata(metadata, **overrides):
    """The :class:`SynthConfig` stored in a metadata dict (our own files carry all of it)."""
    cfg = dict(metadata.get("config", {}))
    if "year" not in cfg:
        cfg["year"] = 2026 if "int_events" in metadata and any(
            e.get("role") == "interference" for e in metadata["int_events"]) else 2025
    if "sr" in cfg and "sample_rate" not in cfg:
        cfg["sample_rate"] = cfg["sr"]
    cfg.update(overrides)
    return SynthConfig.from_dict(cfg)
