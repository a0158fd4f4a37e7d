"""Stage 4: tag and separate the test mixtures, write estimates under the official names.

    python -m s5lib.bin.infer --config conf/infer.yaml --data data \\
        --tagger_exp exp/tagger_x --separator_exp exp/separator_y --out_dir exp/infer_z
    python -m s5lib.bin.infer --config conf/infer.yaml --data data \\
        --tagger_checkpoint m2dat.ckpt --separator_checkpoint resunetk.ckpt --out_dir exp/official

The models come from experiment dirs of stages 2/3 (``--tagger_exp``, ``--separator_exp``: their
``config.yaml`` and ``checkpoint_best.pt``) or from model files (``--tagger_checkpoint``,
``--separator_checkpoint``): the organisers' released checkpoints (2025 ``m2dat.ckpt``,
``resunet.ckpt``, ``resunetk.ckpt``; 2026 ``m2dat_1c.ckpt``, ``m2dat_4c.ckpt``, ``resunetk.ckpt``),
our ``checkpoint_*.pt`` or plain state_dict files. The architecture is read from the file where
it can be (tagger year and 1c/4c, ResUNet vs ResUNetK, sizes) or from ``--tagger_config`` /
``--separator_config`` (a YAML with a ``model:`` section); loading is strict, weights-only (a file
that needs a full unpickle is refused unless ``--trust_checkpoint true``) and nothing is trained:
the models run in eval mode, BatchNorm statistics untouched.

For every label mode in ``label_modes``:

* ``estimated``: the tagger's labels query the separator (``decode:`` options, see
  :mod:`s5lib.infer.tag`);
* ``oracle``: the reference labels do (separation-only evaluation); skipped with a note when the
  test folder has no ``oracle_target/`` (an evaluation set);

* ``baseline_tagger``: the labels of a second tagger (``--baseline_tagger_exp`` or
  ``--baseline_tagger_checkpoint``, e.g. the DCASE baseline's next to CP-JKU's SED tagger);

``procedure: iterative`` runs a refining separator (CP-JKU) for ``refine_steps`` steps and writes
every step (``<mode>_step<k>/``, the last one as ``<mode>/``), so stage 5 scores each step;
``procedure: redux`` runs REDUX's verify / subtract strategy (``strategy:`` options, see
:mod:`s5lib.infer.redux`) for the tagger label modes, and writes each mixture's path (cases,
rounds) into ``eval_results.json`` and the counts into ``<mode>/strategy.json``;
``procedure: end_to_end`` runs a separator that labels its own slots (KUBIG, no tagger: label
mode ``estimated`` only; slots of class silence dropped; each estimate's DoA, or null under
``end_to_end.doa_threshold``, in ``eval_results.json``; 2026 names use the model's slot number);
``procedure: caption_queried`` runs a text-queried LASS separator (``--separator_exp`` a
train_lass experiment, egs/srpol): each label becomes a caption (``caption_query:`` options, see
:mod:`s5lib.infer.caption_query`) that queries it on channel 0 at 16 kHz;
the estimates go to ``<out_dir>/<mode>/estimates/`` as ``<mix>_<Label>.wav`` (2025) or
``<mix>_<slot>_<Label>.wav`` (2026, slot = the separator's output slot), with
``<out_dir>/<mode>/eval_results.json`` holding a probability per estimate (the tagger's
confidence; 1.0 for oracle labels). ``--test_dir`` points at another folder of soundscapes (e.g.
the evaluation set, ``<dir>/soundscape/*.wav``) than the data dir's test set. ``output_gain``
scales every written estimate: a number, or ``valid`` to fit one gain per step on the data
dir's validation mixtures with oracle labels (:mod:`s5lib.infer.calibrate`; recorded in
``<out_dir>/output_gain.json``). Runs batched on CPU or GPU (``--device``).
"""
import json
import logging
import os
import time

import torch
from tqdm import tqdm

