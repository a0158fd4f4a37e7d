"""Procedural sound generators for the embedded mini soundbank (synthetic, no recorded data).

Every generator is ``fn(rng, sample_rate, duration, **options) -> np.ndarray`` (float32, mono,
``round(duration * sample_rate)`` samples, peak drawn in [0.5, 0.9]). All randomness comes from
``rng``, so a generator called with a generator seeded the same way returns the same samples.
Each of the 18 target classes has its own recognisable structure (tone bursts, inharmonic
ringing, motor harmonics, impacts, formant babble, ...) with per-clip random parameters.

``TARGET_GENERATORS`` maps the 18 target class names (``s5lib.constants.CLASSES``) to
generators, ``INTERFERENCE_GENERATORS`` maps non-target class names to generators, and
:func:`ambient_noise` makes 4-channel FOA background noise.

Speech, Cough and FootSteps take an optional ``identity`` (from :func:`draw_identity`): the
voice / person / walker that several clips of one sub-folder share.
"""
import math

import numpy as np
from scipy.signal import fftconvolve, lfilter

from s5lib.constants import CLASSES

# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _n_samples(sample_rate, duration):
    return max(1, int(round(sample_rate * duration)))


def _spectral_noise(rng, n, sample_rate, low=0.0, high=None, slope_db_per_octave=0.0):
    """White Gaussian noise shaped in the frequency domain: band [low, high] Hz with soft
    edges and a spectral slope (-3 dB/oct: pink, -6 dB/oct: brown). Unit RMS."""
    high = sample_rate / 2 if high is None else min(high, sample_rate / 2)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    f = np.maximum(freqs, 1.0)
    gain = (f / 1000.0) ** (slope_db_per_octave / (20.0 * math.log10(2.0)))
    edge = 0.15  # soft band edges, fraction of an octave-ish in linear scale
    if low > 0:
        gain *= 0.5 * (1 + np.tanh((freqs - low) / (edge * low + 1.0)))
    if high < sample_rate / 2:
        gain *= 0.5 * (1 - np.tanh((freqs - high) / (edge * high + 1.0)))
    out = np.fft.irfft(spectrum * gain, n)
    return out / (np.sqrt(np.mean(out ** 2)) + 1e-12)


def _resonator(x, sample_rate, frequency, bandwidth):
    """Two-pole band-pass resonance at ``frequency`` Hz with ``bandwidth`` Hz, unit peak gain."""
    frequency = min(frequency, 0.45 * sample_rate)
    radius = math.exp(-math.pi * bandwidth / sample_rate)
    theta = 2 * math.pi * frequency / sample_rate
    a = [1.0, -2.0 * radius * math.cos(theta), radius * radius]
    b = [(1.0 - radius * radius) / 2.0, 0.0, -(1.0 - radius * radius) / 2.0]
    return lfilter(b, a, x)


def _one_pole_lowpass(x, sample_rate, cutoff):
    coefficient = math.exp(-2 * math.pi * cutoff / sample_rate)
    return lfilter([1.0 - coefficient], [1.0, -coefficient], x)


def _smooth_curve(rng, n, sample_rate, rate_hz, low=-1.0, high=1.0):
    """A slowly varying random curve in [low, high] with about ``rate_hz`` changes per second."""
    n_points = max(2, int(math.ceil(n / sample_rate * rate_hz)) + 2)
    points = rng.uniform(low, high, n_points)
    knots = np.linspace(0, n, n_points)
    curve = np.interp(np.arange(n), knots, points)
    return curve


def _decay(n, sample_rate, tau, attack=0.001):
    t = np.arange(n) / sample_rate
    env = np.exp(-t / tau)
    n_attack = max(1, int(attack * sample_rate))
    env[:n_attack] *= np.linspace(0.0, 1.0, n_attack, endpoint=False) if n_attack > 1 else 1.0
    return env


def _attack_release(n, sample_rate, attack, release):
    env = np.ones(n)
    n_attack = min(n, max(1, int(attack * sample_rate)))
    n_release = min(n - n_attack, max(1, int(release * sample_rate)))
    env[:n_attack] = np.linspace(0, 1, n_attack, endpoint=False)
    if n_release > 0:
        env[n - n_release:] = np.linspace(1, 0, n_release)
    return env


def _add(out, start, signal):
    """Add ``signal`` into ``out`` from sample ``start`` (clipped to the buffer)."""
    start = int(start)
    if start >= len(out) or start + len(signal) <= 0:
        return
    s0 = max(0, -start)
    stop = min(len(out), start + len(signal))
    out[start + s0:stop] += signal[s0:s0 + stop - start - s0]


def _harmonic_tone(frequency, sample_rate, amplitudes, phase_rng=None):
    """Sum of harmonics k*f(t) with the given amplitudes; ``frequency`` is a per-sample array.

    Harmonics above 0.45 * sample_rate (at the curve's maximum) are left out.
    """
    phase = 2 * np.pi * np.cumsum(frequency) / sample_rate
    out = np.zeros_like(phase)
    top = float(np.max(frequency))
    for k, amplitude in enumerate(amplitudes, start=1):
        if k * top >= 0.45 * sample_rate or amplitude == 0:
            break
        offset = 0.0 if phase_rng is None else phase_rng.uniform(0, 2 * np.pi)
        out += amplitude * np.sin(k * phase + offset)
    return out


def _modes(rng, n, sample_rate, frequencies, taus, amplitudes):
    """Damped sinusoids (modal ringing) with random phases, summed, length n."""
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    for f, tau, a in zip(frequencies, taus, amplitudes):
        if f >= 0.45 * sample_rate:
            continue
        m = min(n, int(7 * tau * sample_rate) + 1)
        out[:m] += a * np.exp(-t[:m] / tau) * np.sin(2 * np.pi * f * t[:m] + rng.uniform(0, 2 * np.pi))
    return out


