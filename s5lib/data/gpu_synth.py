"""Batched mixture synthesis on the training device (GPU, or CPU as a fallback).

The CPU synthesizer (:class:`s5lib.data.synth.FoaSynthesizer`) spends nearly all its time in
the FFT convolutions of every event with a 4-channel room response (5.5 s long in the DCASE
rooms). Here the work is split in two:

* :func:`prepare_raw` runs in the DataLoader workers and does only the cheap part: it reads the
  mono source segments (channel mean, peak-normalised exactly as the CPU synthesizer does), the
  room responses, the reference-window span, the background crop (tiled or repeated, not
  scaled) and the level targets, and packs them into fixed-size arrays so the default collate
  function batches them;
* :func:`render_batch` runs on the device and does the convolutions (``torch.fft``), the level
  rule, the placement, the cut at 10 s and the sum, for the whole batch at once.

For the same metadata both paths give the same mixture, references and wet images up to float32
FFT rounding (well under 1e-5 of full scale; ``tests/test_gpu_synth.py`` checks it).

Design choices (all follow SPEC §3/§6 as implemented by the CPU synthesizer):

* **Placement before the convolution.** The worker writes each dry source at its onset into an
  ``N``-sample buffer (``raw_sources``), so the convolution output is already placed and only
  needs cutting at ``N``. One FFT length ``M >= N + L - 1`` (``L`` = longest room response of
  the bank; shorter ones are zero-padded) serves the whole batch, so nothing wraps around and the
  full convolution (tail included) lies inside the ``M`` samples: its mean power is the sum of
  squares over ``M`` divided by ``4 * (len(x) + len(h) - 1)``, as on the CPU. ``M`` is the next
  2-3-5-7-smooth length (fast for cuFFT and pocketfft). Samples outside
  ``[onset, onset + len(x) + len(h) - 1)`` are set to exact zeros, as on the CPU.
* **References as a fifth filter channel.** The reference filter (channel-0 response kept on
  ``[peak - 192, peak + 1600)``, the exact rule of ``FoaSynthesizer._reference_window``) is
  built on the device from channel 0 and the span ``raw_ref_span`` that the worker found, so it
  costs no extra transfer; the same source spectrum is reused.
* **Levels.** ``raw_level_db`` holds ``ref_db + snr`` per event (the rule set's ``ref_db`` is
  applied in the worker), the power is accumulated in float64 and the gain cast to float32
  before the multiplication, like the CPU synthesizer. The background gain uses the float32 mean
  of squares of the crop, as on the CPU.
* **Slots.** Events occupy ``E = 3 + max interferers`` slots: slots 0..2 hold the targets in
  metadata order (slot k is target k of the item), the next slots the interferers. Empty slots
  have gain 0 and add exact zeros, so summing background, then the slots in order, reproduces
  the CPU order (background, targets, interferers).

A raw item holds every non-audio field of a :mod:`s5lib.data.datasets` item (``label_index``,
``slot_onehot``, ``active``, ``onset``, ``position``, ...) plus the ``raw_*`` keys below;
:func:`synthesize_batch` turns a collated raw batch into a batch in the usual item format.

=====================  ==============  =================================================
raw key                shape           meaning
=====================  ==============  =================================================
raw_sources            (E, N) float32  peak-normalised mono source placed at its onset
raw_irs                (E, 4, L)       room response of the event (zero-padded to L)
raw_ref_span           (E, 2) long     [first, end) of the reference window in raw_irs
raw_onset              (E,) long       onset sample
raw_full_length        (E,) long       len(x) + len(h) - 1 (0 in empty slots)
raw_level_db           (E,) float64    ref_db + snr of the event
raw_present            (E,) bool       slot holds an event
raw_background         (4, N) float32  background crop, tiled/repeated, not scaled
raw_background_db      () float64      ref_db + snr of the background
raw_background_present () bool         the mixture has a background
=====================  ==============  =================================================

Limits (a clear :class:`~s5lib.data.synth.SynthesisError` otherwise; use the CPU synthesizer
for such metadata): at most one background event, at most ``E`` events, and every event must
end before the mixture end (``onset + frames <= N``; always true for drawn metadata).
"""
import math

import numpy as np
import torch

from s5lib import constants
from s5lib.audio import AudioError
from s5lib.data.datasets import K, OnTheFlyMixtures, frame_activity, pack_targets
from s5lib.data.synth import FoaSynthesizer, SynthesisError

RAW_KEYS = ("raw_sources", "raw_irs", "raw_ref_span", "raw_onset", "raw_full_length",
            "raw_level_db", "raw_present", "raw_background", "raw_background_db",
            "raw_background_present")
N_FILTERS = constants.N_FOA_CHANNELS + 1  # 4 FOA channels + the reference filter