from s5lib import constants
from s5lib.audio import write_audio
from s5lib.bin.common import (RecipeError, load_experiment, read_dataset_info, resolve_year,
                              run_cli, setup_logging, target_labels, write_experiment_config)
from s5lib.config import parse_config
from s5lib.data.datasets import MetadataMixtures, PremixedMixtures
from s5lib.infer.calibrate import calibrate, check_output_gain
from s5lib.infer.caption_query import (CAPTION_QUERY_DEFAULTS, is_lass_experiment,
                                       load_caption_queried)
from s5lib.infer.end_to_end import E2E_DEFAULTS, check_end_to_end, separate_end_to_end
from s5lib.infer.redux import STRATEGY_DEFAULTS, check_strategy, model_strategy, summarise
from s5lib.infer.refine import check_procedure, separate_batch_steps
from s5lib.infer.separate import separate_batch
from s5lib.infer.tag import DECODE_DEFAULTS, MULTILABEL_KINDS, check_decode, tag_batch
from s5lib.metrics.naming import source_filename
from s5lib.models.checkpoints import trust_checkpoints
from s5lib.models.factory import SINGLE_QUERY_KINDS, load_model_file

logger = logging.getLogger("infer")

DEFAULTS = {
    "data": "data",
    "tagger_exp": "",
    "separator_exp": "",
    "tagger_checkpoint": "",     # a model file instead of tagger_exp
    "separator_checkpoint": "",  # a model file instead of separator_exp
    "tagger_config": "",         # YAML whose model: section describes tagger_checkpoint
    "separator_config": "",      # YAML whose model: section describes separator_checkpoint
    "trust_checkpoint": False,   # allow a full unpickle of files weights-only loading refuses
    "test_dir": "",              # default: the data dir's test set
    "max_mixtures": None,        # only the first N mixtures (quick checks)
    "out_dir": "exp/infer",
    "year": None,
    "label_modes": ["estimated", "oracle"],
    "batch_size": 4,
    "num_workers": 0,
    "device": "auto",
    "decode": dict(DECODE_DEFAULTS),
    # label mode baseline_tagger: the DCASE baseline's tagger (an egs/baseline stage-2 dir or a
    # released m2dat.ckpt) next to the recipe's own tagger (CP-JKU's Table 1)
    "baseline_tagger_exp": "",
    "baseline_tagger_checkpoint": "",
    "baseline_tagger_config": "",
    # single: one separator call per query; iterative: refine_steps refinement steps (a separator
    # trained with refine_iterations > 1), every step written when keep_steps (<mode>_step<k>/)
    "procedure": "single",
    "refine_steps": 1,
    "keep_steps": True,
    # procedure redux: REDUX's classify / separate / verify / subtract strategy (s5lib.infer.redux)
    # for the tagger label modes; oracle labels are separated once
    "strategy": dict(STRATEGY_DEFAULTS),
    # procedure end_to_end: a separator that labels its own slots (KUBIG; s5lib.infer.end_to_end):
    # no tagger; label mode estimated only; each estimate's DoA goes into eval_results.json
    "end_to_end": dict(E2E_DEFAULTS),
    # procedure caption_queried: a LASS separator queried with one caption per label
    "caption_query": dict(CAPTION_QUERY_DEFAULTS),
    # single-query separators: a (mixture, label) separated for one label mode is reused by the
    # others (the oracle and the tagger's label lists overlap), up to this many MB of waveforms
    "cache_mb": 4096,
    # a positive number scales every written estimate; "valid" fits that scale (one per refinement
    # step) on the data dir's validation mixtures with oracle labels (s5lib.infer.calibrate) and
    # records it in <out_dir>/output_gain.json; 1.0 writes the separator's output as it is
    "output_gain": 1.0,
    "calibration_mixtures": None,  # output_gain valid: only the first N validation mixtures
}
LABEL_MODES = ("estimated", "oracle", "baseline_tagger")
TAGGER_YEAR = {"m2d_2025": 2025, "sed": 2025, "m2d_2026": 2026, "m2d_2026_4c": 2026}


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def step_dir_names(mode, steps, keep_steps):
    """Output dir of each refinement step: the last step is ``<mode>``, earlier ones (when
    ``keep_steps``) ``<mode>_step<k>``; None for a step that is not written."""
    return [mode if k == steps else (f"{mode}_step{k}" if keep_steps else None)
            for k in range(1, steps + 1)]


