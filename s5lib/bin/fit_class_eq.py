"""Fit the "class EQ" anchor (one real gain per class and STFT bin, :mod:`s5lib.infer.class_eq`)
on on-the-fly training mixtures of a stage-1 data dir.

    python -m s5lib.bin.fit_class_eq --data data --out exp/class_eq_data.npz [--n_mixtures 300]

The training mixtures follow the data's rule set and are drawn with their own seed (not a
training seed); scoring then uses ``python -m s5lib.bin.score --anchor class_eq --class_eq FILE``.
"""
import time

import torch

from s5lib.bin.common import RecipeError, read_dataset_info, resolve_year, run_cli
from s5lib.config import parse_config
from s5lib.data.datasets import OnTheFlyMixtures
from s5lib.data.synth import SynthConfig
from s5lib.infer.class_eq import fit_class_eq, save_gains

DEFAULTS = {"data": "data", "out": "", "year": None, "n_mixtures": 300, "seed": 7919, "nj": 1}


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    if not cfg["out"]:
        raise RecipeError("fit_class_eq: --out FILE.npz is required")
    info = read_dataset_info(cfg["data"])
    year = resolve_year(cfg, info)
    if int(cfg["n_mixtures"]) < 1:
        raise RecipeError(f"fit_class_eq: --n_mixtures must be >= 1, got {cfg['n_mixtures']}")
    start = time.time()
    dataset = OnTheFlyMixtures(info["bank_root"], info.get("train_split", "train"),
                               SynthConfig(year=year), epoch_size=int(cfg["n_mixtures"]),
                               seed=int(cfg["seed"]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=int(cfg["nj"]) - 1
                                         if int(cfg["nj"]) > 1 else 0)
    gains, count = fit_class_eq(loader)
    save_gains(cfg["out"], gains, year=year, n_mixtures=count, seed=int(cfg["seed"]))
    print(f"class EQ: gains fitted on {count} training mixtures ({year} rules) in "
          f"{time.time() - start:.1f} s -> {cfg['out']}")


if __name__ == "__main__":
    run_cli(main)
