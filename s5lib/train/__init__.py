"""s5lib.train: the trainer shared by every training stage.

* :class:`Trainer`, :class:`TrainConfig` (trainer.py): DDP training loop, validation, checkpoints,
  automatic resume;
* :func:`init_distributed` (distributed.py): torchrun process groups (NCCL on GPU, gloo on CPU);
* :class:`StepBatchSampler` (sampler.py): per-step global batches split over ranks;
* :func:`build_param_groups`, :func:`build_optimizer` (optim.py): per-group lrs, layer-wise decay;
* :func:`build_scheduler` (schedulers.py): constant, warm-up + constant, warm-up + cosine;
* checkpoint.py: atomic checkpoint files, fallback to the previous one, RNG states.
"""
from s5lib.train.checkpoint import (BEST, LAST, PREV, CheckpointError, load_latest,
                                    load_model_weights, read_checkpoint, save_training_checkpoint)
from s5lib.train.distributed import DistInfo, cleanup_distributed, init_distributed
from s5lib.train.optim import (build_optimizer, build_param_groups, describe_param_groups,
                               layer_decay_scale, layer_id)
from s5lib.train.sampler import StepBatchSampler, epoch_index_list
from s5lib.train.schedulers import LrFactor, build_scheduler
from s5lib.train.trainer import (TrainConfig, TrainConfigError, Trainer, move_to_device,
                                 seed_everything)

__all__ = [
    "Trainer", "TrainConfig", "TrainConfigError", "seed_everything", "move_to_device",
    "init_distributed", "cleanup_distributed", "DistInfo", "StepBatchSampler", "epoch_index_list",
    "build_param_groups", "build_optimizer", "describe_param_groups", "layer_id",
    "layer_decay_scale", "build_scheduler", "LrFactor", "save_training_checkpoint", "load_latest",
    "read_checkpoint", "load_model_weights", "CheckpointError", "LAST", "PREV", "BEST",
]
