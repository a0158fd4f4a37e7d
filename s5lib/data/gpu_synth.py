"""Batched mixture synthesis on the training device (GPU, or CPU as a fallback).

The CPU synthesizer (:class:`s5lib.data.synth.FoaSynthesizer`) spends nearly all its time in
the FFT convolutions of every event with a 4-channel room response (5.5 s long in the DCASE
rooms). Here the work is split in two:

* :func:`prepare_raw` runs in the DataLoader workers and does only the cheap part: it reads the
  mono source segments (:meth:`FoaSynthesizer.dry_source`, the CPU synthesizer's own rule), the
  room responses, the reference-window span, the background crop
  (:meth:`FoaSynthesizer.background_segment`, unscaled) and the level targets, and packs them into fixed-size arrays so the default collate
  function batches them;
* :func:`render_batch` runs on the device and does the convolutions (``torch.fft``), the level
  rule, the placement, the cut at 10 s and the sum, for the whole batch at once.

For the same metadata both paths give the same mixture, references and wet images up to float32
FFT rounding (well under 1e-5 of full scale; ``tests/test_gpu_synth.py`` checks it).

Design choices (all follow SPEC §3/§6 as implemented by the CPU synthesizer):

* **Only present events travel.** A raw item lists its ``T`` events (targets first, in metadata
  order, then interferers); :func:`collate_raw` concatenates the events of a batch into flat
  arrays and records the item each came from. Empty slots (on average a third of the 5 slots
  of a training mixture) cost neither transfer nor FFTs. Use ``collate_fn=collate_raw`` (also
  ``OnTheFlyRawMixtures.collate_fn``) in the DataLoader.
* **Placement before the convolution.** The worker writes each dry source at its onset into an
  ``N``-sample buffer (``raw_sources``), so the convolution output is already placed and only
  needs cutting at ``N``. One FFT length ``M >= N + L - 1`` (``L`` = longest room response of
  the bank; shorter ones are zero-padded) serves the whole batch, so nothing wraps around and the
  full convolution (tail included) lies inside the ``M`` samples: its mean power is its energy
  (Parseval's sum over the ``M``-point spectra, so channels that are not kept are never
  transformed back) divided by ``4 * (len(x) + len(h) - 1)``, as on the CPU. ``M`` is the next
  2-3-5-7-smooth length (fast for cuFFT and pocketfft). Samples outside
  ``[onset, onset + len(x) + len(h) - 1)`` are set to zero, as on the CPU. (The price: every
  FFT is ``N + L`` long, also for short events, which is why this path is slower than the CPU
  synthesizer when run on a CPU; it is meant for GPUs.)
* **References as a fifth filter channel.** The reference filter (channel-0 response kept on
  ``[peak - 192, peak + 1600)``, the exact rule of ``FoaSynthesizer._reference_window``) is
  built on the device from channel 0 and the span ``raw_ref_span`` that the worker found, so it
  costs no extra transfer; the same source spectrum is reused.
* **Levels.** ``raw_level_db`` holds ``ref_db + snr`` per event (the rule set's ``ref_db`` is
  applied in the worker), the power is accumulated in float64 and the gain cast to float32
  before the multiplication, like the CPU synthesizer. The background gain uses the float32 mean
  of squares of the crop, as on the CPU.
* **Slots and summation order.** Each event has a slot: 0..2 for the targets (slot k is target
  k of the item), 3.. for the interferers. The rendered events are scattered into a dense
  (B, E, 5, N) array (unique indices, so deterministic) and the mixture is the background plus
  the slots in order, which is the CPU order (background, targets, interferers); empty slots add
  exact zeros.

A raw item holds every non-audio field of a :mod:`s5lib.data.datasets` item (``label_index``,
``slot_onehot``, ``active``, ``onset``, ``position``, ...) plus the ``raw_*`` keys below;
:func:`synthesize_batch` turns a collated raw batch into a batch in the usual item format.

======================  ===============  ================================================
raw key (per item)      shape            meaning
======================  ===============  ================================================
raw_sources             (T, N) float32   peak-normalised mono source placed at its onset
raw_irs                 (T, 4, L)        room response of the event (zero-padded to L)
raw_ref_span            (T, 2) long      [first, end) of the reference window in raw_irs
raw_onset               (T,) long        onset sample
raw_full_length         (T,) long        len(x) + len(h) - 1
raw_level_db            (T,) float64     ref_db + snr of the event
raw_slot                (T,) long        slot of the event (targets 0..2, then interferers)
raw_slot_used           (E,) bool        which slots hold an event (its length gives E)
raw_background          (4, N) float32   background crop, tiled/repeated, not scaled
raw_background_db       () float64       ref_db + snr of the background
raw_background_present  () bool          the mixture has a background
======================  ===============  ================================================

:func:`collate_raw` concatenates the (T, ...) keys over the batch and adds ``raw_item`` (T,),
the batch row of each event; every other key is stacked as by ``default_collate``.

Limits (a clear :class:`~s5lib.data.synth.SynthesisError` otherwise; use the CPU synthesizer
for such metadata): at most one background event, at most ``E`` events, and every event must
end before the mixture end (``onset + frames <= N``; always true for drawn metadata).
"""
import math