def _event_times(rng, duration, mean_interval, jitter=0.2, first_max=0.15, min_interval=None):
    """Onset times (s) of a roughly periodic event train filling ``duration``."""
    times = [rng.uniform(0.0, min(first_max, 0.3 * duration))]
    min_interval = 0.3 * mean_interval if min_interval is None else min_interval
    while True:
        step = max(min_interval, mean_interval * (1 + jitter * rng.standard_normal()))
        nxt = times[-1] + step
        if nxt >= duration:
            break
        times.append(nxt)
    return times


def _finish(x, rng, sample_rate, fade=0.004):
    """Remove DC, fade the edges, add a very low noise floor and set the peak in [0.5, 0.9]."""
    x = np.asarray(x, dtype=np.float64)
    x = x - np.mean(x)
    n_fade = min(len(x) // 2, int(fade * sample_rate))
    if n_fade > 1:
        ramp = np.linspace(0.0, 1.0, n_fade)
        x[:n_fade] *= ramp
        x[-n_fade:] *= ramp[::-1]
    peak = np.max(np.abs(x))
    if not np.isfinite(peak) or peak < 1e-9:
        x = rng.standard_normal(len(x)) * 1e-3
        peak = np.max(np.abs(x))
    x = x / peak
    x = x + 10 ** (-66 / 20) * rng.standard_normal(len(x))  # recording noise floor
    x = x / np.max(np.abs(x)) * rng.uniform(0.5, 0.9)
    return x.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Target classes
# --------------------------------------------------------------------------------------------


def alarm_clock(rng, sample_rate, duration):
    """Beeping alarm: groups of 2-4 square-ish tone bursts at 1.8-4.2 kHz, repeating."""
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    carrier = rng.uniform(1800, 4200)
    beep = rng.uniform(0.04, 0.12)
    per_group = int(rng.integers(2, 5))
    gap = beep * rng.uniform(0.7, 1.3)
    period = max(per_group * (beep + gap) + 0.15, rng.uniform(0.5, 1.0))
    n_beep = _n_samples(sample_rate, beep)
    t = np.arange(n_beep) / sample_rate
    tone = np.sin(2 * np.pi * carrier * t) + rng.uniform(0.1, 0.4) * np.sin(6 * np.pi * carrier * t)
    tone *= _attack_release(n_beep, sample_rate, 0.002, 0.003)
    for group_start in _event_times(rng, duration, period, jitter=0.0):
        for k in range(per_group):
            _add(out, (group_start + k * (beep + gap)) * sample_rate, tone)
    return _finish(out, rng, sample_rate)


def bicycle_bell(rng, sample_rate, duration):
    """Bicycle bell: rapid clapper strikes exciting inharmonic, beating, slowly decaying partials."""
    n = _n_samples(sample_rate, duration)
    f0 = rng.uniform(1800, 3500)
    ratios = np.array([1.0, 1.47, 2.09, 2.56, 3.28]) * rng.uniform(0.97, 1.03, 5)
    tau0 = rng.uniform(0.3, 1.0)
    ring_len = min(n, int(6 * tau0 * sample_rate))
    freqs, taus, amps = [], [], []
    for k, r in enumerate(ratios):
        beat = rng.uniform(2.0, 8.0)
        for split in (-0.5, 0.5):  # a pair of close modes per partial -> beating
            freqs.append(f0 * r + split * beat)
            taus.append(tau0 / r ** 0.7)
            amps.append(0.8 ** k)
    ring = _modes(rng, ring_len, sample_rate, freqs, taus, amps)
    strikes = np.zeros(n)
    rate = rng.uniform(12, 20)
    group_times = _event_times(rng, duration, rng.uniform(0.6, 1.5), jitter=0.2)
    for start in group_times:
        for k in range(int(rng.integers(2, 8))):
            position = int((start + k / rate * (1 + 0.05 * rng.standard_normal())) * sample_rate)
            if 0 <= position < n:
                strikes[position] += rng.uniform(0.6, 1.0)
    out = fftconvolve(strikes, ring)[:n]
    return _finish(out, rng, sample_rate)


def blender(rng, sample_rate, duration):
    """Blender: motor harmonics with speed changes, load-modulated grinding noise."""
    n = _n_samples(sample_rate, duration)
    base = rng.uniform(70, 200)
    speed = 1 + 0.12 * _smooth_curve(rng, n, sample_rate, rng.uniform(0.5, 2.0))
    f = base * speed
    harmonics = [1.0 / k ** rng.uniform(0.6, 1.0) for k in range(1, 40)]
    motor = _harmonic_tone(f, sample_rate, harmonics, rng)
    phase = 2 * np.pi * np.cumsum(f) / sample_rate
    grind = _spectral_noise(rng, n, sample_rate, 300, 7000, -2.0)
    grind *= 1 + 0.6 * np.sin(phase)
    chop = np.clip(_smooth_curve(rng, n, sample_rate, 8.0, -0.5, 1.0), 0, None)
    out = motor / (np.std(motor) + 1e-9) + rng.uniform(0.6, 1.2) * grind * (0.5 + chop)
    out *= _attack_release(n, sample_rate, rng.uniform(0.02, 0.2), 0.05)
    return _finish(out, rng, sample_rate)


def buzzer(rng, sample_rate, duration):
    """Buzzer: square-ish buzz at 100-450 Hz in one to a few long bursts."""
    n = _n_samples(sample_rate, duration)
    f0 = rng.uniform(100, 450)
    drive = rng.uniform(3, 10)
    t = np.arange(n) / sample_rate
    wave = np.tanh(drive * np.sin(2 * np.pi * f0 * t)) + 0.2 * np.sin(2 * np.pi * 2 * f0 * t + 1.0)
    wave = _resonator(wave, sample_rate, rng.uniform(800, 2500), 600) * 3 + wave
    gate = np.zeros(n)
    if rng.uniform() < 0.35:
        gate[:] = 1
    else:
        on = rng.uniform(0.3, 1.2)
        for start in _event_times(rng, duration, on + rng.uniform(0.15, 0.6), jitter=0.1):
            _add(gate, start * sample_rate, np.ones(_n_samples(sample_rate, on)))
    gate = np.minimum(gate, 1.0)
    gate = _one_pole_lowpass(gate, sample_rate, 200)
    return _finish(wave * gate, rng, sample_rate)


def clapping(rng, sample_rate, duration):
    """Hand claps: short resonant noise bursts at 2-6 per second from one to three people."""
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    for person in range(int(rng.integers(1, 4))):
        cavity = rng.uniform(700, 2200)
        tau = rng.uniform(0.005, 0.015)
        level = rng.uniform(0.5, 1.0)
        for start in _event_times(rng, duration, 1.0 / rng.uniform(2.0, 6.0), jitter=0.08):
            m = int(0.08 * sample_rate)
            burst = rng.standard_normal(m) * _decay(m, sample_rate, tau, 0.0008)
            clap = 0.5 * burst + _resonator(burst, sample_rate, cavity * rng.uniform(0.95, 1.05), 400) * 4
            _add(out, start * sample_rate, level * rng.uniform(0.7, 1.0) * clap)
    return _finish(out, rng, sample_rate)


def _formant_filter(x, sample_rate, formants, bandwidths, gains):
    return sum(g * _resonator(x, sample_rate, f, b) for f, b, g in zip(formants, bandwidths, gains))


def cough(rng, sample_rate, duration, identity=None):
    """Coughs: 1-4 explosive noisy bursts shaped by vocal-tract formants, with a voiced onset."""
    identity = identity or draw_identity("Cough", rng)
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    scale = identity["formant_scale"]
    spacing = identity["spacing"]
    times = []  # bouts of 1-4 coughs, a pause between bouts
    time = rng.uniform(0.0, min(0.15, 0.3 * duration))
    while time < duration - 0.05:
        for _ in range(int(rng.integers(1, 5))):
            times.append(time)
            time += spacing * rng.uniform(0.85, 1.15)
        time += rng.uniform(0.3, 1.0)
    times = [t for t in times if t < duration - 0.05]
    for start in times:
        length = rng.uniform(0.2, 0.45)
        m = _n_samples(sample_rate, length)
        noise = rng.standard_normal(m)
        formants = np.array([rng.uniform(450, 750), rng.uniform(1200, 1900), rng.uniform(2400, 3000)])
        burst = _formant_filter(noise, sample_rate, formants * scale, [200, 300, 400], [1.0, 0.7, 0.4])
        burst += 0.3 * _spectral_noise(rng, m, sample_rate, 1500, 7000)
        env = _decay(m, sample_rate, rng.uniform(0.05, 0.12), 0.006)
        t = np.arange(m) / sample_rate
        f0 = identity["pitch"] * (1.0 - 0.3 * t / length)
        voiced = _harmonic_tone(f0, sample_rate, [1, 0.6, 0.4, 0.3, 0.2], rng)
        voiced = _formant_filter(voiced, sample_rate, formants * scale, [120, 180, 250], [1, .5, .3])
        voiced *= np.exp(-t / 0.06) * identity["voicing"]
        event = burst / (np.std(burst) + 1e-9) * env + voiced / (np.std(voiced) + 1e-9) * env
        _add(out, start * sample_rate, rng.uniform(0.6, 1.0) * event)
    return _finish(out, rng, sample_rate)


def cupboard_open_close(rng, sample_rate, duration):
    """Cupboard door: a stick-slip hinge creak and a wooden thump (open, then close)."""
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    thump_len = int(0.4 * sample_rate)
    thump = _modes(rng, thump_len, sample_rate, [rng.uniform(70, 180), rng.uniform(250, 500)],
                   [rng.uniform(0.03, 0.08), 0.02], [1.0, 0.4])
    click = _spectral_noise(rng, thump_len, sample_rate, 500, 6000) * _decay(thump_len, sample_rate, 0.006)
    thump = thump + 0.3 * click
    thump /= np.max(np.abs(thump)) + 1e-9
    hinge = [rng.uniform(400, 2800) for _ in range(3)]
    base_rate = rng.uniform(30, 150)

    def creak(length):
        m = _n_samples(sample_rate, length)
        rate = base_rate * (1 + 0.5 * _smooth_curve(rng, m, sample_rate, 4.0))
        phase = np.cumsum(rate) / sample_rate
        pulses = np.zeros(m)
        pulse_idx = np.nonzero(np.diff(np.floor(phase)) > 0)[0]
        pulses[pulse_idx] = rng.uniform(0.5, 1.0, len(pulse_idx))
        sound = sum(_resonator(pulses, sample_rate, f * rng.uniform(0.97, 1.03), rng.uniform(40, 150))
                    for f in hinge)
        sound *= _attack_release(m, sample_rate, 0.05, 0.08)
        return sound / (np.max(np.abs(sound)) + 1e-9)

    # open: the door creaks; a pause; close: a shorter creak, then the thump (and a rattle)
    open_len = duration * rng.uniform(0.25, 0.45)
    close_len = duration * rng.uniform(0.1, 0.25)
    time = rng.uniform(0.0, 0.05) * duration
    _add(out, time * sample_rate, rng.uniform(0.4, 0.8) * creak(open_len))
    time += open_len + rng.uniform(0.05, 0.2) * duration
    _add(out, time * sample_rate, rng.uniform(0.3, 0.7) * creak(close_len))
    thump_time = min(duration - 0.1, time + close_len)
    _add(out, thump_time * sample_rate, thump)
    if rng.uniform() < 0.4:
        _add(out, (thump_time + 0.08) * sample_rate, 0.3 * thump[:thump_len // 2])
    return _finish(out, rng, sample_rate)


def dishes(rng, sample_rate, duration):
    """Dishes: clinks of ceramic/glass objects (high, damped modes) and short clatter."""
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    objects = []
    for _ in range(int(rng.integers(2, 4))):
        base = rng.uniform(1500, 4500)
        objects.append((base * np.array([1.0, rng.uniform(1.5, 1.9), rng.uniform(2.4, 3.1),
                                          rng.uniform(3.6, 4.4)]),
                        rng.uniform(0.03, 0.25)))
    for start in _event_times(rng, duration, rng.uniform(0.15, 0.5), jitter=0.6, min_interval=0.03):
        freqs, tau = objects[int(rng.integers(len(objects)))]
        m = int(min(n, 7 * tau * sample_rate))
        clink = _modes(rng, m, sample_rate, freqs, [tau, tau * 0.7, tau * 0.5, tau * 0.35],
                       rng.uniform(0.3, 1.0, 4))
        hit = _spectral_noise(rng, m, sample_rate, 2000, 12000) * _decay(m, sample_rate, 0.002)
        _add(out, start * sample_rate, rng.uniform(0.3, 1.0) * (clink + 0.5 * hit))
    return _finish(out, rng, sample_rate)


def doorbell(rng, sample_rate, duration):
    """Doorbell: two-tone "ding-dong" chimes (a falling third) that ring out."""
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    high = rng.uniform(550, 950)
    low = high / rng.choice([1.19, 1.26, 1.33])
    tau = rng.uniform(0.5, 1.4)
    partials = [1.0, 2.0 * rng.uniform(0.99, 1.01), 3.0 * rng.uniform(0.98, 1.02), 4.1]
    weights = [1.0, rng.uniform(0.2, 0.5), rng.uniform(0.1, 0.3), 0.08]
    gap = rng.uniform(0.35, 0.7)
    m = int(min(n, 6 * tau * sample_rate))
    tones = [_modes(rng, m, sample_rate, [f * p for p in partials],
                    [tau / p ** 0.5 for p in partials], weights) for f in (high, low)]
    for start in _event_times(rng, duration, rng.uniform(1.5, 2.6), jitter=0.05):
        _add(out, start * sample_rate, tones[0])
        _add(out, (start + gap) * sample_rate, tones[1])
    return _finish(out, rng, sample_rate)


def foot_steps(rng, sample_rate, duration, identity=None):
    """Footsteps: periodic low heel-toe thuds (plus clicks for hard shoes, scuffs for soft)."""
    identity = identity or draw_identity("FootSteps", rng)
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    m = int(0.25 * sample_rate)
    trend = rng.uniform(-0.6, 0.6)  # approaching / receding
    for start in _event_times(rng, duration, identity["interval"], jitter=0.04):
        for part, level in ((0.0, 1.0), (identity["heel_toe"], 0.55)):
            thud = _modes(rng, m, sample_rate, [identity["thud"] * rng.uniform(0.9, 1.1),
                                                identity["thud"] * 2.3], [0.03, 0.015], [1.0, 0.3])
            noise = _spectral_noise(rng, m, sample_rate, 40, identity["brightness"])
            thud = thud + 0.4 * noise * _decay(m, sample_rate, 0.012)
            if identity["hard"]:
                thud += 0.5 * _spectral_noise(rng, m, sample_rate, 2000, 9000) * _decay(m, sample_rate, 0.003)
            gain = level * rng.uniform(0.75, 1.0) * (1 + trend * (start / duration - 0.5))
            _add(out, (start + part) * sample_rate, gain * thud)
    return _finish(out, rng, sample_rate)


def hair_dryer(rng, sample_rate, duration):
    """Hair dryer: strong broadband air noise with a steady motor/fan whine."""
    n = _n_samples(sample_rate, duration)
    air = _spectral_noise(rng, n, sample_rate, 150, 14000, rng.uniform(-2.5, -0.5))
    air = air + 0.8 * _resonator(air, sample_rate, rng.uniform(1000, 3000), 1500) * 3
    motor = rng.uniform(250, 700) * (1 + 0.004 * np.sin(2 * np.pi * rng.uniform(3, 7) *
                                                         np.arange(n) / sample_rate))
    whine = _harmonic_tone(motor, sample_rate, [1.0, 0.5, 0.3, 0.6, 0.2, 0.4], rng)
    blade = _harmonic_tone(motor * rng.integers(5, 9), sample_rate, [1.0, 0.3], rng)
    out = air / np.std(air) + rng.uniform(0.15, 0.4) * (whine / np.std(whine) + 0.5 * blade / np.std(blade))
    out *= 1 + 0.05 * _smooth_curve(rng, n, sample_rate, 1.0)
    out *= _attack_release(n, sample_rate, rng.uniform(0.01, 0.3), 0.02)
    return _finish(out, rng, sample_rate)


def mechanical_fans(rng, sample_rate, duration):
    """Fan: blade-pass hum (harmonics of 30-175 Hz) over soft low-passed air noise."""
    n = _n_samples(sample_rate, duration)
    rotation = rng.uniform(10, 25)
    blades = int(rng.integers(3, 8))
    bpf = rotation * blades * (1 + 0.01 * _smooth_curve(rng, n, sample_rate, 0.5))
    hum = _harmonic_tone(bpf, sample_rate, [0.7 ** k for k in range(10)], rng)
    air = _spectral_noise(rng, n, sample_rate, 30, rng.uniform(800, 2500), -4.0)
    phase = 2 * np.pi * np.cumsum(bpf / blades) / sample_rate
    air *= 1 + 0.3 * np.sin(phase)
    out = hum / np.std(hum) + rng.uniform(0.4, 1.0) * air
    return _finish(out, rng, sample_rate)


def musical_keyboard(rng, sample_rate, duration):
    """Keyboard: melody/chords of harmonic notes with piano-like or organ-like envelopes."""
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    root = int(rng.integers(48, 66))
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    piano = rng.uniform() < 0.6
    brightness = rng.uniform(1.0, 2.0)
    beat = rng.uniform(0.15, 0.5)
    degree = int(rng.integers(0, 5))
    for start in _event_times(rng, duration, beat, jitter=0.05):
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, len(scale) - 1))
        notes = [degree] if rng.uniform() < 0.7 else [degree, max(0, degree - 2), max(0, degree - 4)]
        length = beat * rng.choice([1, 1, 2])
        m = _n_samples(sample_rate, min(length + (0.6 if piano else 0.05), duration))
        note_sum = np.zeros(m)
        for d in notes:
            f = 440.0 * 2 ** ((root + scale[d] - 69) / 12)
            tone = _harmonic_tone(np.full(m, f), sample_rate,
                                  [1.0 / k ** brightness for k in range(1, 14)], rng)
            if piano:
                env = _decay(m, sample_rate, rng.uniform(0.2, 0.6), 0.005)
            else:
                env = _attack_release(m, sample_rate, 0.015, 0.04)
            note_sum += tone * env
        _add(out, start * sample_rate, note_sum * rng.uniform(0.6, 1.0))
    return _finish(out, rng, sample_rate)


def percussion(rng, sample_rate, duration):
    """Drum kit pattern: kick (pitch sweep), snare (noise + tone), toms, hi-hats on a grid."""
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    sixteenth = 60.0 / rng.uniform(80, 160) / 4
    m = int(0.5 * sample_rate)
    t = np.arange(m) / sample_rate

    def sweep(f_start, f_end, tau):
        f = f_end + (f_start - f_end) * np.exp(-t / 0.04)
        return np.sin(2 * np.pi * np.cumsum(f) / sample_rate) * np.exp(-t / tau)

    kick = sweep(rng.uniform(120, 180), rng.uniform(40, 60), rng.uniform(0.1, 0.25))
    snare = (_spectral_noise(rng, m, sample_rate, 1000, 9000) * np.exp(-t / rng.uniform(0.05, 0.12))
             + 0.6 * np.sin(2 * np.pi * rng.uniform(170, 230) * t) * np.exp(-t / 0.05))
    tom = sweep(rng.uniform(180, 260), rng.uniform(100, 150), 0.2)
    hat = _spectral_noise(rng, m, sample_rate, 6000, 15000) * np.exp(-t / rng.uniform(0.015, 0.05))
    pattern_kick = rng.uniform(size=16) < 0.15
    pattern_kick[[0, 8]] = True
    pattern_snare = rng.uniform(size=16) < 0.05
    pattern_snare[[4, 12]] = True
    pattern_hat = np.zeros(16, bool)
    pattern_hat[::2 if rng.uniform() < 0.6 else 1] = True
    step, time = 0, rng.uniform(0, 0.05)
    while time < duration:
        i = step % 16
        if pattern_kick[i]:
            _add(out, time * sample_rate, kick)
        if pattern_snare[i]:
            _add(out, time * sample_rate, 0.8 * snare)
        if pattern_hat[i]:
            _add(out, time * sample_rate, 0.3 * rng.uniform(0.6, 1.0) * hat)
        if rng.uniform() < 0.04:
            _add(out, time * sample_rate, 0.7 * tom)
        step += 1
        time += sixteenth
    return _finish(out, rng, sample_rate)


def pour(rng, sample_rate, duration):
    """Pouring liquid: a noisy trickle with many small rising bubble chirps and a filling resonance."""
    n = _n_samples(sample_rate, duration)
    stream = _spectral_noise(rng, n, sample_rate, 200, 6000, -1.5)
    fill = np.linspace(rng.uniform(250, 500), rng.uniform(900, 1800), n)
    # time-varying resonance approximated by filtering in short blocks
    resonant = np.zeros(n)
    block = int(0.05 * sample_rate)
    for s in range(0, n, block):
        e = min(n, s + 2 * block)
        seg = _resonator(stream[s:e], sample_rate, fill[s], 150) * np.hanning(e - s)
        resonant[s:e] += seg
    out = 0.4 * stream + 2.0 * resonant
    out *= 0.7 + 0.3 * _smooth_curve(rng, n, sample_rate, 6.0, 0.0, 1.0)
    rate = rng.uniform(20, 80)
    count = rng.poisson(rate * duration)
    starts = rng.uniform(0, duration, count)
    for start in starts:
        f0 = rng.uniform(500, 3000)
        tau = rng.uniform(0.004, 0.02)
        m = int(6 * tau * sample_rate)
        tb = np.arange(m) / sample_rate
        f = f0 * (1 + rng.uniform(0.5, 2.0) * tb / (6 * tau))
        bubble = np.sin(2 * np.pi * np.cumsum(f) / sample_rate) * np.exp(-tb / tau)
        _add(out, start * sample_rate, rng.uniform(0.5, 2.5) * bubble)
    out *= _attack_release(n, sample_rate, rng.uniform(0.02, 0.2), rng.uniform(0.02, 0.2))
    return _finish(out, rng, sample_rate)


_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
                    [570, 840, 2410], [660, 1720, 2410], [440, 1020, 2240]], dtype=float)


