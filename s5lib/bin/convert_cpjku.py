"""Convert a CP-JKU separator checkpoint (theMoro/dcase25task4 Lightning ``.ckpt``) into a model
dir that stage 4 loads.

    python -m s5lib.bin.convert_cpjku --checkpoint cpjku_separator.ckpt --out_dir exp/cpjku_released \
        [--refine_iterations 3]
    ./run.sh --stage 4 --separator_checkpoint exp/cpjku_released/checkpoint_best.pt \
        --separator_checkpoint_config exp/cpjku_released/config.yaml

The keys are mapped strictly (:mod:`s5lib.models.cpjku_convert`: every key follows a rule, every
key of our model is filled, shapes must match); the file is read weights-only unless
``--trust_checkpoint true``. Written: ``checkpoint_best.pt`` (a plain state_dict) and
``config.yaml`` (its ``model:`` section, with the architecture read from the keys).
``--refine_iterations``: the steps an iterative model runs at inference (CP-JKU evaluates with the
``max_iterations`` it was trained with, which the weights do not record; default 2).
"""
import os

import torch

from s5lib.bin.common import RecipeError, run_cli
from s5lib.config import parse_config, save_config
from s5lib.models.checkpoints import trust_checkpoints
from s5lib.models.cpjku_convert import load_cpjku_separator

DEFAULTS = {"checkpoint": "", "out_dir": "", "refine_iterations": None, "trust_checkpoint": False}


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    if not cfg["checkpoint"] or not cfg["out_dir"]:
        raise RecipeError("convert_cpjku: --checkpoint FILE and --out_dir DIR are required")
    trust_checkpoints(cfg["trust_checkpoint"])
    model, model_cfg = load_cpjku_separator(cfg["checkpoint"], cfg["refine_iterations"])
    os.makedirs(cfg["out_dir"], exist_ok=True)
    target = os.path.join(cfg["out_dir"], "checkpoint_best.pt")
    torch.save(model.state_dict(), target + ".tmp")
    os.replace(target + ".tmp", target)
    save_config({"model": model_cfg, "converted_from": os.path.abspath(cfg["checkpoint"])},
                os.path.join(cfg["out_dir"], "config.yaml"))
    n = sum(p.numel() for n_, p in model.named_parameters() if not n_.startswith("sed."))
    print(f"{cfg['checkpoint']}: CP-JKU separator -> {target} ({n:,} separator parameters; "
          f"time_film {model_cfg['time_film']}, injection {model_cfg['embedding_injection']}, "
          f"dprnn {model_cfg['dprnn']}, refine_iterations {model_cfg['refine_iterations']})")


if __name__ == "__main__":
    run_cli(main)
