"""Training checkpoints: atomic writes, the previous one kept, fallback on a corrupt file.

Files in the experiment directory:

* ``checkpoint_last.pt``: the latest training state (what a resume starts from);
* ``checkpoint_prev.pt``: the one before it (a resume falls back to it when the last one cannot be
  read, with a warning);
* ``checkpoint_best.pt``: the state at the best validation metric so far.

Every file is written to ``<name>.tmp`` first, flushed to disk and then renamed with
``os.replace`` (atomic on POSIX), so a killed job never leaves a half-written checkpoint under a
real name. A checkpoint is a dict with ``model``, ``optimizer``, ``scheduler``, ``scaler``,
``step``, ``epoch``, ``step_in_epoch``, ``rng_states`` (one per rank), ``config`` (the train
settings), ``run_config`` (the whole recipe config, when the entry point gave it), the
best-metric and early-stop bookkeeping; ``model`` holds the plain (un-wrapped) ``state_dict``.

Safe loading: a checkpoint holds nothing but tensors and plain python values (int, float, str,
bool, None, list, tuple, dict), RNG states included (:func:`capture_rng_state`), so it loads with
``torch.load(weights_only=True)``, which cannot run code carried by the file.
:func:`read_checkpoint` loads that way only; a file that needs a full unpickle is refused (:class:`UnsafeCheckpointError`,
naming the file and the pickled type) unless the caller passes ``trust=True``. Checkpoints written
by older versions (numpy arrays among the RNG states) are refused too; if you trust one,
``python -m s5lib.train.checkpoint --upgrade FILE`` rewrites it in the safe format.
"""
import argparse
import logging
import os
import random
import re
import shutil
import warnings
from collections import OrderedDict

import numpy as np
import torch

LAST = "checkpoint_last.pt"
PREV = "checkpoint_prev.pt"
BEST = "checkpoint_best.pt"
REQUIRED_KEYS = ("model", "optimizer", "step", "epoch", "step_in_epoch")
# what a weights-only torch.load accepts besides containers (and what we store)
PLAIN_SCALARS = (bool, int, float, str, type(None))

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


class UnsafeCheckpointError(CheckpointError):
    """The file pickles an object that a weights-only load does not allow (it could run code)."""


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


def _type_name(obj):
    kind = type(obj)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def check_plain(obj, where="state"):
    """Raise TypeError naming the first value under ``obj`` (as ``where[key]...``) that a
    weights-only load would refuse: anything but tensors, plain scalars, lists, tuples and dicts."""
    if torch.is_tensor(obj) or isinstance(obj, PLAIN_SCALARS + (torch.dtype, torch.device)):
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if not isinstance(key, PLAIN_SCALARS):
                raise TypeError(f"{where} has a key of type {_type_name(key)}")
            check_plain(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple, torch.Size):
        for index, value in enumerate(obj):
            check_plain(value, f"{where}[{index}]")
        return
    raise TypeError(f"{where} is a {_type_name(obj)}, which a weights-only load refuses")


def to_plain(obj, where="value"):
    """A copy of ``obj`` made of plain values only: numpy scalars become python numbers, numpy
    arrays tensors, dict subclasses dicts; anything else raises TypeError naming ``where``."""
    if torch.is_tensor(obj) or isinstance(obj, PLAIN_SCALARS):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, PLAIN_SCALARS):
                raise TypeError(f"{where} has a key of type {_type_name(key)}")
            out[key] = to_plain(value, f"{where}.{key}")
        return out
    if isinstance(obj, (list, tuple)):
        values = [to_plain(value, f"{where}[{index}]") for index, value in enumerate(obj)]
        return tuple(values) if type(obj) is tuple else values
    raise TypeError(f"{where} is a {_type_name(obj)}; only numbers, strings, booleans, None, lists "
                    "and dicts can be stored in a checkpoint")


def _write(obj, path):
    """``torch.save`` to ``path + '.tmp'`` and fsync it; returns the tmp path. Refuses (before
    writing) a state that could not be read back weights-only."""
    try:
        check_plain(obj)
    except TypeError as err:
        raise CheckpointError(f"{path}: not written, it could not be loaded weights-only: "
                              f"{err}") from None
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def save_atomic(obj, path):
    """``torch.save`` to ``path + '.tmp'``, fsync, then ``os.replace`` onto ``path``."""
    os.replace(_write(obj, path), path)
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
    tmp = _write(state, last)
    if os.path.exists(last):
        os.replace(last, prev)  # a crash right here leaves prev only: load_latest handles that
    os.replace(tmp, last)
    _fsync_dir(exp_dir)
    if is_best:
        copy_atomic(last, os.path.join(exp_dir, BEST))


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", re.S)