def speech(rng, sample_rate, duration, identity=None):
    """Speech-like babble: voiced formant syllables (3-6/s) with fricatives, a falling pitch
    contour per phrase and pauses; ``identity`` fixes pitch, vocal-tract size and tempo."""
    identity = identity or draw_identity("Speech", rng)
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    drift = _smooth_curve(rng, n, sample_rate, identity["syllable_rate"] / 2, -1, 1)
    f0 = identity["pitch"] * (1 + identity["intonation"] * drift)
    # phrase-level declination
    phrase_len = rng.uniform(1.0, 2.5)
    position_in_phrase = (np.arange(n) / sample_rate) % phrase_len / phrase_len
    f0 = f0 * (1.1 - 0.2 * position_in_phrase)
    source = _harmonic_tone(f0, sample_rate, [1.0 / k ** 1.1 for k in range(1, 60)])
    source += identity["breathiness"] * _spectral_noise(rng, n, sample_rate, 500, 6000)
    time = rng.uniform(0.0, 0.1)
    syllable = 1.0 / identity["syllable_rate"]
    while time < duration - 0.05:
        if rng.uniform() < 0.12:  # pause between words/phrases
            time += rng.uniform(0.12, 0.4)
            continue
        length = syllable * rng.uniform(0.6, 1.3)
        s, e = int(time * sample_rate), min(n, int((time + length) * sample_rate))
        if e - s < 16:
            break
        if rng.uniform() < 0.35:  # fricative or plosive onset
            m = int(rng.uniform(0.03, 0.09) * sample_rate)
            low = rng.choice([2500.0, 4000.0, 5500.0])
            fric = _spectral_noise(rng, m, sample_rate, low, 11000) * _attack_release(m, sample_rate, 0.01, 0.02)
            _add(out, s, 0.25 * fric)
            s = min(e - 8, s + m // 2)
        vowel = _VOWELS[int(rng.integers(len(_VOWELS)))] * identity["formant_scale"]
        segment = _formant_filter(source[s:e], sample_rate, vowel * rng.uniform(0.93, 1.07, 3),
                                  [80, 110, 160], [1.0, 0.6, 0.3])
        env = np.sin(np.pi * np.linspace(0, 1, e - s)) ** 0.7
        _add(out, s, rng.uniform(0.6, 1.0) * segment * env)
        time += length
    return _finish(out, rng, sample_rate)


def typing(rng, sample_rate, duration):
    """Keyboard typing: trains of press/release clicks with irregular timing and space bars."""
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    m = int(0.06 * sample_rate)
    resonances = [rng.uniform(1500, 5000) for _ in range(2)]
    thock = rng.uniform(150, 400)
    time = rng.uniform(0, 0.05)
    key = 0
    while time < duration:
        space = key % int(rng.integers(4, 8)) == 0 and key > 0
        for part, level in ((0.0, 1.0), (rng.uniform(0.04, 0.09), 0.45)):
            noise = rng.standard_normal(m) * _decay(m, sample_rate, rng.uniform(0.0015, 0.004), 0.0003)
            click = 0.3 * noise + sum(_resonator(noise, sample_rate, f * rng.uniform(0.95, 1.05), 500) * 3
                                      for f in resonances)
            body = _modes(rng, m, sample_rate, [thock * (0.7 if space else 1.0)], [0.01], [0.5])
            _add(out, (time + part) * sample_rate,
                  level * (1.4 if space else 1.0) * rng.uniform(0.6, 1.0) * (click + body))
        key += 1
        time += rng.gamma(4.0, rng.uniform(0.02, 0.05))
        if rng.uniform() < 0.05:
            time += rng.uniform(0.3, 0.8)  # thinking pause
    return _finish(out, rng, sample_rate)


def vacuum_cleaner(rng, sample_rate, duration):
    """Vacuum cleaner: loud broadband suction noise, a high motor whine and a low hum."""
    n = _n_samples(sample_rate, duration)
    noise = _spectral_noise(rng, n, sample_rate, 80, 15000, rng.uniform(-1.5, 0.0))
    suction = 1 + 0.15 * _smooth_curve(rng, n, sample_rate, 1.5)
    whine_f = rng.uniform(800, 2500) * (1 + 0.02 * _smooth_curve(rng, n, sample_rate, 1.0))
    whine = _harmonic_tone(whine_f, sample_rate, [1.0, 0.4, 0.2], rng)
    hum = _harmonic_tone(np.full(n, rng.uniform(90, 200)), sample_rate, [1.0, 0.6, 0.4, 0.2], rng)
    out = noise * suction + rng.uniform(0.2, 0.5) * whine / np.std(whine) + 0.3 * hum / np.std(hum)
    out *= _attack_release(n, sample_rate, rng.uniform(0.01, 0.4), 0.05)
    return _finish(out, rng, sample_rate)


# --------------------------------------------------------------------------------------------
# Interference (non-target) classes
# --------------------------------------------------------------------------------------------


def bark(rng, sample_rate, duration):
    """Dog barks: short harmonic bursts with falling pitch, formant colouring and noise."""
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    pitch = rng.uniform(300, 900)
    for start in _event_times(rng, duration, rng.uniform(0.3, 0.8), jitter=0.3):
        m = _n_samples(sample_rate, rng.uniform(0.1, 0.3))
        t = np.arange(m) / sample_rate
        f = pitch * (1.2 - 0.4 * t / t[-1])
        tone = _harmonic_tone(f, sample_rate, [1.0, 0.8, 0.6, 0.4, 0.3, 0.2], rng)
        tone = _formant_filter(tone, sample_rate, [900, 1800], [300, 500], [1.0, 0.6]) + 0.3 * tone
        tone += 0.2 * _spectral_noise(rng, m, sample_rate, 500, 5000) * np.std(tone)
        _add(out, start * sample_rate, tone * _decay(m, sample_rate, 0.06, 0.008))
    return _finish(out, rng, sample_rate)


def siren(rng, sample_rate, duration):
    """Siren: a harmonic tone wailing (slow sweep) or alternating hi-lo."""
    n = _n_samples(sample_rate, duration)
    t = np.arange(n) / sample_rate
    low, high = rng.uniform(500, 800), rng.uniform(1100, 1600)
    if rng.uniform() < 0.5:
        f = low + (high - low) * 0.5 * (1 - np.cos(2 * np.pi * t / rng.uniform(2.0, 5.0)))
    else:
        f = np.where((t / rng.uniform(0.4, 0.8)) % 2 < 1, high, low)
        f = _one_pole_lowpass(f, sample_rate, 30)
    out = _harmonic_tone(f, sample_rate, [1.0, 0.5, 0.3, 0.2], rng)
    return _finish(out, rng, sample_rate)


def rain(rng, sample_rate, duration):
    """Rain: dense random drop impacts (heavy-tailed amplitudes) over a hiss bed."""
    n = _n_samples(sample_rate, duration)
    drops = np.zeros(n)
    count = rng.poisson(rng.uniform(200, 1500) * duration)
    drops[rng.integers(0, n, count)] = rng.pareto(2.5, count)
    kernel_len = int(0.01 * sample_rate)
    kernel = rng.standard_normal(kernel_len) * _decay(kernel_len, sample_rate, 0.002)
    out = fftconvolve(drops, kernel)[:n]
    out = out / (np.std(out) + 1e-9) + 0.5 * _spectral_noise(rng, n, sample_rate, 1500, 14000)
    return _finish(out, rng, sample_rate)


def engine(rng, sample_rate, duration):
    """Engine: pulsed firing harmonics (15-60 Hz fundamental) with rumble and rpm drift."""
    n = _n_samples(sample_rate, duration)
    f = rng.uniform(15, 60) * (1 + 0.15 * _smooth_curve(rng, n, sample_rate, 0.7))
    pulses = _harmonic_tone(f, sample_rate, [1.0] * 30, rng)
    pulses = _one_pole_lowpass(pulses, sample_rate, rng.uniform(300, 1200))
    rumble = _spectral_noise(rng, n, sample_rate, 20, 800, -5.0)
    out = pulses / np.std(pulses) + 0.6 * rumble
    return _finish(out, rng, sample_rate)


def birdsong(rng, sample_rate, duration):
    """Birdsong: phrases of fast frequency-modulated chirps and trills at 2-7 kHz."""
    n = _n_samples(sample_rate, duration)
    out = np.zeros(n)
    syllables = []
    for _ in range(int(rng.integers(2, 5))):
        m = _n_samples(sample_rate, rng.uniform(0.03, 0.15))
        t = np.linspace(0, 1, m)
        f_start, f_end = rng.uniform(2000, 7000, 2)
        f = f_start + (f_end - f_start) * t + rng.uniform(0, 800) * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
        chirp = np.sin(2 * np.pi * np.cumsum(f) / sample_rate) * np.sin(np.pi * t)
        syllables.append(chirp)
    for start in _event_times(rng, duration, rng.uniform(0.6, 1.5), jitter=0.3):
        time = start
        for _ in range(int(rng.integers(3, 10))):
            chirp = syllables[int(rng.integers(len(syllables)))]
            _add(out, time * sample_rate, rng.uniform(0.5, 1.0) * chirp)
            time += len(chirp) / sample_rate + rng.uniform(0.01, 0.08)
    return _finish(out, rng, sample_rate)


def telephone(rng, sample_rate, duration):
    """Telephone ring: dual tones (or a warbling electronic tone) in ring cadences."""
    n = _n_samples(sample_rate, duration)
    t = np.arange(n) / sample_rate
    if rng.uniform() < 0.5:
        tone = np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t)
    else:
        base = rng.uniform(900, 1800)
        f = base * (1 + 0.15 * np.sign(np.sin(2 * np.pi * rng.uniform(15, 25) * t)))
        tone = _harmonic_tone(f, sample_rate, [1.0, 0.3])
    gate = np.zeros(n)
    on = rng.uniform(0.3, 0.5)
    for start in _event_times(rng, duration, rng.uniform(1.5, 3.0), jitter=0.0):
        _add(gate, start * sample_rate, np.ones(_n_samples(sample_rate, on)))
        _add(gate, (start + on + 0.2) * sample_rate, np.ones(_n_samples(sample_rate, on)))
    gate = _one_pole_lowpass(np.minimum(gate, 1), sample_rate, 150)
    return _finish(tone * gate, rng, sample_rate)


