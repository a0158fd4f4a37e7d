"""Synthetic First-Order Ambisonics room impulse responses for shoebox rooms.

The early part of each response comes from an image-source model (Allen & Berkley): every
mirror image of the source up to a reflection order contributes a delayed, 1/r-attenuated
impulse (fractional delay by a short windowed sinc), weighted by the wall reflection coefficient
to the power of its number of reflections and encoded in FOA from its direction of arrival.
Beyond the distance up to which the image set is complete, a diffuse late tail takes over:
noise whose every sample arrives from a random direction, with an exponential envelope whose
level continues the image-source energy and decays by 60 dB in ``rt60`` seconds.

FOA channels are W, Y, Z, X (ACN order, SN3D normalisation). A plane wave from azimuth ``az``
and elevation ``el`` (x forward, y left, z up) has gains W = 1, Y = sin(az)cos(el), Z = sin(el),
X = cos(az)cos(el), i.e. W = 1 and (Y, Z, X) = the unit direction vector's (y, z, x).
"""
import math

import numpy as np

SPEED_OF_SOUND = 343.0  # m/s
# Sabine's constant 24 ln(10) / c (about 0.161 s/m): RT60 = K V / A.
_SABINE_K = 24.0 * math.log(10.0) / SPEED_OF_SOUND
_SINC_HALF_WIDTH = 12  # taps on each side of a fractional-delay kernel
_DIRECT_CUTOFF = 0.9  # kernel bandwidth (fraction of Nyquist) of the direct path
_CUTOFF_PER_REFLECTION = 0.92  # each wall reflection narrows the bandwidth (HF absorption)
_MIN_CUTOFF = 0.45
_DEFAULT_MAX_ORDER = 10
_CROSSFADE_S = 0.005  # image sources fade into the diffuse tail over this time
_MATCH_WINDOW_S = 0.02  # tail level is matched to the image-source energy over this window
_FADE_OUT_S = 0.005  # the last samples of every response fade to zero


def foa_gains(directions):
    """(K, 3) direction vectors (x, y, z; any length > 0) -> (K, 4) FOA gains W, Y, Z, X."""
    directions = np.asarray(directions, dtype=np.float64)
    unit = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    ones = np.ones(unit.shape[:-1] + (1,))
    return np.concatenate([ones, unit[..., 1:2], unit[..., 2:3], unit[..., 0:1]], axis=-1)


def foa_encode(azimuth, elevation):
    """FOA gains (W, Y, Z, X) of a plane wave from azimuth/elevation in radians."""
    return np.array([1.0, math.sin(azimuth) * math.cos(elevation), math.sin(elevation),
                     math.cos(azimuth) * math.cos(elevation)])


def wall_reflection_coefficient(room_dim, rt60):
    """Pressure reflection coefficient of uniform walls giving ``rt60`` by Eyring's formula.

    Eyring: RT60 = K V / (-S ln(1 - alpha)), so the energy reflection coefficient is
    1 - alpha = exp(-K V / (S RT60)) and the pressure coefficient is its square root.
    (For small alpha this is Sabine's formula RT60 = K V / (S alpha).)
    """
    lx, ly, lz = (float(v) for v in room_dim)
    volume = lx * ly * lz
    surface = 2.0 * (lx * ly + lx * lz + ly * lz)
    return math.exp(-_SABINE_K * volume / (2.0 * surface * float(rt60)))


def _axis_images(length, coordinate, max_order):
    """Image coordinates along one axis and their reflection counts (<= max_order)."""
    n = np.arange(-max_order, max_order + 1)
    # q = 0: x' = 2nL + x (|2n| reflections); q = 1: x' = 2nL - x (|2n - 1| reflections)
    coords = np.concatenate([2 * n * length + coordinate, 2 * n * length - coordinate])
    counts = np.concatenate([np.abs(2 * n), np.abs(2 * n - 1)])
    keep = counts <= max_order
    return coords[keep], counts[keep]


