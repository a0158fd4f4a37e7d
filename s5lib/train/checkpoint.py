"""Training checkpoints: atomic writes, the previous one kept, fallback on a corrupt file.

Files in the experiment directory:

* ``checkpoint_last.pt``: the latest training state (what a resume starts from);
* ``checkpoint_prev.pt``: the one before it (a resume falls back to it when the last one cannot be
  read, with a warning);
* ``checkpoint_best.pt``: the state at the best validation metric so far.

Every file is written to ``<name>.tmp`` first, flushed to disk and then renamed with
``os.replace`` (atomic on POSIX), so a killed job never leaves a half-written checkpoint under a
real name. A checkpoint is a dict with ``model``, ``optimizer``, ``scheduler``, ``scaler``,
``step``, ``epoch``, ``step_in_epoch``, ``rng_states`` (one per rank), ``config`` and the
best-metric bookkeeping; ``model`` holds the plain (un-wrapped) ``state_dict``.
"""
import logging
import os
import random
import shutil
import warnings

import numpy as np
import torch

LAST = "checkpoint_last.pt"
PREV = "checkpoint_prev.pt"
BEST = "checkpoint_best.pt"
REQUIRED_KEYS = ("model", "optimizer", "step", "epoch", "step_in_epoch")

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(obj, path):
    """``torch.save`` to ``path + '.tmp'``, fsync, then ``os.replace`` onto ``path``."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def copy_atomic(src, dst):
    """Copy a file so that ``dst`` is either the old file or the complete new one."""
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def save_training_checkpoint(state, exp_dir, is_best=False):
    """Write ``state`` as the new ``checkpoint_last.pt``; the old last becomes ``checkpoint_prev.pt``.

    With ``is_best`` the new file is also copied to ``checkpoint_best.pt``.
    """
    os.makedirs(exp_dir, exist_ok=True)
    last, prev = os.path.join(exp_dir, LAST), os.path.join(exp_dir, PREV)
    tmp = last + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(last):
        os.replace(last, prev)  # a crash right here leaves prev only: load_latest handles that
    os.replace(tmp, last)
    _fsync_dir(exp_dir)
    if is_best:
        copy_atomic(last, os.path.join(exp_dir, BEST))


def read_checkpoint(path):
    """Load a trainer checkpoint onto the CPU; CheckpointError names the file and the problem."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({type(err).__name__}: "
                              f"{err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a trainer checkpoint (a {type(state).__name__})")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a trainer checkpoint, missing key(s) {missing}")
    return state


def load_latest(exp_dir):
    """The newest readable training state in ``exp_dir`` as ``(state, path)``; ``(None, None)`` if
    there is none. A corrupt ``checkpoint_last.pt`` falls back to ``checkpoint_prev.pt`` with a
    warning; if every checkpoint present is unreadable a CheckpointError is raised (rather than
    silently training from scratch over them).
    """
    errors = []
    for name in (LAST, PREV):
        path = os.path.join(exp_dir, name)
        if not os.path.exists(path):
            continue
        try:
            state = read_checkpoint(path)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors:
            message = f"{errors[0]}; resuming from {path} instead"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)
        return state, path
    if errors:
        raise CheckpointError("no readable checkpoint in " + exp_dir + ": " + "; ".join(errors))
    return None, None


def load_model_weights(path):
    """The model ``state_dict`` stored in a trainer checkpoint (for inference)."""
    return read_checkpoint(path)["model"]


def capture_rng_state():
    """The random generator states of this process: python, numpy, torch and (if any) CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    """Put back what :func:`capture_rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            logger.warning("checkpoint holds %d CUDA generator states but %d GPUs are visible; "
                           "CUDA generators not restored", len(state["cuda"]),
                           torch.cuda.device_count())
