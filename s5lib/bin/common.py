"""Glue shared by the training and inference entry points (data sets, experiment dirs, logging).

The entry points are where data, models and training meet; the packages themselves do not
import each other sideways.
"""
import json
import logging
import os
import sys

import torch
import yaml

from s5lib import constants
from s5lib.config import save_config


class RecipeError(ValueError):
    pass


def user_errors():
    """Exception types that describe bad input (printed as one line, no traceback)."""
    from s5lib.audio import AudioError
    from s5lib.config import ConfigError
    from s5lib.data.layout import DataLayoutError
    from s5lib.data.synth import SynthesisError
    from s5lib.models.checkpoints import CheckpointError
    from s5lib.train.checkpoint import CheckpointError as TrainCheckpointError
    from s5lib.train.optim import OptimizerConfigError
    from s5lib.train.trainer import TrainConfigError
    return (RecipeError, AudioError, ConfigError, DataLayoutError, SynthesisError,
            CheckpointError, TrainCheckpointError, TrainConfigError, OptimizerConfigError,
            FileNotFoundError)


def run_cli(main):
    """Run an entry point; bad input ends it with ``ERROR: <what is wrong>`` and status 1."""
    try:
        main()
    except user_errors() as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(1)


def setup_logging(exp_dir=None, name="train"):
    handlers = [logging.StreamHandler(sys.stdout)]
    if exp_dir:
        os.makedirs(exp_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(exp_dir, f"{name}.log")))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def read_dataset_info(path):
    """The ``dataset.json`` written by stage 1 (paths of the bank, validation list, test set)."""
    if not path.endswith(".json"):
        path = os.path.join(path, "dataset.json")
    if not os.path.isfile(path):
        raise RecipeError(f"{path}: not found; run stage 1 (data preparation) first")
    with open(path) as f:
        info = json.load(f)
    for key in ("year", "bank_root", "valid_list", "test_dir"):
        if key not in info:
            raise RecipeError(f"{path}: missing entry {key!r}")
    return info


def resolve_year(cfg, info):
    """The rule set of a step: ``cfg['year']`` when given, else the data's; stored in ``cfg``."""
    cfg["year"] = int(cfg.get("year") or info["year"])
    return cfg["year"]


def start_training(cfg, info):
    """Common start of the training entry points.

    Joins the process group (torchrun) or runs alone, sets up logging (rank 0 writes
    ``<exp_dir>/train.log``), and opens the fixed validation mixtures. Returns
    ``(dist, synth_config, valid_set)``. The resolved ``config.yaml`` + ``run.sh`` are written by
    :func:`record_training_config` once the trainer has accepted the run (a resume with other
    settings is refused before anything is overwritten).
    """
    from s5lib.data.datasets import MetadataMixtures
    from s5lib.data.synth import SynthConfig
    from s5lib.train.distributed import init_distributed
    from s5lib.train.trainer import seed_everything
    dist = init_distributed(cfg["train"].get("device", "auto"))
    # the model is built after this: seed its initialisation (the same on every rank)
    seed_everything(int(cfg["train"].get("seed", 0)))
    setup_logging(cfg["exp_dir"] if dist.is_main else None, "train")
    synth = SynthConfig.from_dict(dict(cfg["synth"], year=cfg["year"]))
    valid_set = MetadataMixtures(info["valid_list"], info["bank_root"],
                                 info.get("valid_split", "valid"),
                                 cache_mb=cfg.get("valid_cache_mb", 0))
    return dist, synth, valid_set


def record_training_config(cfg, dist):
    """Rank 0 writes the resolved config and its replay script into the experiment dir."""
    if dist.is_main:
        write_experiment_config(cfg, cfg["exp_dir"])


def target_labels(batch):
    """Per item of a batch, the list of its target labels (slot order)."""
    return [[constants.CLASSES[c] for c in row[:int(n)].tolist()]
            for row, n in zip(batch["label_index"], batch["n_targets"])]


def write_experiment_config(cfg, exp_dir):
    """Save the resolved config and a ``run.sh`` that replays the step with it."""
    os.makedirs(exp_dir, exist_ok=True)
    save_config(cfg, os.path.join(exp_dir, "config.yaml"))
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = spec.name if spec else "?"
    with open(os.path.join(exp_dir, "run.sh"), "w") as f:
        f.write("#!/usr/bin/env bash\n# Replays this step with its resolved config.\n")
        f.write(f"cd {os.getcwd()!r} && python -m {module} --config {os.path.join(exp_dir, 'config.yaml')!r}\n")