def image_sources(room_dim, source, max_order):
    """All image sources of ``source`` with at most ``max_order`` reflections.

    Returns (positions (K, 3), reflection counts (K,)); the source itself has count 0.
    """
    per_axis = [_axis_images(float(room_dim[a]), float(source[a]), max_order) for a in range(3)]
    (cx, nx), (cy, ny), (cz, nz) = per_axis
    order = nx[:, None, None] + ny[None, :, None] + nz[None, None, :]
    keep = order <= max_order
    ix, iy, iz = np.nonzero(keep)
    positions = np.stack([cx[ix], cy[iy], cz[iz]], axis=1)
    return positions, order[keep]


def _check_geometry(room_dim, source, mic):
    room_dim = np.asarray(room_dim, dtype=np.float64).reshape(3)
    source = np.asarray(source, dtype=np.float64).reshape(3)
    mic = np.asarray(mic, dtype=np.float64).reshape(3)
    if np.any(room_dim <= 0):
        raise ValueError(f"room dimensions must be positive, got {room_dim.tolist()}")
    for name, point in (("source", source), ("microphone", mic)):
        if np.any(point <= 0) or np.any(point >= room_dim):
            raise ValueError(f"{name} position {point.tolist()} is outside the room "
                             f"{room_dim.tolist()}")
    if np.linalg.norm(source - mic) < 1e-3:
        raise ValueError("source and microphone positions coincide")
    return room_dim, source, mic


def _render_impulses(delays, amplitudes, cutoffs, gains, length):
    """Sum band-limited fractional-delay impulses into a (4, length) buffer.

    delays (K,) in samples, amplitudes (K,), cutoffs (K,) as fractions of Nyquist, gains (K, 4).
    Each impulse is a Hann-windowed sinc of bandwidth ``cutoff`` centred on its delay.
    """
    out = np.zeros((4, length), dtype=np.float64)
    if delays.size == 0:
        return out
    offsets = np.arange(-_SINC_HALF_WIDTH + 1, _SINC_HALF_WIDTH + 1)
    base = np.floor(delays).astype(np.int64)
    taps = base[:, None] + offsets[None, :]  # (K, T)
    x = taps - delays[:, None]  # distance of each tap from the true delay
    window = 0.5 * (1.0 + np.cos(np.pi * x / (_SINC_HALF_WIDTH + 1)))
    kernel = cutoffs[:, None] * np.sinc(cutoffs[:, None] * x) * window
    kernel *= amplitudes[:, None]
    valid = (taps >= 0) & (taps < length)
    flat_taps = taps[valid]
    for channel in range(4):
        weights = (kernel * gains[:, channel:channel + 1])[valid]
        out[channel] += np.bincount(flat_taps, weights=weights, minlength=length)[:length]
    return out


def _diffuse_tail(rng, length, start, level, rt60, sample_rate):
    """(4, length) diffuse tail: each sample a plane wave from a random direction.

    ``level`` is the expected W energy per sample at time 0 of the exponential envelope
    exp(-13.8 t / rt60) (60 dB per rt60); samples before ``start`` are zero.
    """
    tail = np.zeros((4, length), dtype=np.float64)
    n_tail = length - start
    if n_tail <= 0:
        return tail
    t = np.arange(start, length) / sample_rate
    envelope = np.sqrt(level) * np.exp(-0.5 * math.log(1e6) * t / rt60)
    directions = rng.standard_normal((n_tail, 3))
    gains = foa_gains(directions)  # (n_tail, 4)
    # Slightly band-limit the noise like the late reflections (walls absorb high frequencies).
    offsets = np.arange(-_SINC_HALF_WIDTH, _SINC_HALF_WIDTH + 1)
    lowpass = _MIN_CUTOFF * np.sinc(_MIN_CUTOFF * offsets) * \
        0.5 * (1.0 + np.cos(np.pi * offsets / (_SINC_HALF_WIDTH + 1)))
    lowpass /= np.sqrt(np.sum(lowpass ** 2))
    amplitude = np.convolve(rng.standard_normal(n_tail), lowpass, mode="same")
    tail[:, start:] = (amplitude * envelope)[None, :] * gains.T
    return tail