def clear_dir(path):
    os.makedirs(path, exist_ok=True)
    for f in os.listdir(path):  # re-runs overwrite, never mix two runs
        os.unlink(os.path.join(path, f))


def separate_rows(separator, mixture, label_lists, cfg, steps):
    """Per refinement step (one entry for ``procedure: single``), the estimates of every label."""
    if cfg["procedure"] == "iterative":
        return separate_batch_steps(separator, mixture, label_lists, steps)
    return [separate_batch(separator, mixture, label_lists)]


class EstimateCache:
    """(mixture index, label) -> per-step estimates, shared by the label modes of one run: a
    single-query separator's estimate depends on the mixture and the queried label only, so a
    label that the oracle list and the tagger (or two taggers) share is separated once. Holds at
    most ``max_mb`` of waveforms (then stops adding)."""

    def __init__(self, max_mb):
        self.entries, self.bytes, self.max_bytes = {}, 0, float(max_mb) * 2 ** 20

    def add(self, key, waves):
        size = sum(w.numel() * w.element_size() for w in waves)
        if self.bytes + size <= self.max_bytes:
            self.entries[key] = [w.cpu() for w in waves]
            self.bytes += size


def separate_cached(separator, mixture, indices, label_lists, cfg, steps, cache):
    """As :func:`separate_rows`, reusing (and filling) ``cache`` (None: no reuse)."""
    if cache is None:
        return separate_rows(separator, mixture, label_lists, cfg, steps)
    missing = [[label for label in dict.fromkeys(labels) if (index, label) not in cache.entries]
               for index, labels in zip(indices, label_lists)]
    fresh = {}
    rows = [b for b, labels in enumerate(missing) if labels]
    if rows:
        per_step = separate_rows(separator, mixture[rows], [missing[b] for b in rows], cfg, steps)
        for j, b in enumerate(rows):
            for position, label in enumerate(missing[b]):
                waves = [step_estimates[j][position][1] for step_estimates in per_step]
                fresh[(indices[b], label)] = waves
                cache.add((indices[b], label), waves)
    n_steps = steps if cfg["procedure"] == "iterative" else 1
    out = []
    for k in range(n_steps):
        out.append([[(label, (fresh.get((index, label)) or cache.entries[(index, label)])[k])
                     for label in labels] for index, labels in zip(indices, label_lists)])
    return out


