"""Learning-rate schedules, stepped once per optimizer update.

Each schedule is a factor multiplying every parameter group's own lr (so per-group lrs and layer
decay keep their ratios). With ``s`` the number of updates already done (0 for the first update),
``W`` the warm-up steps and ``T`` the total steps:

* ``constant``: 1;
* ``warmup_constant``: ``(s + 1) / W`` for ``s < W``, then 1;
* ``warmup_cosine``: the same warm-up, then
  ``m + (1 - m) * 0.5 * (1 + cos(pi * min(1, (s - W) / (T - W))))`` with ``m = min_lr_ratio``.
"""
import math

import torch

SCHEDULES = ("constant", "warmup_constant", "warmup_cosine")


class LrFactor:
    """The schedule's factor as a function of the update count (a picklable callable)."""

    def __init__(self, name="constant", warmup_steps=0, total_steps=None, min_lr_ratio=0.0):
        if name not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {name!r}; known: {', '.join(SCHEDULES)}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if name == "warmup_cosine" and (total_steps is None or total_steps <= warmup_steps):
            raise ValueError(f"warmup_cosine needs total_steps ({total_steps}) > warmup_steps "
                             f"({warmup_steps})")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.name = name
        self.warmup_steps = int(warmup_steps)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step):
        if self.name == "constant":
            return 1.0
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.name == "warmup_constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


def build_scheduler(optimizer, name="constant", warmup_steps=0, total_steps=None, min_lr_ratio=0.0):
    """A ``LambdaLR`` over ``optimizer`` with the named schedule (call ``.step()`` after each update)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, LrFactor(name, warmup_steps, total_steps, min_lr_ratio))