def simulate_foa_rir(room_dim, source, mic, sample_rate=32000, rt60=0.4, max_order=None,
                     length=None, rng=None):
    """FOA room impulse response of a shoebox room.

    Args:
        room_dim: (3,) room size in metres (corner at the origin).
        source, mic: (3,) positions inside the room, metres.
        sample_rate: Hz.
        rt60: reverberation time in seconds (sets the wall reflection coefficient and the tail).
        max_order: image-source reflection order (default: what the length needs, at most 10).
        length: IR length in samples (default: rt60 seconds plus the direct-path delay).
        rng: np.random.Generator for the diffuse tail (default: a fixed seed).
    The last 5 ms fade to zero (half cosine) so a truncated response ends without a step.
    Returns:
        (ir (4, length) float32 in W, Y, Z, X order, direct_delay float in samples), with
        direct_delay = |source - mic| / c * sample_rate exactly.
    """
    room_dim, source, mic = _check_geometry(room_dim, source, mic)
    if rt60 <= 0:
        raise ValueError(f"rt60 must be positive, got {rt60}")
    rng = np.random.default_rng(0) if rng is None else rng
    distance = float(np.linalg.norm(source - mic))
    direct_delay = distance / SPEED_OF_SOUND * sample_rate
    if length is None:
        length = int(math.ceil(sample_rate * rt60 + direct_delay)) + _SINC_HALF_WIDTH
    length = int(length)
    if length <= direct_delay + _SINC_HALF_WIDTH:
        raise ValueError(f"IR length {length} samples is shorter than the direct path "
                         f"({direct_delay:.1f} samples)")
    max_distance = length / sample_rate * SPEED_OF_SOUND
    if max_order is None:
        max_order = int(min(_DEFAULT_MAX_ORDER, math.ceil(max_distance / room_dim.min()) + 1))
    beta = wall_reflection_coefficient(room_dim, rt60)

    # The image set of order <= N is complete up to the nearest image of order N + 1.
    next_positions, next_orders = image_sources(room_dim, source, max_order + 1)
    outer = next_orders == max_order + 1
    complete_distance = float(np.min(np.linalg.norm(next_positions[outer] - mic, axis=1)))
    inner = ~outer
    positions, orders = next_positions[inner], next_orders[inner]

    vectors = positions - mic
    distances = np.linalg.norm(vectors, axis=1)
    delays = distances / SPEED_OF_SOUND * sample_rate
    tail_start = int(min(length, math.floor(complete_distance / SPEED_OF_SOUND * sample_rate)))
    fade = max(1, int(round(_CROSSFADE_S * sample_rate)))
    # Image sources fade out over [tail_start, tail_start + fade] while the tail fades in.
    position_in_fade = np.clip((delays - tail_start) / fade, 0.0, 1.0)
    keep = position_in_fade < 1.0
    image_weight = np.cos(0.5 * np.pi * position_in_fade[keep])
    amplitudes = beta ** orders[keep] / distances[keep] * image_weight
    cutoffs = np.maximum(_MIN_CUTOFF, _DIRECT_CUTOFF * _CUTOFF_PER_REFLECTION ** orders[keep])
    ir = _render_impulses(delays[keep], amplitudes, cutoffs, foa_gains(vectors[keep]), length)

    if tail_start < length:
        window = max(1, int(round(_MATCH_WINDOW_S * sample_rate)))
        lo = max(int(math.ceil(direct_delay)) + _SINC_HALF_WIDTH, tail_start - window)
        decay_rate = math.log(1e6) / rt60  # energy envelope exp(-decay_rate t)
        if tail_start - lo >= window // 4:
            t = np.arange(lo, tail_start) / sample_rate
            level = float(np.mean(ir[0, lo:tail_start] ** 2) / np.mean(np.exp(-decay_rate * t)))
        else:  # too few samples to measure: the statistical energy density of a diffuse field
            volume = float(np.prod(room_dim))
            level = 4.0 * math.pi * SPEED_OF_SOUND / (volume * sample_rate) * _MIN_CUTOFF
        tail = _diffuse_tail(rng, length, tail_start, level, rt60, sample_rate)
        fade_in = np.ones(length)
        fade_in[:tail_start] = 0.0
        ramp = np.arange(fade) / fade
        end = min(length, tail_start + fade)
        fade_in[tail_start:end] = np.sin(0.5 * np.pi * ramp[:end - tail_start])
        ir += tail * fade_in[None, :]
    # A short half-cosine fade-out, so a response cut before it has decayed ends without a step.
    n_out = min(int(round(_FADE_OUT_S * sample_rate)), length - int(math.ceil(direct_delay)) - _SINC_HALF_WIDTH)
    if n_out > 1:
        ir[:, length - n_out:] *= 0.5 * (1 + np.cos(np.pi * np.arange(1, n_out + 1) / n_out))
    return ir.astype(np.float32), direct_delay