def thunder(rng, sample_rate, duration):
    """Thunder: a broadband crack followed by a long, bursty, low rumble."""
    n = _n_samples(sample_rate, duration)
    rumble = _spectral_noise(rng, n, sample_rate, 20, rng.uniform(150, 400), -6.0)
    bursts = np.clip(_smooth_curve(rng, n, sample_rate, 3.0, -0.3, 1.0), 0, None)
    env = _decay(n, sample_rate, rng.uniform(0.8, 2.5), 0.05)
    crack = _spectral_noise(rng, n, sample_rate, 300, 8000) * _decay(n, sample_rate, 0.08)
    out = rumble * (0.3 + bursts) * env + 0.5 * crack
    return _finish(out, rng, sample_rate)


def waterfall(rng, sample_rate, duration):
    """Waterfall / stream: steady broadband water noise with slow swells."""
    n = _n_samples(sample_rate, duration)
    out = _spectral_noise(rng, n, sample_rate, 60, 12000, rng.uniform(-3.0, -1.0))
    out *= 1 + 0.2 * _smooth_curve(rng, n, sample_rate, 2.0)
    return _finish(out, rng, sample_rate)


def wind(rng, sample_rate, duration):
    """Wind: low-passed noise with slowly moving cutoff, gusts and an occasional whistle."""
    n = _n_samples(sample_rate, duration)
    noise = _spectral_noise(rng, n, sample_rate, 20, 3000, -5.0)
    gust = 0.3 + np.clip(_smooth_curve(rng, n, sample_rate, 0.8, -0.2, 1.0), 0, None)
    out = noise * gust
    if rng.uniform() < 0.5:
        out += 0.5 * _resonator(noise, sample_rate, rng.uniform(400, 1200), 20) * 8 * gust
    return _finish(out, rng, sample_rate)


