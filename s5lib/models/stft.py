"""STFT and inverse STFT modules whose state_dict matches the torchlibrosa 0.1.0 layout.

The DCASE baseline and AudioSep separators store their (fixed, not learned) DFT kernels in the
checkpoint: ``stft.conv_real.weight`` / ``stft.conv_imag.weight`` with shape
``[n_fft//2+1, 1, n_fft]``, ``istft.conv_real.weight`` / ``istft.conv_imag.weight`` with shape
``[n_fft, n_fft, 1]`` (all ``nn.Parameter`` with ``requires_grad=False``) and the buffer
``istft.ola_window`` (``[n_fft]``, the squared synthesis window). These modules carry exactly those
entries so such checkpoints load strictly, but their ``forward`` computes with ``torch.stft`` /
``torch.fft.irfft`` (much faster than the matrix-multiply formulation). The kernel formulation is
kept as ``forward_with_kernels`` so tests can check that both give the same numbers.

Kernel formulation (N = n_fft, w = periodic window zero-padded to N, k = bin, n = sample):

* analysis: ``conv_real[k, 0, n] = w[n] cos(2 pi k n / N)``, ``conv_imag[k, 0, n] = -w[n] sin(2 pi k n / N)``,
  applied as a strided 1-d convolution over the (reflect-padded) signal;
* synthesis: ``conv_real[n, k, 0] = w[n] cos(2 pi k n / N) / N``,
  ``conv_imag[n, k, 0] = w[n] sin(2 pi k n / N) / N`` applied to the Hermitian-extended full
  spectrum as ``frame = conv_real(Re) - conv_imag(Im)``, then overlap-add divided by the
  overlap-added ``ola_window = w**2`` (clamped at 1e-11), then trimmed by N//2 at the start
  when ``center`` is set.

Spectrogram layout everywhere in s5lib's separators: ``(..., time_steps, freq_bins)``.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

WINDOW_SUM_FLOOR = 1e-11


def analysis_window(window, win_length, n_fft):
    """Periodic window of ``win_length`` samples, zero-padded on both sides to ``n_fft``."""
    if window != "hann":
        raise ValueError(f"only the 'hann' window is supported, not {window!r}")
    if win_length > n_fft:
        raise ValueError(f"win_length {win_length} is longer than n_fft {n_fft}")
    samples = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
    left = (n_fft - win_length) // 2
    return F.pad(samples, (left, n_fft - win_length - left))


def _frozen_conv1d(in_channels, out_channels, kernel_size, stride, weight):
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=False)
    conv.weight = nn.Parameter(weight.to(torch.float32), requires_grad=False)
    return conv


class STFT(nn.Module):
    """Short-time Fourier transform: waveform (..., samples) -> real, imag (..., time, freq)."""

    def __init__(self, n_fft=1024, hop_length=160, win_length=None, window="hann", center=True,
                 pad_mode="reflect"):
        super().__init__()
        win_length = win_length or n_fft
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.center, self.pad_mode = center, pad_mode
        self.freq_bins = n_fft // 2 + 1
        window_samples = analysis_window(window, win_length, n_fft)
        sample = torch.arange(n_fft, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(torch.arange(self.freq_bins, dtype=torch.float64), sample) / n_fft
        self.conv_real = _frozen_conv1d(1, self.freq_bins, n_fft, hop_length,
                                        (torch.cos(angle) * window_samples)[:, None, :])
        self.conv_imag = _frozen_conv1d(1, self.freq_bins, n_fft, hop_length,
                                        (-torch.sin(angle) * window_samples)[:, None, :])
        self.register_buffer("window", window_samples.to(torch.float32), persistent=False)

    def complex_spectrogram(self, waveform):
        """Complex STFT of ``waveform`` (..., samples) as (..., time_steps, freq_bins), float32."""
        leading = waveform.shape[:-1]
        flat = waveform.reshape(-1, waveform.shape[-1]).float()
        spec = torch.stft(flat, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.n_fft,
                          window=self.window, center=self.center, pad_mode=self.pad_mode,
                          normalized=False, onesided=True, return_complex=True)
        return spec.transpose(-1, -2).reshape(*leading, spec.shape[-1], spec.shape[-2])

    def forward(self, waveform):
        """Return (real, imag), each (..., time_steps, freq_bins)."""
        spec = self.complex_spectrogram(waveform)
        return spec.real, spec.imag

    def forward_with_kernels(self, waveform):
        """The torchlibrosa formulation (strided conv with the stored kernels); for checks only."""
        leading = waveform.shape[:-1]
        x = waveform.reshape(-1, 1, waveform.shape[-1]).float()
        if self.center:
            x = F.pad(x, (self.n_fft // 2, self.n_fft // 2), mode=self.pad_mode)
        real = self.conv_real(x).transpose(1, 2)
        imag = self.conv_imag(x).transpose(1, 2)
        return (real.reshape(*leading, *real.shape[1:]), imag.reshape(*leading, *imag.shape[1:]))


class ISTFT(nn.Module):
    """Inverse STFT: real, imag (..., time, freq) -> waveform (..., length)."""

    def __init__(self, n_fft=1024, hop_length=160, win_length=None, window="hann", center=True,
                 pad_mode="reflect"):
        super().__init__()
        win_length = win_length or n_fft
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.center = center
        window_samples = analysis_window(window, win_length, n_fft)
        bins = torch.arange(n_fft, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(bins, bins) / n_fft  # symmetric in (n, k)
        # Registration order (ola_window, conv_real, conv_imag) follows the reference state_dict.
        self.register_buffer("ola_window", (window_samples ** 2).to(torch.float32))
        self.conv_real = _frozen_conv1d(n_fft, n_fft, 1, 1,
                                        (torch.cos(angle) * window_samples[:, None] / n_fft)[:, :, None])
        self.conv_imag = _frozen_conv1d(n_fft, n_fft, 1, 1,
                                        (torch.sin(angle) * window_samples[:, None] / n_fft)[:, :, None])
        self.register_buffer("window", window_samples.to(torch.float32), persistent=False)

    def _overlap_add(self, frames, length):
        """frames (N, n_fft, T) -> (N, length): overlap-add, divide by the window sum, trim."""
        num_frames = frames.shape[-1]
        total = (num_frames - 1) * self.hop_length + self.n_fft
        signal = F.fold(frames, output_size=(1, total), kernel_size=(1, self.n_fft),
                        stride=(1, self.hop_length))[:, 0, 0, :]
        envelope_frames = self.ola_window.to(frames.dtype)[None, :, None].expand(1, self.n_fft, num_frames)
        envelope = F.fold(envelope_frames, output_size=(1, total), kernel_size=(1, self.n_fft),
                          stride=(1, self.hop_length))[0, 0, 0, :]
        signal = signal / envelope.clamp(min=WINDOW_SUM_FLOOR)
        start = self.n_fft // 2 if self.center else 0
        return signal[:, start:start + length]

    def forward(self, real, imag, length):
        """Inverse STFT of a (..., time_steps, freq_bins) spectrum to (..., length) samples."""
        leading = real.shape[:-2]
        spec = torch.complex(real.float(), imag.float()).reshape(-1, real.shape[-2], real.shape[-1])
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.window  # (N, T, n_fft)
        waveform = self._overlap_add(frames.transpose(1, 2), length)
        return waveform.reshape(*leading, waveform.shape[-1])

    def forward_with_kernels(self, real, imag, length):
        """The torchlibrosa formulation (full-spectrum 1x1 convs with the stored kernels)."""
        leading = real.shape[:-2]
        real = real.reshape(-1, real.shape[-2], real.shape[-1]).float().transpose(1, 2)
        imag = imag.reshape(-1, imag.shape[-2], imag.shape[-1]).float().transpose(1, 2)
        full_real = torch.cat((real, torch.flip(real[:, 1:-1, :], dims=[1])), dim=1)
        full_imag = torch.cat((imag, -torch.flip(imag[:, 1:-1, :], dims=[1])), dim=1)
        frames = self.conv_real(full_real) - self.conv_imag(full_imag)
        waveform = self._overlap_add(frames, length)
        return waveform.reshape(*leading, waveform.shape[-1])