def direct_path_is_largest_peak(ir, direct_delay, tolerance=1.0):
    """True when argmax |W| lies within ``tolerance`` samples of the direct-path delay."""
    return abs(int(np.argmax(np.abs(ir[0]))) - direct_delay) <= tolerance


def make_room(rng, room_dim, n_positions, sample_rate, rt60, length,
              distances=(1.0, 1.5, 2.0, 2.5, 3.0), height_offsets=None, n_azimuths=16,
              wall_margin=0.5):
    """Simulate one room measured like the DCASE rooms: a fixed microphone, sources on rings.

    The microphone sits near the middle of the room at 1.2-1.6 m height. Candidate source
    positions lie on rings around it: 3-D distances ``distances`` (1-3 m), a few heights
    relative to the microphone (``height_offsets``, default three random values in
    [-0.7, 0.7] m including 0), ``n_azimuths`` azimuths per ring with a random rotation.
    Candidates closer than ``wall_margin`` to a wall, or whose W response would not peak at
    the direct path, are skipped; ``n_positions`` of the rest are chosen at random.

    Returns a dict with
        irs (M, 4, length) float32, positions (M, 3) float64 relative to the microphone,
        direct_delay (M,) float64 samples, room_dim (3,), listener_position (3,) = the
        microphone inside the room (corner at the origin), rt60, sample_rate.
    """
    room_dim = np.asarray(room_dim, dtype=np.float64).reshape(3)
    mic = np.array([room_dim[0] * rng.uniform(0.42, 0.58), room_dim[1] * rng.uniform(0.42, 0.58),
                    min(rng.uniform(1.2, 1.6), room_dim[2] - wall_margin - 0.1)])
    if height_offsets is None:
        height_offsets = np.concatenate([[0.0], rng.uniform(-0.7, -0.25, 1),
                                         rng.uniform(0.25, 0.7, 1)])
    candidates = []
    for distance in distances:
        rotation = rng.uniform(0, 2 * np.pi)
        for dz in height_offsets:
            if abs(dz) >= distance:
                continue
            radius = math.sqrt(distance ** 2 - dz ** 2)
            for k in range(n_azimuths):
                az = rotation + 2 * np.pi * k / n_azimuths
                candidates.append([radius * math.cos(az), radius * math.sin(az), dz])
    candidates = np.array(candidates)
    absolute = candidates + mic
    inside = np.all((absolute > wall_margin) & (absolute < room_dim - wall_margin), axis=1)
    candidates = candidates[inside]
    order = rng.permutation(len(candidates))
    irs, positions, delays = [], [], []
    for index in order:
        ir, delay = simulate_foa_rir(room_dim, mic + candidates[index], mic, sample_rate,
                                     rt60, length=length, rng=rng)
        if not direct_path_is_largest_peak(ir, delay):
            continue
        irs.append(ir)
        positions.append(candidates[index])
        delays.append(delay)
        if len(irs) == n_positions:
            break
    if len(irs) < n_positions:
        raise ValueError(f"room {room_dim.tolist()} m is too small for {n_positions} source "
                         f"positions at {min(distances)}-{max(distances)} m from the microphone "
                         f"(found {len(irs)})")
    positions = np.array(positions)
    # Store the positions ring by ring (distance, height, azimuth), like a measured trajectory.
    azimuth = np.arctan2(positions[:, 1], positions[:, 0])
    sort = np.lexsort((azimuth, np.round(positions[:, 2], 3),
                       np.round(np.linalg.norm(positions, axis=1), 3)))
    return dict(irs=np.stack(irs)[sort], positions=positions[sort],
                direct_delay=np.array(delays)[sort], room_dim=room_dim, listener_position=mic,
                rt60=float(rt60), sample_rate=int(sample_rate))
