"""Checked audio I/O: every problem is reported with the file name and what is wrong.

All audio in s5lib is float32, shaped (channels, samples) for multi-channel data and (samples,)
for mono data. Writing is atomic (temporary file + rename), so an interrupted stage never leaves
a half-written wav behind.
"""
import os
import tempfile

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """Raised for unreadable or unsuitable audio; the message names the file."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def audio_info(path):
    """Return (sample_rate, channels, frames) without reading the samples."""
    if not os.path.isfile(path):
        raise AudioError(path, "file does not exist")
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises several error types for corrupt files
        raise AudioError(path, f"unreadable audio file ({err})") from None
    return info.samplerate, info.channels, info.frames


def read_audio(path, sample_rate=None, channels=None, start=0, frames=-1, mono=False,
               allow_nan=False):
    """Read a wav file as float32.

    Args:
        path: file to read.
        sample_rate: required rate; a file at another rate raises AudioError (no silent resampling).
        channels: required channel count (None: any).
        start, frames: read ``frames`` samples from sample ``start`` (-1: to the end).
        mono: return the channel mean as a 1-d array.
        allow_nan: skip the NaN/inf check.
    Returns:
        (channels, samples) array, or (samples,) when ``mono`` is set or the file is mono
        and ``channels`` is 1 or None.
    """
    sr, nch, _ = audio_info(path)
    if sample_rate is not None and sr != sample_rate:
        raise AudioError(path, f"sample rate is {sr} Hz, expected {sample_rate} Hz")
    if channels is not None and nch != channels:
        raise AudioError(path, f"has {nch} channel(s), expected {channels}")
    try:
        data, _ = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"unreadable audio data ({err})") from None
    if not allow_nan and not np.all(np.isfinite(data)):
        raise AudioError(path, "contains NaN or infinite samples")
    data = data.T  # (channels, samples)
    if mono:
        return data.mean(axis=0, dtype=np.float32) if nch > 1 else data[0]
    if nch == 1:
        return data[0]
    return np.ascontiguousarray(data)


def write_audio(path, data, sample_rate, subtype="FLOAT"):
    """Write (channels, samples) or (samples,) float audio atomically.

    ``subtype`` "FLOAT" keeps float32 samples exactly (used for references and estimates);
    "PCM_16" writes 16-bit files like the official mixtures.
    """
    data = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise AudioError(path, "refusing to write NaN or infinite samples")
    frames = data.T if data.ndim == 2 else data
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=directory)
    os.close(fd)
    try:
        sf.write(tmp, frames, sample_rate, subtype=subtype, format="WAV")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; collaborators must be able to read them
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