def read_checkpoint(path, trust=False):
    """Load a trainer checkpoint onto the CPU with ``torch.load(weights_only=True)``.

    A file that pickles other objects is refused with :class:`UnsafeCheckpointError` naming the
    file and the object's type, unless ``trust=True``: then it is fully unpickled (which can run
    code the file carries: only for files from a trusted source) and a warning is logged.
    Any other problem is a CheckpointError naming the file.
    """
    if trust:
        logger.warning("%s: loaded with a full unpickle (trust=True), which runs any code the file "
                       "carries", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        message = str(err)
        unsafe = _UNSUPPORTED_GLOBAL.search(message)
        if unsafe:
            raise UnsafeCheckpointError(
                f"{path}: refused: the file pickles a {unsafe.group(1).rstrip('.,')} object, "
                "which a weights-only load does not allow (unpickling it could run code). Checkpoints of "
                "this trainer hold tensors and plain values only; an older s5lib checkpoint that "
                "you trust can be rewritten with `python -m s5lib.train.checkpoint --upgrade "
                f"{path}` (or loaded with read_checkpoint(..., trust=True))") from None
        detail = _UNPICKLER_ERROR.search(message)
        detail = " ".join(detail.group(1).split()) if detail else message.strip()[:300]
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({type(err).__name__}: "
                              f"{detail})") from None
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
    silently training from scratch over them). A file refused as unsafe
    (:class:`UnsafeCheckpointError`) is never skipped: the error is raised at once, since resuming
    from an older file would then overwrite it.
    """
    errors = []
    for name in (LAST, PREV):
        path = os.path.join(exp_dir, name)
        if not os.path.exists(path):
            continue
        try:
            state = read_checkpoint(path)
        except UnsafeCheckpointError:
            raise
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


def load_model_weights(path, trust=False):
    """The model ``state_dict`` stored in a trainer checkpoint (for inference); weights-only load
    (see :func:`read_checkpoint` for ``trust``)."""
    return read_checkpoint(path, trust=trust)["model"]


def capture_rng_state():
    """The random generator states of this process: python, numpy, torch and (if any) CUDA, as
    tensors and plain values (a weights-only load reads them back)."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"bit_generator": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state(saved):
    if isinstance(saved, dict):  # this module's format
        return (saved["version"], tuple(int(x) for x in saved["internal"].tolist()),
                saved["gauss_next"])
    return saved  # random.getstate()'s tuple (checkpoints of older versions)


def _numpy_state(saved):
    if isinstance(saved, dict):
        return (saved["bit_generator"], saved["keys"].numpy().astype(np.uint32), saved["pos"],
                saved["has_gauss"], saved["cached_gaussian"])
    return saved


def restore_rng_state(state):
    """Put back what :func:`capture_rng_state` returned."""
    random.setstate(_python_state(state["python"]))
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            logger.warning("checkpoint holds %d CUDA generator states but %d GPUs are visible; "
                           "CUDA generators not restored", len(state["cuda"]),
                           torch.cuda.device_count())


def plain_rng_state(state):
    """An RNG state of either format (older checkpoints kept numpy arrays) in this module's."""
    version, internal, gauss_next = _python_state(state["python"])
    name, keys, pos, has_gauss, cached_gaussian = _numpy_state(state["numpy"])
    out = dict(state)
    out["python"] = {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                     "gauss_next": gauss_next}
    out["numpy"] = {"bit_generator": str(name),
                    "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}
    return out


def upgrade_checkpoint(path):
    """Rewrite a *trusted* checkpoint of an older version (numpy RNG states) in place, so that it
    loads weights-only. The file is fully unpickled once (a warning says so)."""
    state = read_checkpoint(path, trust=True)
    state["rng_states"] = [plain_rng_state(s) for s in state.get("rng_states") or []]
    save_atomic(state, path)  # refuses (CheckpointError) if anything else is not plain
    read_checkpoint(path)  # it now loads weights-only
    logger.info("%s: rewritten in the weights-only format", path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Rewrite trusted checkpoints of older s5lib "
                                     "versions so that they load weights-only.")
    parser.add_argument("--upgrade", nargs="+", required=True, metavar="FILE",
                        help="checkpoint file(s) to rewrite in place (only files you trust)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for path in args.upgrade:
        upgrade_checkpoint(path)


if __name__ == "__main__":
    main()
