"""Step-indexed batch sampler: the same global batches for any number of processes.

For epoch ``e`` an index list of ``steps_per_epoch * global_batch`` dataset indices is built from
``(seed, e)`` alone (concatenated random permutations of ``range(len(dataset))`` when shuffling,
``0, 1, 2, ...`` repeated otherwise). Step ``s`` uses the slice
``[s * global_batch, (s + 1) * global_batch)`` of that list, and rank ``r`` takes its part
``[r * batch_size, (r + 1) * batch_size)`` of the slice, where ``global_batch = batch_size *
world_size``. So the union of the samples seen at each step, and hence the averaged DDP gradient,
does not depend on how many processes share the global batch; and a resumed run can start at any
step of an epoch.
"""
import math

import numpy as np
import torch


def epoch_index_list(dataset_len, n_indices, epoch, seed=0, shuffle=True):
    """The epoch's list of ``n_indices`` dataset indices, a function of (seed, epoch) only."""
    if dataset_len <= 0:
        raise ValueError("the training dataset is empty")
    if not shuffle:
        return np.arange(n_indices, dtype=np.int64) % dataset_len
    rng = np.random.default_rng([int(seed), int(epoch)])
    n_rounds = math.ceil(n_indices / dataset_len)
    return np.concatenate([rng.permutation(dataset_len) for _ in range(n_rounds)])[:n_indices]


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's list of indices for each remaining step of one epoch.

    Use as ``DataLoader(dataset, batch_sampler=StepBatchSampler(...))``. ``start_step`` skips the
    steps a resumed run has already done in this epoch.
    """

    def __init__(self, dataset_len, batch_size, steps_per_epoch, epoch, seed=0, shuffle=True,
                 rank=0, world_size=1, start_step=0):
        if batch_size < 1 or steps_per_epoch < 1:
            raise ValueError(f"batch_size ({batch_size}) and steps_per_epoch ({steps_per_epoch}) "
                             "must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if not 0 <= start_step <= steps_per_epoch:
            raise ValueError(f"start_step {start_step} is not in [0, {steps_per_epoch}]")
        self.dataset_len = int(dataset_len)
        self.batch_size = int(batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epoch = int(epoch)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start_step = int(start_step)

    @property
    def global_batch_size(self):
        return self.batch_size * self.world_size

    def step_indices(self, step, indices=None):
        """The indices this rank uses at ``step`` of the epoch."""
        if indices is None:
            indices = self.epoch_indices()
        start = step * self.global_batch_size + self.rank * self.batch_size
        return indices[start:start + self.batch_size].tolist()

    def epoch_indices(self):
        return epoch_index_list(self.dataset_len, self.steps_per_epoch * self.global_batch_size,
                                self.epoch, self.seed, self.shuffle)

    def __iter__(self):
        indices = self.epoch_indices()
        for step in range(self.start_step, self.steps_per_epoch):
            yield self.step_indices(step, indices)

    def __len__(self):
        return self.steps_per_epoch - self.start_step