def car_horn(rng, sample_rate, duration):
    """Car horn: square-ish two-note chord in one to three honks."""
    n = _n_samples(sample_rate, duration)
    t = np.arange(n) / sample_rate
    f = rng.uniform(300, 500)
    tone = np.tanh(4 * np.sin(2 * np.pi * f * t)) + np.tanh(4 * np.sin(2 * np.pi * f * 1.26 * t))
    gate = np.zeros(n)
    for start in _event_times(rng, duration, rng.uniform(0.4, 1.2), jitter=0.3)[:3]:
        _add(gate, start * sample_rate, np.ones(_n_samples(sample_rate, rng.uniform(0.15, 0.9))))
    gate = _one_pole_lowpass(np.minimum(gate, 1), sample_rate, 100)
    return _finish(tone * gate, rng, sample_rate)


# --------------------------------------------------------------------------------------------
# Identities (shared by the clips of one sub-folder) and registries
# --------------------------------------------------------------------------------------------

# class name -> name of its first-level sub-folders in the bank
IDENTITY_FOLDERS = {"Speech": "speaker", "Cough": "person", "FootSteps": "walker"}


def draw_identity(class_name, rng):
    """Parameters shared by all clips of one speaker / cougher / walker."""
    if class_name == "Speech":
        female = rng.uniform() < 0.5
        return dict(pitch=rng.uniform(170, 250) if female else rng.uniform(90, 140),
                    formant_scale=rng.uniform(1.05, 1.18) if female else rng.uniform(0.88, 1.02),
                    syllable_rate=rng.uniform(3.5, 6.0), intonation=rng.uniform(0.05, 0.2),
                    breathiness=rng.uniform(0.02, 0.15))
    if class_name == "Cough":
        return dict(pitch=rng.uniform(100, 280), formant_scale=rng.uniform(0.88, 1.15),
                    spacing=rng.uniform(0.3, 0.6), voicing=rng.uniform(0.2, 0.6))
    if class_name == "FootSteps":
        hard = bool(rng.uniform() < 0.5)
        return dict(interval=rng.uniform(0.42, 0.65), heel_toe=rng.uniform(0.04, 0.09),
                    thud=rng.uniform(55, 140), brightness=rng.uniform(400, 1500), hard=hard)
    raise KeyError(f"class {class_name!r} has no identity (only {sorted(IDENTITY_FOLDERS)})")