import numpy as np
import torch
from torch.utils.data import default_collate

from s5lib import constants
from s5lib.data.datasets import K, OnTheFlyMixtures, frame_activity, pack_targets
from s5lib.data.synth import FoaSynthesizer, SynthesisError

EVENT_KEYS = ("raw_sources", "raw_irs", "raw_ref_span", "raw_onset", "raw_full_length",
              "raw_level_db", "raw_slot")
ITEM_RAW_KEYS = ("raw_slot_used", "raw_background", "raw_background_db", "raw_background_present")
RAW_KEYS = EVENT_KEYS + ITEM_RAW_KEYS + ("raw_item",)  # raw_item: added by collate_raw


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
def prepare_raw(synth: FoaSynthesizer, metadata, ir_length, n_events=None, n_activity_frames=0):
    """Everything :func:`render_batch` needs to render ``metadata``, as numpy arrays.

    Args:
        synth: the CPU synthesizer of the rule set (its bank and config are used, not its FFTs).
        metadata: a mixture description (DCASE per-mixture JSON format).
        ir_length: ``L``, the padded room-response length (:func:`bank_ir_length`).
        n_events: event slots ``E`` (default :func:`default_n_events`).
        n_activity_frames: also return the (18, F) ``activity`` map when > 0.
    Returns:
        dict of numpy arrays: the per-item ``raw_*`` keys of the module docstring plus the
        non-audio item fields of :func:`s5lib.data.datasets.pack_targets` (no ``references``).
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

    events = list(enumerate(fg)) + [(K + i, ev) for i, ev in enumerate(interferers)]
    n_present = len(events)
    raw = {
        "raw_sources": np.zeros((n_present, n), dtype=np.float32),
        "raw_irs": np.zeros((n_present, constants.N_FOA_CHANNELS, ir_length), dtype=np.float32),
        "raw_ref_span": np.zeros((n_present, 2), dtype=np.int64),
        "raw_onset": np.zeros(n_present, dtype=np.int64),
        "raw_full_length": np.zeros(n_present, dtype=np.int64),
        "raw_level_db": np.zeros(n_present, dtype=np.float64),
        "raw_slot": np.array([slot for slot, _ in events], dtype=np.int64),
        "raw_slot_used": np.zeros(n_events, dtype=bool),
    }
    onsets, offsets, positions = [], [], []
    for row, (slot, ev) in enumerate(events):
        x = synth.dry_source(ev)
        frames = int(ev["event_duration"] * sr)
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
        raw["raw_sources"][row, onset:onset + x.shape[0]] = x
        raw["raw_irs"][row, :, :ir.shape[1]] = ir
        raw["raw_onset"][row] = onset
        raw["raw_full_length"][row] = x.shape[0] + ir.shape[1] - 1
        raw["raw_level_db"][row] = cfg.ref_db + float(ev["snr"])
        raw["raw_slot_used"][slot] = True
        if slot < K:
            delay = None if delays is None else float(delays[idx])
            nonzero = np.flatnonzero(synth._reference_window(ir[0], delay))
            if nonzero.size:  # the window is ir[0] on [first, end) and 0 elsewhere
                raw["raw_ref_span"][row] = (nonzero[0], nonzero[-1] + 1)
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
        synth.background_power(bg_events[0], n)  # a silent segment is an error naming the file
        raw["raw_background"][:] = synth.background_segment(bg_events[0], n)
        raw["raw_background_db"] = np.float64(cfg.ref_db + float(bg_events[0].get("snr") or 0))

    labels = [ev["label"] for ev in fg]
    fields = pack_targets(labels, None, n, onsets=onsets, offsets=offsets, positions=positions,
                          with_audio=False)
    raw.update({key: value.numpy() for key, value in fields.items()})
    if n_activity_frames:
        raw["activity"] = frame_activity(onsets, offsets, labels, n, n_activity_frames)
    return raw


def raw_to_tensors(raw):
    """numpy arrays -> torch tensors (no copy)."""
    return {key: torch.from_numpy(np.asarray(value)) for key, value in raw.items()}


def _concatenate(tensors):
    """``torch.cat`` along dim 0; inside a DataLoader worker straight into shared memory (as
    ``default_collate`` does for stacked keys), which saves a copy when the batch is sent."""
    if torch.utils.data.get_worker_info() is None:
        return torch.cat(tensors)
    shape = (sum(t.shape[0] for t in tensors),) + tuple(tensors[0].shape[1:])
    numel = math.prod(shape)
    storage = tensors[0]._typed_storage()._new_shared(numel, device=tensors[0].device)
    out = tensors[0].new(storage).resize_(shape)
    return torch.cat(tensors, out=out)


def collate_raw(items):
    """Batch raw items: event keys are concatenated (plus ``raw_item``), the rest stacked.

    Also handles MixIT pairs (the same keys with a ``2`` suffix).
    """
    items = list(items)
    batch = {}
    for suffix in ("", "2"):
        if "raw_sources" + suffix not in items[0]:
            continue
        for key in EVENT_KEYS:
            batch[key + suffix] = _concatenate([item[key + suffix] for item in items])
        counts = torch.tensor([len(item["raw_slot" + suffix]) for item in items])
        batch["raw_item" + suffix] = torch.repeat_interleave(torch.arange(len(items)), counts)
    event_keys = set(batch)
    rest = [{key: value for key, value in item.items() if key not in event_keys} for item in items]
    batch.update(default_collate(rest))
    return batch


class OnTheFlyRawMixtures(OnTheFlyMixtures):
    """:class:`~s5lib.data.datasets.OnTheFlyMixtures` that leaves the rendering to the device.

    Same arguments, same metadata for the same (seed, epoch, index, stream), so a model trained
    with device synthesis sees the same mixtures as with CPU synthesis. Items hold the raw keys
    (see the module docstring); batch them with ``collate_fn=OnTheFlyRawMixtures.collate_fn``
    and pass the batches through :func:`synthesize_batch` on the device. ``return_wet`` is kept
    for the caller (``synthesize_batch(batch, with_wet=dataset.return_wet)``).
    """
    collate_fn = staticmethod(collate_raw)

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
        raise KeyError(f"raw batch lacks {', '.join(missing)} (build it with prepare_raw + collate_raw)")
    src, irs, bg = raw["raw_sources"], raw["raw_irs"], raw["raw_background"]
    if src.dim() != 2 or irs.dim() != 3 or irs.shape[0] != src.shape[0] \
            or irs.shape[1] != constants.N_FOA_CHANNELS or bg.dim() != 3 or bg.shape[2] != src.shape[1]:
        raise ValueError(f"raw batch: raw_sources must be (T, N), raw_irs (T, 4, L) and "
                         f"raw_background (B, 4, N), got {tuple(src.shape)}, {tuple(irs.shape)} "
                         f"and {tuple(bg.shape)} (was it batched with collate_raw?)")


def _gain(level_db, power, ok):
    """float32 gain bringing ``power`` to ``level_db`` (0 where not ``ok``), computed in float64."""
    target = torch.pow(10.0, level_db.double() / 10.0)
    gain = torch.sqrt(target / power.double().clamp_min(1e-300))
    return torch.where(ok, gain, torch.zeros_like(gain)).float()


def render_events(raw, with_references=True, channels=None):
    """Convolve, scale, place and cut every event of a collated batch.

    Returns (T, C + 1, N) float32: the wet image in the FOA ``channels`` (default all four, C =
    4) and the channel-0 reference of each event, placed at its onset and cut at N (zero outside
    ``[onset, onset + full length)``); (T, C, N) without the references. Only the returned rows
    are transformed back: the level rule's energy comes from the spectra (Parseval).
    """
    sources, irs = raw["raw_sources"], raw["raw_irs"]
    n = sources.shape[-1]
    ir_length = irs.shape[-1]
    device = sources.device
    fft_length = fast_fft_length(n + ir_length - 1)
    chans = list(range(constants.N_FOA_CHANNELS)) if channels is None else [int(c) for c in channels]

    source_spectrum = torch.fft.rfft(sources, n=fft_length)[:, None]
    spectrum = source_spectrum * torch.fft.rfft(irs, n=fft_length)  # (T, 4, M/2 + 1)

    # level rule: mean power of the 4-channel wet event over its full convolution length; the
    # M-point circular convolution holds the whole linear one, so its energy is Parseval's sum
    weights = torch.full((spectrum.shape[-1],), 2.0, dtype=torch.float64, device=device)
    weights[0] = 1.0
    if fft_length % 2 == 0:
        weights[-1] = 1.0
    magnitude = spectrum.real.double().square() + spectrum.imag.double().square()
    energy = torch.sum(magnitude.sum(dim=1) * weights, dim=-1) / fft_length
    del magnitude
    full_length = raw["raw_full_length"]
    power = energy / (constants.N_FOA_CHANNELS * full_length.clamp_min(1))
    gain = _gain(raw["raw_level_db"], power, power > 0)

    kept = spectrum if chans == list(range(constants.N_FOA_CHANNELS)) else spectrum[:, chans]
    if with_references:
        # the channel-0 response kept on the reference window, as a last filter row
        span = raw["raw_ref_span"]
        taps = torch.arange(ir_length, device=device)
        in_window = (taps >= span[:, :1]) & (taps < span[:, 1:])  # (T, L)
        reference = source_spectrum * torch.fft.rfft(irs[:, :1] * in_window[:, None], n=fft_length)
        kept = torch.cat([kept, reference], dim=1)
    del spectrum
    images = torch.fft.irfft(kept, n=fft_length)  # (T, C [+ 1], M): placed full convolutions
    del kept

    # cut at N, scale, and zero outside [onset, onset + full length)
    onset = raw["raw_onset"]
    t = torch.arange(n, device=device)
    support = (t >= onset[:, None]) & (t < (onset + full_length)[:, None])
    scale = support.float() * gain[:, None]  # (T, N): the gain inside the support, else 0
    return images[..., :n] * scale[:, None]  # one pass over the images


def render_batch(raw, with_wet=False, with_references=True, keep_channels=None):
    """Render a batch made by :func:`collate_raw` on the device its tensors live on.

    Args:
        raw: dict with the ``raw_*`` keys (all on one device).
        with_wet: also return the targets' wet images.
        with_references: return the references (False: a tagger's batch).
        keep_channels: keep only these mixture channels (e.g. ``[0]``).
    Returns:
        dict: ``mixture`` (B, 4, N), ``references`` (B, 3, N) and, with ``with_wet``,
        ``wet`` (B, 3, 4, N), all float32 (zeros in empty target slots).
    """
    if with_wet and not with_references:
        raise ValueError("wet images come with the references: with_references must be true")
    _check_raw(raw)
    background = raw["raw_background"].float()
    batch, channels, n = background.shape
    n_slots = raw["raw_slot_used"].shape[-1]

    # dense (B, E, 5, N) events; (item, slot) pairs are unique, so the scatter is deterministic
    chans = list(range(channels)) if keep_channels is None else [int(c) for c in keep_channels]
    if not chans or any(not 0 <= c < channels for c in chans) or len(set(chans)) != len(chans):
        raise ValueError(f"keep_channels must be distinct FOA channel indices, got {keep_channels}")
    kept = len(chans)
    dense = background.new_zeros(batch, n_slots, kept + int(with_references), n)
    if raw["raw_sources"].shape[0]:
        dense[raw["raw_item"], raw["raw_slot"]] = render_events(raw, with_references, chans)

    bg_power = torch.mean(background.square(), dim=(-2, -1))  # float32 over 4 channels, as on the CPU
    bg_gain = _gain(raw["raw_background_db"], bg_power, raw["raw_background_present"] & (bg_power > 0))
    mixture = background[:, chans] * bg_gain[:, None, None]
    for slot in range(n_slots):  # CPU order: background, targets, interferers
        mixture = mixture + dense[:, slot, :kept]

    out = {"mixture": mixture.contiguous()}
    if with_references:
        out["references"] = dense[:, :K, kept].contiguous()
    if with_wet:
        out["wet"] = dense[:, :K, :kept].contiguous()
    return out


def synthesize_batch(batch, with_wet=False, device=None, non_blocking=True, with_references=True,
                     keep_channels=None):
    """A raw batch (from :func:`collate_raw`) -> a batch in the :mod:`s5lib.data.datasets` format.

    Every tensor is moved to ``device`` (default: where ``raw_sources`` is); the ``raw_*``
    keys are replaced by ``mixture``, ``references`` (and ``wet``); MixIT pairs (keys ending
    in ``2``) are rendered the same way. ``with_references`` / ``keep_channels`` render only
    what the model reads (see :func:`render_batch`).
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
            rendered = render_batch({key: moved[key + suffix] for key in RAW_KEYS}, with_wet,
                                    with_references, keep_channels)
            out.update({key + suffix: value for key, value in rendered.items()})
    return out