def load_experiment(exp_dir, role, checkpoint="checkpoint_best.pt"):
    """Rebuild a trained model from its experiment dir (``config.yaml`` + checkpoint), for inference.

    ``role`` is ``tagger`` or ``separator``; the checkpoint is read weights-only and loaded
    strictly (see :func:`s5lib.models.factory.load_model_file`). Returns ``(model, cfg)``.
    """
    from s5lib.models.factory import load_model_file
    cfg_path = os.path.join(exp_dir, "config.yaml")
    if not os.path.isfile(cfg_path):
        raise RecipeError(f"{cfg_path}: not found; was the model trained (stage 2/3)?")
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)
    path = os.path.join(exp_dir, checkpoint)
    if not os.path.isfile(path):
        path = os.path.join(exp_dir, "checkpoint_last.pt")
    if not os.path.isfile(path):
        raise RecipeError(f"{exp_dir}: no checkpoint_best.pt or checkpoint_last.pt")
    model, _, description = load_model_file(path, role, model_cfg=cfg["model"])
    logging.getLogger("common").info("%s", description)
    return model, cfg


def segment_starts(index, total, n):
    """First sample of the ``n``-sample training window of each item (from its index alone)."""
    return (index.to(torch.int64) * 2654435761 + 12345) % (total - n)


def _window_length(batch, seconds, sample_rate):
    """(window, total) samples of a training crop; None when there is nothing to cut."""
    if not seconds:
        return None
    n, total = int(seconds * sample_rate), batch["mixture"].shape[-1]
    return None if n >= total else (n, total)


def crop_batch(batch, seconds, sample_rate, keys=("mixture", "references", "wet"), min_energy=0.05):
    """Cut the same random window out of every waveform of a batch (training on segments).

    The window start comes from the items' indices, so it is reproducible and the same for any
    number of processes. A target whose reference keeps less than ``min_energy`` of its energy
    inside the window is no longer a target of the cropped item: its slot becomes silent
    (``active`` false, ``slot_onehot`` zero, ``label_index`` silence), so no loss asks for a
    source that is not there. Returns the batch unchanged when ``seconds`` is empty.
    """
    window = _window_length(batch, seconds, sample_rate)
    if window is None:
        return batch
    n, total = window
    starts = segment_starts(batch["index"], total, n)
    out = dict(batch)
    for key in keys:
        if key not in batch:
            continue
        x = batch[key]
        out[key] = torch.stack([x[b, ..., s:s + n] for b, s in enumerate(starts.tolist())])
    if "references" in batch and "active" in batch:
        full = batch["references"].pow(2).sum(-1)
        kept = out["references"].pow(2).sum(-1)
        present = batch["active"] & (kept > min_energy * full)
        out["active"] = present
        if "slot_onehot" in batch:
            out["slot_onehot"] = batch["slot_onehot"] * present[..., None].to(batch["slot_onehot"].dtype)
        if "label_index" in batch:
            silence = torch.full_like(batch["label_index"], constants.SILENCE_INDEX)
            out["label_index"] = torch.where(present, batch["label_index"], silence)
        out["references"] = out["references"] * present[..., None].to(out["references"].dtype)
    return out


def crop_mixit_batch(batch, seconds, sample_rate):
    """:func:`crop_batch` for MixIT batches (``mixture`` and ``mixture2``, no references): both
    mixtures are cut to their item's window, and a label whose event (``onset`` .. ``offset``,
    the metadata's weak-label timing) does not overlap the window is no longer a query."""
    window = _window_length(batch, seconds, sample_rate)
    if window is None:
        return batch
    n, total = window
    out = crop_batch(batch, seconds, sample_rate, keys=("mixture", "mixture2"))
    starts = segment_starts(batch["index"], total, n)[:, None].to(batch["onset"].device)
    for suffix in ("", "2"):
        inside = (batch["onset" + suffix] < starts + n) & (batch["offset" + suffix] > starts)
        present = batch["active" + suffix] & inside
        out["active" + suffix] = present
        onehot = batch["slot_onehot" + suffix]
        out["slot_onehot" + suffix] = onehot * present[..., None].to(onehot.dtype)
    return out
