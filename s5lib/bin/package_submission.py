"""Package the estimates of an evaluation set for DCASE Task 4 (S5) submission.

    python -m s5lib.bin.package_submission --year 2025|2026 \\
        --est_dir exp/infer_eval/estimated --out exp/submission \\
        --soundscape_dir EVAL/soundscape --team Lastname_Institution --index 1 \\
        [--system "System name"] [--abbreviation Short] [--nparams N] \\
        [--dev_summary exp/score_dev/summary.json] [--dev_results dev_set_test_results.json] \\
        [--subtype PCM_16|PCM_24|FLOAT] [--check_only true] [--overwrite true]

``est_dir`` is one label mode of stage 4 (``<out_dir>/estimated``: ``estimates/`` and
``eval_results.json``). Everything is checked first (names, completeness against
``soundscape_dir``, mono 32 kHz of the mixture length, no NaN, probabilities in [0, 1], no
stray files); then ``out`` receives ``<label>_out.zip`` (2025) or ``<label>.zip`` with
``eval_results.json`` inside (2026), and ``<label>.meta.yaml`` to complete by hand. The
layouts and their sources are described in :mod:`s5lib.infer.submission`.

``nparams`` (2026: required in ``eval_results.json``) is counted from the tagger and separator
experiments named in the stage-4 ``config.yaml`` beside ``est_dir`` when not given.
Any key of ``DEFAULTS`` may also come from ``--config file.yaml``.
"""
import logging
import os

import yaml

from s5lib.bin.common import RecipeError, run_cli, setup_logging
from s5lib.models.checkpoints import CheckpointError
from s5lib.config import parse_config
from s5lib.infer.submission import SubmissionError, package_submission

logger = logging.getLogger("package_submission")

DEFAULTS = {
    "year": None,            # 2025 or 2026 (required)
    "est_dir": None,         # <infer out_dir>/estimated
    "out": None,             # folder receiving the zip and the meta file
    "soundscape_dir": None,  # the evaluation mixtures, to check completeness and lengths
    "team": None,            # <Lastname>_<Institution> of the corresponding author
    "index": 1,              # submission index 1..4
    "system": "",            # system name for the meta file
    "abbreviation": "",      # at most 10 characters
    "nparams": None,         # parameters of the whole system; counted when empty
    "dev_results": None,     # 2026: a dev_set_test_results.json to ship in the zip
    "dev_summary": None,     # stage-5 summary.json of the dev test set, for the meta file
    "subtype": "PCM_16",     # wav encoding of the packaged estimates
    "compression": "deflated",
    "check_only": False,     # run every check, write nothing
    "overwrite": False,
}


def infer_config_path(est_dir):
    return os.path.join(os.path.dirname(os.path.abspath(est_dir)), "config.yaml")


def read_infer_config(est_dir):
    """The stage-4 config written beside the label-mode folders, or None."""
    path = infer_config_path(est_dir)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            cfg = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise RecipeError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(cfg, dict) or "separator_exp" not in cfg:
        return None
    return cfg


def count_system_parameters(infer_cfg, path):
    """Parameters of the tagger plus the separator of a stage-4 run (the models are built from
    their configs; weights are read only for a model file given without a config)."""
    from s5lib.models import factory
    total = 0
    for role, builder in (("tagger", factory.build_tagger), ("separator", factory.build_separator)):
        model_file = infer_cfg.get(f"{role}_checkpoint")
        model_yaml = infer_cfg.get(f"{role}_config")
        exp = infer_cfg.get(f"{role}_exp")
        if model_file and not model_yaml:
            model = factory.load_model_file(model_file, role, None)[0]
        elif model_file or exp:
            config_path = model_yaml if model_file else os.path.join(exp, "config.yaml")
            model_cfg = factory.read_model_config(config_path, role)
            for key in ("init_checkpoint", "pretrained_m2d"):  # weights only: same shapes
                model_cfg.pop(key, None)
            model = builder(model_cfg)
        else:
            raise RecipeError(f"{path}: neither {role}_exp nor {role}_checkpoint is set")
        total += sum(p.numel() for p in model.parameters())
    return total


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    setup_logging(None, "package_submission")
    for key in ("year", "est_dir", "out"):
        if cfg[key] in (None, ""):
            raise RecipeError(f"package_submission: --{key} is required")
    try:
        year = int(cfg["year"])
    except (TypeError, ValueError):
        raise RecipeError(f"package_submission: --year must be 2025 or 2026, got "
                          f"{cfg['year']!r}") from None
    infer_cfg = read_infer_config(cfg["est_dir"])
    needed = year == 2026 and not cfg["check_only"]
    nparams = cfg["nparams"]
    if nparams in (None, ""):
        nparams = None
        if infer_cfg is not None:
            path = infer_config_path(cfg["est_dir"])
            try:
                nparams = count_system_parameters(infer_cfg, path)
                logger.info("nparams = %d (tagger + separator of %s)", nparams, path)
            except (RecipeError, CheckpointError) as err:
                if needed:
                    raise RecipeError(f"cannot count the system's parameters from {path} "
                                      f"({err}); pass --nparams N") from None
                logger.warning("WARNING: parameters not counted (%s); the meta file keeps "
                               "a placeholder", err)
        elif needed:
            raise RecipeError(f"2026 needs nparams: no stage-4 config.yaml at "
                              f"{infer_config_path(cfg['est_dir'])} to count it from; pass "
                              f"--nparams N")
    config = {"infer": infer_cfg} if infer_cfg is not None else {}
    try:
        result = package_submission(
            cfg["est_dir"], cfg["out"], year, cfg["team"], index=cfg["index"],
            soundscape_dir=cfg["soundscape_dir"], system_name=str(cfg["system"] or ""),
            abbreviation=str(cfg["abbreviation"] or ""), nparams=nparams, config=config,
            dev_results=cfg["dev_results"], dev_summary=cfg["dev_summary"],
            subtype=cfg["subtype"], compression=cfg["compression"],
            overwrite=bool(cfg["overwrite"]), check_only=bool(cfg["check_only"]))
    except SubmissionError as err:
        raise RecipeError(str(err)) from None
    if cfg["check_only"]:
        logger.info("check only: %d estimates of %d mixtures are ready for %s",
                    result["n_estimates"], result["n_mixtures"], result["label"])
    else:
        logger.info("submission %s: %s, %s (fill the FILL_ME values of the meta file; add "
                    "the technical report)", result["label"], result["zip"], result["meta"])
    return result


if __name__ == "__main__":
    run_cli(main)