TARGET_GENERATORS = {
    "AlarmClock": alarm_clock, "BicycleBell": bicycle_bell, "Blender": blender,
    "Buzzer": buzzer, "Clapping": clapping, "Cough": cough,
    "CupboardOpenClose": cupboard_open_close, "Dishes": dishes, "Doorbell": doorbell,
    "FootSteps": foot_steps, "HairDryer": hair_dryer, "MechanicalFans": mechanical_fans,
    "MusicalKeyboard": musical_keyboard, "Percussion": percussion, "Pour": pour,
    "Speech": speech, "Typing": typing, "VacuumCleaner": vacuum_cleaner,
}
assert tuple(TARGET_GENERATORS) == tuple(CLASSES), "TARGET_GENERATORS must follow CLASSES order"

INTERFERENCE_GENERATORS = {
    "Bark": bark, "Siren": siren, "Rain": rain, "Engine": engine, "Birdsong": birdsong,
    "Telephone": telephone, "Thunder": thunder, "Waterfall": waterfall, "Wind": wind,
    "CarHorn": car_horn,
}


def ambient_noise(rng, sample_rate, duration, n_channels=4):
    """Diffuse-ish FOA background noise, (n_channels, N) float32 in W, Y, Z, X order.

    A coloured (between pink and brown) noise bed whose level and tilt vary slowly, rendered as
    a diffuse field (independent noise per channel, Y/Z/X at 1/sqrt(3) of W as for an isotropic
    field in SN3D), plus two or three faint directional components (ventilation hum, distant
    traffic rumble, hiss) from fixed random directions. Peak about 0.3.
    """
    if not 1 <= n_channels <= 4:
        raise ValueError(f"ambient_noise makes 1 to 4 FOA channels, got n_channels={n_channels}")
    n = _n_samples(sample_rate, duration)
    slope = rng.uniform(-5.0, -2.5)
    channel_gain = np.array([1.0, 1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)])
    out = np.zeros((4, n))
    level = 1 + 0.3 * _smooth_curve(rng, n, sample_rate, 0.2)
    for c in range(4):
        out[c] = channel_gain[c] * _spectral_noise(rng, n, sample_rate, 20, 12000, slope) * level
    for _ in range(int(rng.integers(2, 4))):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        gains = np.array([1.0, direction[1], direction[2], direction[0]])
        kind = rng.integers(3)
        if kind == 0:  # ventilation / mains hum
            f = rng.choice([50.0, 60.0]) * rng.integers(1, 4)
            comp = _harmonic_tone(np.full(n, f), sample_rate, [1.0, 0.5, 0.3], rng)
        elif kind == 1:  # distant traffic rumble
            comp = _spectral_noise(rng, n, sample_rate, 30, 400, -4.0)
        else:  # hiss
            comp = _spectral_noise(rng, n, sample_rate, 2000, 10000)
        comp = comp / (np.std(comp) + 1e-9) * rng.uniform(0.1, 0.35)
        comp *= 1 + 0.3 * _smooth_curve(rng, n, sample_rate, 0.1)
        out += gains[:, None] * comp[None, :]
    out *= 0.3 / (np.max(np.abs(out)) + 1e-12)
    return out[:n_channels].astype(np.float32)
