"""The "class EQ" anchor: one fixed real gain per (class, frequency bin) applied to channel 0.

A model-free floor for label-queried separators, fitted in seconds: for every class ``c`` and
STFT bin ``f``, the least-squares real gain that maps the mixture's channel-0 STFT ``Y`` onto the
class's reference ``S`` over training mixtures,

    g[c, f] = max(0, sum_{n,t} Re(Y conj S) / sum_{n,t} |Y|^2),

sums over the training mixtures ``n`` that hold class ``c`` and their frames ``t``. The estimate
for a label is ``istft(g[label] * Y)``: a fixed equaliser per class, no look at the mixture's
content beyond its spectrum. A separator that does not beat it has learned nothing that a
per-class filter would not give (stage 5 scores it beside the silence and mixture anchors).

The gains are saved as a ``.npz`` (numpy arrays and numbers only; read with
``allow_pickle=False``).
"""
import numpy as np
import torch

from s5lib import constants

N_FFT = 1024
HOP = 256


def _stft(x, n_fft, hop):
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)


def accumulate(mixture0, references, labels, num, den, n_fft=N_FFT, hop=HOP):
    """Add one mixture's statistics: channel 0 (N,), its references (K, N) and their labels."""
    spec_y = _stft(mixture0, n_fft, hop)
    power = spec_y.abs().pow(2).sum(-1).double().numpy()
    for reference, label in zip(references, labels):
        c = constants.CLASS_INDEX[label]
        cross = (spec_y * _stft(reference, n_fft, hop).conj()).real.sum(-1).double().numpy()
        num[c] += cross
        den[c] += power


def fit_class_eq(items, n_fft=N_FFT, hop=HOP):
    """Gains (18, n_fft // 2 + 1) from an iterable of items with ``mixture``, ``references``,
    ``active`` and ``label_index`` (dataset items). Classes never seen get gain 0."""
    n_bins = n_fft // 2 + 1
    num = np.zeros((constants.N_CLASSES, n_bins))
    den = np.zeros((constants.N_CLASSES, n_bins))
    count = 0
    for item in items:
        active = item["active"].bool()
        labels = [constants.CLASSES[int(c)] for c in item["label_index"][active]]
        accumulate(item["mixture"][0].numpy(), item["references"][active].numpy(), labels, num,
                   den, n_fft, hop)
        count += 1
    gains = np.where(den > 0, num / np.maximum(den, 1e-30), 0.0).clip(min=0.0)
    return gains.astype(np.float32), count


def apply_class_eq(gains, mixture0, label, n_fft=N_FFT, hop=HOP):
    """The anchor's estimate of ``label`` from channel 0 (N,) of a mixture: (N,) float32."""
    spec = _stft(mixture0, n_fft, hop)
    gain = torch.as_tensor(gains[constants.CLASS_INDEX[label]])[:, None]
    out = torch.istft(spec * gain, n_fft, hop, window=torch.hann_window(n_fft),
                      length=len(mixture0))
    return out.numpy().astype(np.float32)


def save_gains(path, gains, n_fft=N_FFT, hop=HOP, **info):
    np.savez(path, gains=gains, n_fft=n_fft, hop=hop,
             **{key: np.asarray(value) for key, value in info.items()})


def load_gains(path):
    """``(gains, n_fft, hop)`` from a file written by :func:`save_gains`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            gains, n_fft, hop = data["gains"], int(data["n_fft"]), int(data["hop"])
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a class-EQ gains file ({err})") from None
    if gains.shape != (constants.N_CLASSES, n_fft // 2 + 1) or not np.all(np.isfinite(gains)):
        raise ValueError(f"{path}: gains of shape {gains.shape} (expected "
                         f"({constants.N_CLASSES}, {n_fft // 2 + 1}), finite)")
    return gains, n_fft, hop
