"""Stage 4: tag and separate the test mixtures, write estimates under the official names.

    python -m s5lib.bin.infer --config conf/infer.yaml --data data \
        --tagger_exp exp/tagger_x --separator_exp exp/separator_y --out_dir exp/infer_z

For every label mode in ``label_modes``:

* ``estimated``: the tagger's labels (its best checkpoint) query the separator;
* ``oracle``: the reference labels do (separation-only evaluation);

the estimates go to ``<out_dir>/<mode>/estimates/`` as ``<mix>_<Label>.wav`` (2025) or
``<mix>_<slot>_<Label>.wav`` (2026, slot = the separator's output slot), with
``<out_dir>/<mode>/eval_results.json`` holding a probability per estimate (the tagger's
confidence; 1.0 for oracle labels). Runs batched on CPU or GPU (``--device``).
"""
import json
import logging
import os
import time

import torch
from tqdm import tqdm

from s5lib import constants
from s5lib.audio import write_audio
from s5lib.bin.common import (load_experiment, read_dataset_info, resolve_year, run_cli,
                              setup_logging, target_labels, write_experiment_config)
from s5lib.config import parse_config
from s5lib.data.datasets import PremixedMixtures
from s5lib.infer.separate import separate_batch
from s5lib.infer.tag import tag_batch
from s5lib.metrics.naming import source_filename
from s5lib.models.factory import build_separator, build_tagger

logger = logging.getLogger("infer")

DEFAULTS = {
    "data": "data",
    "tagger_exp": "",
    "separator_exp": "",
    "out_dir": "exp/infer",
    "year": None,
    "label_modes": ["estimated", "oracle"],
    "batch_size": 4,
    "num_workers": 0,
    "device": "auto",
    "decode": {"threshold": 0.5, "min_labels": 1, "max_labels": 3},
}


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_mode(mode, dataset, tagger, separator, out_dir, year, cfg, device):
    est_dir = os.path.join(out_dir, mode, "estimates")
    os.makedirs(est_dir, exist_ok=True)
    for f in os.listdir(est_dir):  # re-runs overwrite, never mix two runs
        os.unlink(os.path.join(est_dir, f))
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"],
                                         num_workers=cfg["num_workers"])
    decode = dict(cfg["decode"])
    if year == 2026:
        decode["min_labels"] = 0
    probabilities = []
    t0, n_written = time.time(), 0
    for batch in tqdm(loader, desc=f"infer ({mode} labels)", mininterval=5):
        mixture = batch["mixture"].to(device)
        if mode == "oracle":
            tagged = [[(label, 1.0) for label in labels] for labels in target_labels(batch)]
        else:
            tagged = tag_batch(tagger, mixture, **decode)
        estimates = separate_batch(separator, mixture, [[lbl for lbl, _ in t] for t in tagged])
        for b, index in enumerate(batch["index"].tolist()):
            name = dataset.names[index]
            entry = {"soundscape": name, "estimate": []}
            for slot, ((label, wave), (_, prob)) in enumerate(zip(estimates[b], tagged[b])):
                fname = source_filename(name, label, slot if year == 2026 else None)
                write_audio(os.path.join(est_dir, fname), wave.cpu().numpy(), constants.SAMPLE_RATE)
                entry["estimate"].append({"filename": fname, "label": label, "probability": float(prob)})
                n_written += 1
            probabilities.append(entry)
    seconds = time.time() - t0
    audio_seconds = len(dataset) * constants.DURATION_S
    with open(os.path.join(out_dir, mode, "eval_results.json"), "w") as f:
        json.dump({"probabilities": probabilities, "label_mode": mode,
                   "rtf": seconds / audio_seconds}, f, indent=1)
    logger.info("%s labels: %d estimates for %d mixtures in %.1f s (RTF %.3f)", mode, n_written,
                len(dataset), seconds, seconds / audio_seconds)


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    info = read_dataset_info(cfg["data"])
    year = resolve_year(cfg, info)
    out_dir = cfg["out_dir"]
    setup_logging(out_dir, "infer")
    write_experiment_config(cfg, out_dir)
    device = pick_device(cfg["device"])
    if not cfg["separator_exp"]:
        raise SystemExit("infer: --separator_exp is required")
    separator, _ = load_experiment(cfg["separator_exp"], build_separator)
    separator.to(device)
    tagger = None
    if "estimated" in cfg["label_modes"]:
        if not cfg["tagger_exp"]:
            raise SystemExit("infer: --tagger_exp is required for label mode 'estimated'")
        tagger, _ = load_experiment(cfg["tagger_exp"], build_tagger)
        tagger.to(device)
    dataset = PremixedMixtures(info["test_dir"], year=year)
    for mode in cfg["label_modes"]:
        if mode not in ("estimated", "oracle"):
            raise SystemExit(f"infer: unknown label mode {mode!r} (estimated, oracle)")
        run_mode(mode, dataset, tagger, separator, out_dir, year, cfg, device)


if __name__ == "__main__":
    run_cli(main)
