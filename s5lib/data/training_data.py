"""The training data of every trainer: where mixtures are rendered and what is rendered.

One object for the tagger, the separator and every later trainer, so that each inherits the
fast data path instead of building its own:

* ``synthesis``: ``cpu`` renders in the DataLoader workers
  (:class:`~s5lib.data.datasets.OnTheFlyMixtures`); ``device`` has the workers read and pack the
  sources and room responses and renders whole batches on the training device
  (:class:`~s5lib.data.gpu_synth.OnTheFlyRawMixtures` + :func:`~s5lib.data.gpu_synth.synthesize_batch`
  as the trainer's ``batch_transform``); ``auto``: ``device`` when training on CUDA, else ``cpu``.
  Both give the same mixtures for the same seed (up to float32 FFT rounding).
* the request, from what the model and loss read: ``with_references`` (a tagger reads none),
  ``channels`` (a 1-channel tagger reads channel 0) and ``mixit_pairs`` (MixIT reads two
  mixtures and, unsupervised, no references). What is rendered equals the same part of
  the full render (bit for bit on the CPU).
* ``pool``: data reuse (:mod:`s5lib.data.pool`, CPU synthesis only).
"""
import functools
import logging
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from s5lib.data.datasets import OnTheFlyMixtures
from s5lib.data.gpu_synth import OnTheFlyRawMixtures, collate_raw, synthesize_batch
from s5lib.data.pool import pool_from_config

logger = logging.getLogger(__name__)

SYNTHESIS_CHOICES = ("cpu", "device", "auto")


class TrainingDataError(ValueError):
    pass


@dataclass
class TrainingData:
    """What a :class:`~s5lib.train.trainer.Trainer` is given: the dataset, how to batch it and
    what to do with each batch on the device."""
    dataset: torch.utils.data.Dataset
    collate_fn: Optional[Callable] = None
    batch_transform: Optional[Callable] = None
    synthesis: str = "cpu"


def resolve_synthesis(synthesis, device):
    if synthesis not in SYNTHESIS_CHOICES:
        raise TrainingDataError(f"synthesis must be one of {SYNTHESIS_CHOICES}, got {synthesis!r}")
    if synthesis == "auto":
        return "device" if torch.device(device).type == "cuda" else "cpu"
    return synthesis


def _render_on_device(batch, device, with_references=True, keep_channels=None):
    return synthesize_batch(batch, device=device, with_references=with_references,
                            keep_channels=keep_channels)


def build_training_data(bank_root, split, synth, epoch_size, seed, synthesis="cpu", device="cpu",
                        pool=None, with_references=True, channels=None, mixit_pairs=False,
                        n_activity_frames=0, feature_fn=None):
    """The :class:`TrainingData` of on-the-fly mixtures for a trainer (see the module doc).

    ``mixit_pairs``: every item also carries a second, independent mixture (keys ending in
    ``2``, rendered with the same request): what a MixIT loss reads, usually with
    ``with_references=False``. ``n_activity_frames`` > 0: items carry the (18, F) frame
    ``activity`` of the targets (strong labels, e.g. 250 for an SED tagger). ``feature_fn``:
    what a pool with ``features: true`` keeps in place of the mixture (the model's
    parameter-free front end, e.g. a tagger's log mel).
    """
    synthesis = resolve_synthesis(synthesis, device)
    if synthesis == "device" and pool:
        raise TrainingDataError("pool: pooled mixtures are rendered on the CPU; use synthesis: "
                                "cpu with a pool, or drop the pool")
    if synthesis == "device":
        dataset = OnTheFlyRawMixtures(bank_root, split, synth, epoch_size=epoch_size, seed=seed,
                                      mixit_pairs=mixit_pairs, n_activity_frames=n_activity_frames)
        logger.info("training mixtures rendered on %s (room responses padded to %d samples)%s",
                    device, dataset.ir_length, "" if with_references else ", no references")
        transform = functools.partial(_render_on_device, with_references=with_references,
                                      keep_channels=channels)
        return TrainingData(dataset, collate_raw, transform, "device")
    pool = dict(pool or {})
    if pool.get("channels") is not None:
        # the pool keeps these channels: render only them (the same values, bit for bit)
        pool_channels = [int(c) for c in pool.pop("channels")]
        if channels is not None and [int(c) for c in channels] != pool_channels:
            raise TrainingDataError(f"pool: channels {pool_channels} differ from the channels the "
                                    f"model reads ({list(channels)})")
        channels = pool_channels
    dataset = OnTheFlyMixtures(bank_root, split, synth, epoch_size=epoch_size, seed=seed,
                               with_references=with_references, channels=channels,
                               mixit_pairs=mixit_pairs, n_activity_frames=n_activity_frames)
    try:
        dataset = pool_from_config(dataset, pool, epoch_size, feature_fn=feature_fn)
    except (ValueError, KeyError) as err:
        raise TrainingDataError(str(err)) from None
    return TrainingData(dataset, None, None, "cpu")
