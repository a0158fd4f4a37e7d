"""A pool of training mixtures rendered once and served for many updates (data reuse).

On a few CPU cores the synthesizer, not the model, limits how many updates a small model gets:
rendering one 10 s FOA mixture costs about as much as a tiny model's update on it. A
:class:`RenderedPool` renders ``size`` items of an on-the-fly dataset once (in parallel, with
DataLoader workers), keeps only what the model reads (``keys``; ``channels`` of the mixture),
and serves them ``len(pool) = epoch_size`` times per epoch, item ``i`` being pooled mixture
``i % size``. Every ``refresh_epochs`` epochs (optional) the pool is rendered anew from the
next mixtures of the dataset, so data reuse is bounded.

With ``feature_fn`` (``features: true`` in the config; the trainer gives the function, e.g. a
tagger's parameter-free front end) the pool keeps ``features = feature_fn(mixture)`` in place of
the mixture: the front end runs once per pooled mixture instead of once per use, and a log mel
takes a quarter of the memory of the 10 s waveform it comes from.

The ``index`` of a served item is ``epoch * epoch_size + i``: what is seeded by the index
(random segments in ``crop_batch``, the single-query slot choice) differs between the uses of a
pooled mixture. Recipe config::

    pool: {mixtures: 2000, channels: [0], keys: [mixture, label_vector], refresh_epochs: null,
           features: false}
"""
import logging
import time

import torch

logger = logging.getLogger(__name__)


class RenderedPool(torch.utils.data.Dataset):
    """``size`` items of ``dataset`` rendered once, served ``epoch_size`` times per epoch.

    Args:
        dataset: a map-style dataset of item dicts with ``set_epoch`` (e.g.
            :class:`~s5lib.data.datasets.OnTheFlyMixtures`).
        size: number of distinct mixtures in the pool.
        epoch_size: items per epoch (default: ``size``).
        keys: item keys to keep (default: all); ``index`` is always set by the pool.
        channels: mixture channels to keep (default: all), e.g. ``[0]`` for a 1-channel tagger.
        refresh_epochs: render a new pool every this many epochs (None: never).
        num_workers: processes that render the pool.
        feature_fn: maps a (1, C, L) mixture to a (1, ...) tensor kept as ``features`` in place
            of ``mixture`` (run in this process, under ``torch.no_grad``).
    """

    def __init__(self, dataset, size, epoch_size=None, keys=None, channels=None,
                 refresh_epochs=None, num_workers=0, feature_fn=None):
        if int(size) < 1:
            raise ValueError(f"pool: mixtures must be >= 1, got {size}")
        if refresh_epochs is not None and int(refresh_epochs) < 1:
            raise ValueError(f"pool: refresh_epochs must be >= 1 or null, got {refresh_epochs}")
        self.dataset = dataset
        self.size = int(size)
        self.epoch_size = int(epoch_size or size)
        self.keys = None if keys is None else set(keys) - {"index"}
        self.channels = None if channels is None else [int(c) for c in channels]
        self.refresh_epochs = None if refresh_epochs is None else int(refresh_epochs)
        self.num_workers = int(num_workers)
        self.feature_fn = feature_fn
        self.epoch = 0
        self.generation = None
        self.items = None
        self._render(0)

    def __len__(self):
        return self.epoch_size

    def _keep(self, item):
        if self.keys is not None:
            missing = sorted(self.keys - set(item))
            if missing:
                raise KeyError(f"pool: the dataset's items have no {missing} (they have "
                               f"{sorted(item)})")
            item = {key: value for key, value in item.items() if key in self.keys}
        else:
            item = {key: value for key, value in item.items() if key != "index"}
        if self.channels is not None and "mixture" in item:
            item["mixture"] = item["mixture"][self.channels].clone()
        if self.feature_fn is not None:
            if "mixture" not in item:
                raise KeyError("pool: features are computed from the mixture; keep 'mixture' in "
                               "the pool's keys")
            with torch.no_grad():
                item["features"] = self.feature_fn(item.pop("mixture").unsqueeze(0))[0].cpu()
        return item

    def _render(self, generation):
        """Render the pool of ``generation`` (the dataset's epoch ``generation``)."""
        start = time.time()
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(generation)
        subset = torch.utils.data.Subset(self.dataset, list(range(self.size)))
        loader = torch.utils.data.DataLoader(subset, batch_size=None, shuffle=False,
                                             num_workers=self.num_workers)
        # each item is copied into preallocated columns as it arrives, so the peak memory is
        # the pool plus a few items in flight (stacking a list at the end would double it)
        self.items = None
        columns = None
        for row, item in enumerate(loader):
            item = self._keep(item)
            if columns is None:
                columns = {key: torch.empty((self.size,) + tuple(value.shape), dtype=value.dtype)
                           for key, value in item.items()}
            if set(item) != set(columns):
                raise KeyError(f"pool: item {row} has keys {sorted(item)}, the first had {sorted(columns)}")
            for key, value in item.items():
                if tuple(value.shape) != tuple(columns[key].shape[1:]):
                    raise ValueError(f"pool: item {row}: {key} has shape {tuple(value.shape)}, "
                                     f"the first item's was {tuple(columns[key].shape[1:])}")
                columns[key][row] = value
            del item
        self.items = columns
        self.generation = generation
        megabytes = sum(v.numel() * v.element_size() for v in self.items.values()) / 2 ** 20
        logger.info("pool: %d mixtures rendered in %.1f s (%.0f MB; generation %d)", self.size,
                    time.time() - start, megabytes, generation)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        generation = 0 if self.refresh_epochs is None else self.epoch // self.refresh_epochs
        if generation != self.generation:
            self._render(generation)

    def __getitem__(self, index):
        item = {key: value[int(index) % self.size] for key, value in self.items.items()}
        item["index"] = torch.tensor(self.epoch * self.epoch_size + int(index))
        return item


POOL_KEYS = ("mixtures", "keys", "channels", "refresh_epochs", "num_workers", "features")


def pool_from_config(dataset, pool_cfg, epoch_size, feature_fn=None):
    """A :class:`RenderedPool` from a recipe's ``pool:`` section, or ``dataset`` when it is empty.

    ``feature_fn``: what ``features: true`` keeps in place of the mixture (given by the trainer;
    without one, ``features: true`` is an error)."""
    if not pool_cfg:
        return dataset
    unknown = sorted(set(pool_cfg) - set(POOL_KEYS))
    if unknown:
        raise ValueError(f"pool: unknown option(s) {unknown}; known: {list(POOL_KEYS)}")
    if not pool_cfg.get("mixtures"):
        raise ValueError("pool: 'mixtures' (the number of pooled mixtures) is required")
    use_features = pool_cfg.get("features", False)
    if not isinstance(use_features, bool):
        raise ValueError(f"pool: features must be true or false, got {use_features!r}")
    if use_features and feature_fn is None:
        raise ValueError("pool: features: true, but this trainer's model has no input features "
                         "to keep (it reads the waveform)")
    return RenderedPool(dataset, pool_cfg["mixtures"], epoch_size=epoch_size,
                        keys=pool_cfg.get("keys"), channels=pool_cfg.get("channels"),
                        refresh_epochs=pool_cfg.get("refresh_epochs"),
                        num_workers=pool_cfg.get("num_workers", 0),
                        feature_fn=feature_fn if use_features else None)