def run_mode(mode, dataset, tagger, separator, out_dir, year, cfg, device, steps=1, cache=None,
             gains=None):
    """Decode one label mode; ``gains`` (one per step, default 1) scale the written estimates."""
    names = step_dir_names(mode, steps, cfg["keep_steps"])
    gains = list(gains) if gains is not None else [1.0] * len(names)
    for name in filter(None, names):
        clear_dir(os.path.join(out_dir, name, "estimates"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"],
                                         num_workers=cfg["num_workers"])
    probabilities = [[] for _ in names]
    t0, n_written = time.time(), 0
    strategy = None
    if cfg["procedure"] == "redux" and mode != "oracle":
        strategy = model_strategy(tagger, separator, cfg["decode"], cfg["strategy"])
    records = {}
    for batch in tqdm(loader, desc=f"infer ({mode} labels)", mininterval=5):
        mixture = batch["mixture"].to(device)
        directions = None
        if cfg["procedure"] == "end_to_end":
            decoded = separate_end_to_end(separator, mixture, cfg["end_to_end"]["doa_threshold"])
            tagged = [[(d["label"], d["probability"]) for d in row] for row in decoded]
            per_step = [[[(d["label"], d["waveform"]) for d in row] for row in decoded]]
            directions = [[(d["slot"], d["doa"]) for d in row] for row in decoded]
        elif strategy is not None:
            outputs, paths = strategy.run(mixture)
            tagged = [[(label, prob) for label, _, prob in row] for row in outputs]
            per_step = [[[(label, wave) for label, wave, _ in row] for row in outputs]]
            records.update(zip(batch["index"].tolist(), paths))
        else:
            if mode == "oracle":
                tagged = [[(label, 1.0) for label in labels] for labels in target_labels(batch)]
            else:
                tagged = tag_batch(tagger, mixture, **cfg["decode"])
            label_lists = [[lbl for lbl, _ in t] for t in tagged]
            per_step = separate_cached(separator, mixture, batch["index"].tolist(), label_lists, cfg,
                                       steps, cache)
        for step_name, estimates, probs, gain in zip(names, per_step, probabilities, gains):
            if step_name is None:
                continue
            est_dir = os.path.join(out_dir, step_name, "estimates")
            for b, index in enumerate(batch["index"].tolist()):
                name = dataset.names[index]
                entry = {"soundscape": name, "estimate": []}
                if index in records:
                    entry["strategy"] = records[index]
                for slot, ((label, wave), (_, prob)) in enumerate(zip(estimates[b], tagged[b])):
                    record = {}
                    if directions is not None:  # the model's own slot number and its DoA
                        slot, record["doa"] = directions[b][slot]
                    fname = source_filename(name, label, slot if year == 2026 else None)
                    if gain != 1.0:
                        wave = wave * gain
                    write_audio(os.path.join(est_dir, fname), wave.cpu().numpy(), constants.SAMPLE_RATE)
                    entry["estimate"].append({"filename": fname, "label": label,
                                              "probability": float(prob), **record})
                    n_written += 1
                probs.append(entry)
    seconds = time.time() - t0
    audio_seconds = len(dataset) * constants.DURATION_S
    for k, (step_name, probs) in enumerate(zip(names, probabilities), start=1):
        if step_name is None:
            continue
        with open(os.path.join(out_dir, step_name, "eval_results.json"), "w") as f:
            json.dump({"probabilities": probs, "label_mode": mode, "refine_step": k,
                       "refine_steps": steps, "rtf": seconds / audio_seconds}, f, indent=1)
    if strategy is not None:
        summary = summarise([records[i] for i in sorted(records)])
        with open(os.path.join(out_dir, mode, "strategy.json"), "w") as f:
            json.dump(summary, f, indent=1)
        logger.info("%s labels, strategy: final case %s, first-round case %s, rounds %s", mode,
                    summary["final_case"], summary["first_case"], summary["rounds"])
    logger.info("%s labels: %d estimates for %d mixtures (%d step%s) in %.1f s (RTF %.3f)", mode,
                n_written, len(dataset), steps, "s" if steps > 1 else "", seconds,
                seconds / audio_seconds)


def load_role(cfg, role, name=None):
    """The tagger or separator of this run, from its model file or its experiment dir
    (``name``: the option prefix, e.g. ``baseline_tagger``; default the role)."""
    name = name or role
    path, exp_dir = cfg[f"{name}_checkpoint"], cfg[f"{name}_exp"]
    if path:
        model, _, description = load_model_file(path, role, cfg[f"{name}_config"] or None)
        logger.info("%s: %s", name, description)
        return model
    if not exp_dir:
        raise RecipeError(f"infer: give --{name}_exp DIR (stage {2 if role == 'tagger' else 3}) "
                          f"or --{name}_checkpoint FILE")
    model, _ = load_experiment(exp_dir, role)
    return model


def load_tagger(cfg, name, year, device):
    tagger = load_role(cfg, "tagger", name).to(device)
    tagger_year = TAGGER_YEAR.get(tagger.kind)
    if tagger_year is not None and tagger_year != year:
        raise RecipeError(f"infer: the {name} is a {tagger.kind} model ({tagger_year} rules) but "
                          f"this run follows the {year} rules (--year)")
    return tagger  # its decode options are checked in main, once for both taggers


def open_test_set(cfg, info, year):
    """The test mixtures; references only where the folder has them (not on evaluation sets)."""
    test_dir = cfg["test_dir"] or info["test_dir"]
    has_references = os.path.isdir(os.path.join(test_dir, "oracle_target"))
    dataset = PremixedMixtures(test_dir, year=year, with_references=has_references)
    if cfg["max_mixtures"]:
        dataset.names = dataset.names[:int(cfg["max_mixtures"])]
    return dataset, test_dir, has_references


def output_gains(cfg, info, separator, year, device, steps, out_dir):
    """The gain of every written step: ``output_gain`` as given, or fitted on the validation
    mixtures (oracle labels, the run's procedure and steps) and recorded in output_gain.json."""
    n_steps = steps  # 1 unless procedure iterative
    try:
        gain = check_output_gain(cfg["output_gain"])
    except ValueError as err:
        raise RecipeError(f"infer: {err}") from None
    if gain != "valid":
        return [gain] * n_steps
    if cfg["procedure"] not in ("single", "iterative", "caption_queried"):
        raise RecipeError(f"infer: output_gain valid fits the gain on oracle-label queries; "
                          f"procedure {cfg['procedure']} does not separate label queries "
                          "(give output_gain a number)")
    valid_list = info.get("valid_list")
    if not valid_list or not os.path.isfile(valid_list):
        raise RecipeError(f"infer: output_gain valid needs the data dir's validation set, and "
                          f"{os.path.join(cfg['data'], 'dataset.json')} names none that exists "
                          f"({valid_list!r}); give output_gain a number")
    if cfg["separator_checkpoint"]:
        logger.warning("output_gain valid: the estimates of %s are scaled by a gain fitted on the "
                       "validation set; for a released model's own numbers (the official decode) "
                       "give output_gain 1.0 (egs/baseline: conf/full/infer.yaml)",
                       cfg["separator_checkpoint"])
    valid_set = MetadataMixtures(valid_list, info["bank_root"], info.get("valid_split", "valid"))
    start = time.time()
    fits = calibrate(lambda mixture, labels: separate_rows(separator, mixture, labels, cfg, steps),
                     valid_set, year, n_steps, batch_size=cfg["batch_size"], device=device,
                     max_mixtures=cfg["calibration_mixtures"])
    metric = "CA-SDRi" if year == 2025 else "CAPI-SDRi"
    for k, fit in enumerate(fits, start=1):
        logger.info("output gain%s %.2f, fitted on %d validation mixtures (%d pairs, oracle "
                    "labels): %s %.2f dB at gain 1, %.2f dB at %.2f", f" of step {k}" if n_steps > 1
                    else "", fit["gain"], fit["mixtures"], fit["pairs"], metric, fit["score_at_1"],
                    fit["score"], fit["gain"])
    with open(os.path.join(out_dir, "output_gain.json"), "w") as f:
        json.dump({"metric": metric, "valid_list": valid_list, "seconds": time.time() - start,
                   "steps": fits}, f, indent=1)
    return [fit["gain"] for fit in fits]


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    if cfg["test_dir"] and cfg["year"] and not os.path.isfile(os.path.join(cfg["data"], "dataset.json")):
        info = {"test_dir": cfg["test_dir"], "year": cfg["year"]}  # e.g. an evaluation set alone
    else:
        info = read_dataset_info(cfg["data"])
    year = resolve_year(cfg, info)
    modes = list(cfg["label_modes"])
    if (cfg["baseline_tagger_exp"] or cfg["baseline_tagger_checkpoint"]) and "baseline_tagger" not in modes:
        modes.append("baseline_tagger")  # a baseline tagger given is a baseline tagger decoded
    bad = [m for m in modes if m not in LABEL_MODES]
    if bad:
        raise RecipeError(f"infer: unknown label mode(s) {bad} (known: {', '.join(LABEL_MODES)})")
    out_dir = cfg["out_dir"]
    setup_logging(out_dir, "infer")
    trust_checkpoints(cfg["trust_checkpoint"])
    dataset, test_dir, has_references = open_test_set(cfg, info, year)
    if not has_references and "oracle" in modes:
        logger.warning("%s has no oracle_target/ (an evaluation set): label mode 'oracle' skipped, "
                       "and there is nothing to score", test_dir)
        modes.remove("oracle")
    device = pick_device(cfg["device"])
    if cfg["procedure"] == "caption_queried" or is_lass_experiment(cfg["separator_exp"]):
        if cfg["separator_checkpoint"] or not is_lass_experiment(cfg["separator_exp"]):
            raise RecipeError("infer: procedure caption_queried reads a train_lass experiment "
                              "(--separator_exp DIR whose config has model.type lass)")
        try:
            separator = load_caption_queried(cfg["separator_exp"], cfg["caption_query"],
                                             trust=bool(cfg["trust_checkpoint"])).to(device)
        except ValueError as err:
            raise RecipeError(f"infer: {err}") from None
        logger.info("caption-queried LASS separator %s; captions: %s", cfg["separator_exp"],
                    "; ".join(f"{c} -> {separator.caption_of(c)!r}" for c in constants.CLASSES[:3]))
    else:
        separator = load_role(cfg, "separator").to(device)
    try:
        steps = check_procedure(separator, cfg["procedure"], cfg["refine_steps"])
        cfg["strategy"] = check_strategy(cfg["strategy"])
        cfg["end_to_end"] = check_end_to_end(cfg["end_to_end"])
    except ValueError as err:
        raise RecipeError(f"infer: {err}") from None
    if cfg["procedure"] == "end_to_end":  # the separator's own labels; nothing to query
        dropped = [m for m in modes if m != "estimated"]
        if dropped:
            logger.info("procedure end_to_end: label mode(s) %s skipped (the separator labels its "
                        "own slots; no label list queries it)", dropped)
        modes = ["estimated"]
    taggers = {}
    for mode, name in (("estimated", "tagger"), ("baseline_tagger", "baseline_tagger")):
        if mode in modes and cfg["procedure"] != "end_to_end":
            taggers[mode] = load_tagger(cfg, name, year, device)
    kinds = {getattr(t, "kind", "m2d_2025") for t in taggers.values()}
    try:  # one decode section serves both taggers: both must be read the same way
        if len({k in MULTILABEL_KINDS for k in kinds}) > 1:
            raise ValueError(f"the taggers are of kinds {sorted(kinds)}: multi-label and slot "
                             "taggers cannot share one decode section")
        if kinds:
            cfg["decode"] = check_decode(sorted(kinds)[0], cfg["decode"])
    except ValueError as err:
        raise RecipeError(f"infer: {err}") from None
    # The saved config must replay this step (run.sh beside it): it holds the modes that run, and
    # only keys that DEFAULTS knows (whether the test set has references is read from the set).
    cfg["label_modes"] = list(modes)
    write_experiment_config(cfg, out_dir)
    cache = None
    if getattr(separator, "kind", "") in SINGLE_QUERY_KINDS and float(cfg["cache_mb"]) > 0:
        cache = EstimateCache(cfg["cache_mb"])
    with torch.inference_mode():
        gains = output_gains(cfg, info, separator, year, device, steps, out_dir)
        for mode in modes:
            run_mode(mode, dataset, taggers.get(mode), separator, out_dir, year, cfg, device, steps,
                     cache, gains)


if __name__ == "__main__":
    run_cli(main)