def fast_fft_length(n):
    """The smallest 2-3-5-7-smooth integer >= ``n`` (an efficient FFT size)."""
    n = int(n)
    if n <= 1:
        return 1
    best = 1 << (n - 1).bit_length()
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                # smallest power of two that brings p3 to at least n
                p2 = p3 if p3 >= n else p3 << ((n - 1) // p3).bit_length()
                best = min(best, p2)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def bank_ir_length(bank, sample_rate):
    """Length in samples of the longest room response of ``bank`` (one read per room)."""
    return max(bank.room_ir(room, 0, sample_rate).shape[1] for room in bank.rooms)


def default_n_events(synth: FoaSynthesizer):
    """Event slots per mixture: 3 targets plus the largest interferer count of the config."""
    return K + int(synth.cfg.n_interferers[1])


# --------------------------------------------------------------------------------------------
# Worker side: read and pack, no convolutions
# --------------------------------------------------------------------------------------------
def _dry_source(synth, ev):
    """Mono source segment of ``ev``, peak-normalised (same rule as ``_render_event``)."""
    bank, sr = synth.bank, synth.cfg.sample_rate
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
    return x / np.float32(peak), frames


def _background_crop(synth, ev, n):
    """The unscaled (4, n) background segment of ``ev`` (same rule as ``_render_background``)."""
    cfg, bank = synth.cfg, synth.bank
    path = bank.resolve(ev["source_file"])
    data = bank.read_segment(ev["source_file"], 0, -1, cfg.sample_rate)
    if data.ndim != 2 or data.shape[0] != constants.N_FOA_CHANNELS:
        raise AudioError(path, f"background noise must have 4 channels, has "
                         f"{1 if data.ndim == 1 else data.shape[0]}")
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
    if not np.any(seg):
        raise AudioError(path, "background noise is silent")
    return seg


def prepare_raw(synth: FoaSynthesizer, metadata, ir_length, n_events=None, n_activity_frames=0):
    """Everything :func:`render_batch` needs to render ``metadata``, as fixed-size numpy arrays.

    Args:
        synth: the CPU synthesizer of the rule set (its bank and config are used, not its FFTs).
        metadata: a mixture description (DCASE per-mixture JSON format).
        ir_length: ``L``, the padded room-response length (:func:`bank_ir_length`).
        n_events: event slots ``E`` (default :func:`default_n_events`).
        n_activity_frames: also return the (18, F) ``activity`` map when > 0.
    Returns:
        dict of numpy arrays: the ``raw_*`` keys of the module docstring plus the non-audio
        item fields of :func:`s5lib.data.datasets.pack_targets` (no ``references``).
    """
    cfg, bank = synth.cfg, synth.bank
    sr, n = cfg.sample_rate, cfg.n_samples
    n_events = default_n_events(synth) if n_events is None else int(n_events)
    room = metadata["room"]
    cart, raw_pos, delays, _ = bank.room_positions(room)

    fg = [ev for ev in metadata["fg_events"] if ev["label"] in constants.CLASS_INDEX]
    other = [ev for ev in metadata["fg_events"] if ev["label"] not in constants.CLASS_INDEX]
    interferers = other + list(metadata.get("int_events", []))
    if len(fg) > K:
        raise SynthesisError(f"{room}: metadata has {len(fg)} target events, at most {K} are supported")
    if K + len(interferers) > n_events:
        raise SynthesisError(f"{room}: metadata has {len(interferers)} interferers, device synthesis "
                             f"was set up for at most {n_events - K} (raise n_events)")

    raw = {
        "raw_sources": np.zeros((n_events, n), dtype=np.float32),
        "raw_irs": np.zeros((n_events, constants.N_FOA_CHANNELS, ir_length), dtype=np.float32),
        "raw_ref_span": np.zeros((n_events, 2), dtype=np.int64),
        "raw_onset": np.zeros(n_events, dtype=np.int64),
        "raw_full_length": np.zeros(n_events, dtype=np.int64),
        "raw_level_db": np.zeros(n_events, dtype=np.float64),
        "raw_present": np.zeros(n_events, dtype=bool),
    }
    slots = list(enumerate(fg)) + [(K + i, ev) for i, ev in enumerate(interferers)]
    onsets, offsets, positions = [], [], []
    for slot, ev in slots:
        x, frames = _dry_source(synth, ev)
        idx = synth._position_index(room, cart, raw_pos, ev["event_position"])
        ir = bank.room_ir(room, idx, sr)
        if ir.shape[1] > ir_length:
            raise SynthesisError(f"{room}: room response {idx} has {ir.shape[1]} samples, "
                                 f"longer than the {ir_length} set up for device synthesis")
        if not np.any(ir):
            raise SynthesisError(f"{room}: event {ev['source_file']} is silent after spatialisation")
        onset = int(ev["event_time"] * sr)
        if onset + x.shape[0] > n:
            raise SynthesisError(f"{ev['source_file']}: event at {ev['event_time']} s for "
                                 f"{ev['event_duration']} s ends after the mixture end; device "
                                 "synthesis needs events inside the mixture (use CPU synthesis)")
        raw["raw_sources"][slot, onset:onset + x.shape[0]] = x
        raw["raw_irs"][slot, :, :ir.shape[1]] = ir
        raw["raw_onset"][slot] = onset
        raw["raw_full_length"][slot] = x.shape[0] + ir.shape[1] - 1
        raw["raw_level_db"][slot] = cfg.ref_db + float(ev["snr"])
        raw["raw_present"][slot] = True
        if slot < K:
            delay = None if delays is None else float(delays[idx])
            nonzero = np.flatnonzero(synth._reference_window(ir[0], delay))
            if nonzero.size:  # the window is ir[0] on [first, end) and 0 elsewhere
                raw["raw_ref_span"][slot] = (nonzero[0], nonzero[-1] + 1)
            onsets.append(onset)
            offsets.append(min(onset + frames, n))
            positions.append(cart[idx])

    bg_events = list(metadata.get("bg_events", []))
    if len(bg_events) > 1:
        raise SynthesisError(f"{room}: metadata has {len(bg_events)} background events; device "
                             "synthesis supports at most one (use CPU synthesis)")
    raw["raw_background"] = np.zeros((constants.N_FOA_CHANNELS, n), dtype=np.float32)
    raw["raw_background_db"] = np.float64(0.0)
    raw["raw_background_present"] = np.bool_(bool(bg_events))
    if bg_events:
        raw["raw_background"][:] = _background_crop(synth, bg_events[0], n)
        raw["raw_background_db"] = np.float64(cfg.ref_db + float(bg_events[0].get("snr") or 0))

    labels = [ev["label"] for ev in fg]
    # pack_targets with 0-sample references gives the non-audio fields without allocating audio
    fields = pack_targets(labels, [np.zeros(0, dtype=np.float32)] * len(labels), 0,
                          onsets=onsets, offsets=offsets, positions=positions)
    del fields["references"]
    raw.update({key: value.numpy() for key, value in fields.items()})
    if n_activity_frames:
        raw["activity"] = frame_activity(onsets, offsets, labels, n, n_activity_frames)
    return raw


def raw_to_tensors(raw):
    """numpy arrays -> torch tensors (shared memory, no copy)."""
    return {key: torch.from_numpy(np.asarray(value)) for key, value in raw.items()}


class OnTheFlyRawMixtures(OnTheFlyMixtures):
    """:class:`~s5lib.data.datasets.OnTheFlyMixtures` that leaves the rendering to the device.

    Same arguments, same metadata for the same (seed, epoch, index, stream), so a model trained
    with device synthesis sees the same mixtures as with CPU synthesis. Items hold the raw keys
    (see the module docstring); pass collated batches through :func:`synthesize_batch` on the
    device. ``return_wet`` is remembered for :func:`synthesize_batch` callers
    (``with_wet=dataset.return_wet``); the wet images are rendered on the device.
    """

    def __init__(self, *args, n_events=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ir_length = bank_ir_length(self.bank, self.synth.cfg.sample_rate)
        self.n_events = default_n_events(self.synth) if n_events is None else int(n_events)

    def raw_item(self, index, stream=0):
        raw = prepare_raw(self.synth, self.metadata(index, stream), self.ir_length,
                          self.n_events, self.n_activity_frames)
        return raw_to_tensors(raw)

    def __getitem__(self, index):
        item = self.raw_item(index)
        item["index"] = torch.tensor(int(index))
        if self.mixit_pairs:
            for key, value in self.raw_item(index, stream=1).items():
                item[key + "2"] = value
        return item


# --------------------------------------------------------------------------------------------
# Device side: convolve, scale, place, sum
# --------------------------------------------------------------------------------------------
def _check_raw(raw):
    missing = [key for key in RAW_KEYS if key not in raw]
    if missing:
        raise KeyError(f"raw batch lacks {', '.join(missing)} (build it with prepare_raw)")
    src, irs = raw["raw_sources"], raw["raw_irs"]
    if src.dim() != 3 or irs.dim() != 4 or irs.shape[:2] != src.shape[:2] \
            or irs.shape[2] != constants.N_FOA_CHANNELS:
        raise ValueError(f"raw batch: raw_sources must be (B, E, N) and raw_irs (B, E, 4, L), "
                         f"got {tuple(src.shape)} and {tuple(irs.shape)}")


def render_batch(raw, with_wet=False):
    """Render a collated batch of raw items on the device the tensors live on.

    Args:
        raw: dict with the ``raw_*`` keys, batched (leading dimension B), on any device.
        with_wet: also return the targets' wet images.
    Returns:
        dict: ``mixture`` (B, 4, N), ``references`` (B, 3, N) and, with ``with_wet``,
        ``wet`` (B, 3, 4, N), all float32 (zeros in empty target slots).
    """
    _check_raw(raw)
    sources, irs = raw["raw_sources"].float(), raw["raw_irs"].float()
    batch, n_events, n = sources.shape
    ir_length = irs.shape[-1]
    device = sources.device
    fft_length = fast_fft_length(n + ir_length - 1)

    # filters: 4 FOA channels + the channel-0 response kept on the reference window
    span = raw["raw_ref_span"].to(device)
    taps = torch.arange(ir_length, device=device)
    in_window = (taps >= span[..., :1]) & (taps < span[..., 1:])  # (B, E, L)
    reference_filter = torch.where(in_window, irs[:, :, 0], torch.zeros((), device=device))
    filters = torch.cat([irs, reference_filter[:, :, None]], dim=2)  # (B, E, 5, L)

    spectrum = torch.fft.rfft(sources, n=fft_length)[:, :, None] * torch.fft.rfft(filters, n=fft_length)
    images = torch.fft.irfft(spectrum, n=fft_length)  # (B, E, 5, M): placed full convolutions
    del spectrum

    # level rule: mean power of the 4-channel wet event over its full convolution length
    present = raw["raw_present"].to(device)
    full_length = raw["raw_full_length"].to(device)
    energy = torch.sum(images[:, :, :constants.N_FOA_CHANNELS].square(), dim=(-2, -1),
                       dtype=torch.float64)
    power = energy / (constants.N_FOA_CHANNELS * full_length.clamp_min(1)).double()
    target_power = torch.pow(10.0, raw["raw_level_db"].to(device).double() / 10.0)
    ok = present & (power > 0)
    gain = torch.where(ok, torch.sqrt(target_power / power.clamp_min(1e-300)),
                       torch.zeros((), dtype=torch.float64, device=device)).float()

    # cut at N, scale, and keep exact zeros outside [onset, onset + full length)
    onset = raw["raw_onset"].to(device)
    t = torch.arange(n, device=device)
    support = (t >= onset[..., None]) & (t < (onset + full_length)[..., None]) & ok[..., None]
    placed = torch.where(support[:, :, None], images[..., :n] * gain[:, :, None, None],
                         torch.zeros((), device=device))  # (B, E, 5, N)
    del images

    background = raw["raw_background"].float()
    bg_power = torch.mean(background.square(), dim=(-2, -1)).double()
    bg_target = torch.pow(10.0, raw["raw_background_db"].to(device).double() / 10.0)
    bg_ok = raw["raw_background_present"].to(device) & (bg_power > 0)
    bg_gain = torch.where(bg_ok, torch.sqrt(bg_target / bg_power.clamp_min(1e-300)),
                          torch.zeros((), dtype=torch.float64, device=device)).float()
    mixture = background * bg_gain[:, None, None]
    for slot in range(n_events):  # CPU order: background, targets, interferers
        mixture = mixture + placed[:, slot, :constants.N_FOA_CHANNELS]

    out = {"mixture": mixture, "references": placed[:, :K, constants.N_FOA_CHANNELS].contiguous()}
    if with_wet:
        out["wet"] = placed[:, :K, :constants.N_FOA_CHANNELS].contiguous()
    return out


def synthesize_batch(batch, with_wet=False, device=None, non_blocking=True):
    """A collated raw batch -> a batch in the :mod:`s5lib.data.datasets` item format.

    Every tensor is moved to ``device`` (default: where ``raw_sources`` is); the ``raw_*``
    keys are replaced by ``mixture``, ``references`` (and ``wet``); MixIT pairs (keys ending
    in ``2``) are rendered the same way.
    """
    if "raw_sources" not in batch:
        raise KeyError("batch has no raw_sources: not a batch of OnTheFlyRawMixtures items")
    device = batch["raw_sources"].device if device is None else torch.device(device)
    moved = {key: value.to(device, non_blocking=non_blocking) if torch.is_tensor(value) else value
             for key, value in batch.items()}
    raw_keys = set(RAW_KEYS) | {key + "2" for key in RAW_KEYS}
    out = {key: value for key, value in moved.items() if key not in raw_keys}
    for suffix in ("", "2"):
        if "raw_sources" + suffix in moved:
            rendered = render_batch({key: moved[key + suffix] for key in RAW_KEYS}, with_wet)
            out.update({key + suffix: value for key, value in rendered.items()})
    return out
