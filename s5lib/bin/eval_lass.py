"""Stages 4-5 of egs/srpol: separate a LASS set with a trained text-queried separator and score
it as the DCASE 2024 Task 9 evaluator does (SDR, SDRi, SI-SDR per (mixture, caption) pair).

    python -m s5lib.bin.eval_lass --exp_dir exp/separator --data data --split test \\
        --out_dir exp/separator/decode_lass_test

Writes into ``out_dir``: ``pairs.csv`` (source, noise, snr, caption, sdr, sdri, sisdr per pair),
``summary.json`` (the means, the mixture anchor, the pair count, the model), and for the first
``write_audio`` pairs ``audio/<i>_{mixture,estimate,source}.wav``. The set: ``--split
valid|test`` (stage 1's ``lass_valid`` / ``lass_test``) or ``--csv`` + ``--audio_dir`` (the
challenge's ``lass_synthetic_validation.csv`` and ``lass_validation/``). A separator file other
than the experiment's (``--checkpoint``, e.g. the LASS baseline's Lightning file with
``--text_encoder.type clap``) is loaded strictly.

``--summaries A/summary.json B/summary.json ... --out RESULTS.md`` writes the results table of
several evaluations instead.
"""
import csv
import json
import os
import time

import numpy as np
import torch

from s5lib.audio import write_audio
from s5lib.bin.common import RecipeError, read_dataset_info, run_cli
from s5lib.config import parse_config
from s5lib.data.lass import LASS_SAMPLE_RATE, LASSDataError, load_pair, read_lass_set
from s5lib.metrics.lass import lass_sdr, lass_sisdr, score_pair, summarise
from s5lib.models.checkpoints import trust_checkpoints
from s5lib.models.lass import (build_lass_separator, load_lass_weights, read_lass_experiment,
                               separate_signal)
from s5lib.models.text_encoder import TextEncoderError, build_text_encoder, text_encoder_dim

DEFAULTS = {
    "exp_dir": "",          # a train_lass experiment (config.yaml + checkpoint_best.pt)
    "checkpoint": "",       # another separator file (strict); default: <exp_dir>/checkpoint_best.pt
    "data": "data",
    "split": "test",        # valid | test: stage 1's LASS sets
    "csv": "",              # or a set in the challenge's format ...
    "audio_dir": "",        # ... and its audio folder
    "out_dir": "",
    "text_encoder": {},     # overrides of the experiment's text encoder section
    "model": {},            # overrides of the experiment's model section (with --checkpoint)
    "max_pairs": 0,         # 0: all
    "write_audio": 5,
    # also separate every mixture with another pair's caption (the list rotated by half its
    # length): how much of the SDRi comes from the query and not from generic enhancement
    "wrong_query": True,
    "device": "auto",
    "trust_checkpoint": False,
    "summaries": [],        # results mode: summary.json files ...
    "out": "",              # ... and the RESULTS.md to write
    "title": "LASS results",
}


def _experiment(cfg):
    model_cfg, encoder_cfg, checkpoint = {"type": "lass"}, {"type": "minilm"}, ""
    if cfg["exp_dir"]:
        model_cfg, encoder_cfg, checkpoint = read_lass_experiment(cfg["exp_dir"])
    model_cfg.update(cfg["model"] or {})
    model_cfg.pop("init_checkpoint", None)
    encoder_cfg.update(cfg["text_encoder"] or {})
    checkpoint = cfg["checkpoint"] or checkpoint
    if not checkpoint:
        raise RecipeError("eval_lass: give --exp_dir (a trained experiment) or --checkpoint")
    return model_cfg, encoder_cfg, checkpoint


def _pairs(cfg):
    if cfg["csv"] or cfg["audio_dir"]:
        if not (cfg["csv"] and cfg["audio_dir"]):
            raise RecipeError("eval_lass: --csv and --audio_dir go together")
        return cfg["csv"], cfg["audio_dir"], read_lass_set(cfg["csv"], cfg["audio_dir"])
    info = read_dataset_info(cfg["data"])
    key = f"lass_{cfg['split']}"
    if key not in info:
        raise RecipeError(f"eval_lass: {cfg['data']}/dataset.json has no {key}; write the LASS "
                          "sets in stage 1 (prep_data's lass: section) or give --csv/--audio_dir")
    entry = info[key]
    return entry["csv"], entry["audio_dir"], read_lass_set(entry["csv"], entry["audio_dir"])


def evaluate(cfg):
    model_cfg, encoder_cfg, checkpoint = _experiment(cfg)
    csv_path, audio_dir, pairs = _pairs(cfg)
    if int(cfg["max_pairs"] or 0) > 0:
        pairs = pairs[:int(cfg["max_pairs"])]
    device = torch.device("cuda" if cfg["device"] == "auto" and torch.cuda.is_available()
                          else ("cpu" if cfg["device"] == "auto" else cfg["device"]))
    encoder = build_text_encoder(encoder_cfg, trust=bool(cfg["trust_checkpoint"]))
    model = build_lass_separator(model_cfg, text_encoder_dim(encoder_cfg))
    load_lass_weights(model, checkpoint)
    model.to(device).eval()
    out_dir = cfg["out_dir"] or os.path.join(cfg["exp_dir"] or ".", f"decode_lass_{cfg['split']}")
    os.makedirs(os.path.join(out_dir, "audio"), exist_ok=True)
    start = time.time()
    conditions = encoder.embed([pair.caption for pair in pairs])
    shift = len(pairs) // 2 if cfg["wrong_query"] and len(pairs) > 1 else 0
    rows, anchors, wrong = [], [], []
    with torch.no_grad():
        for i, (pair, condition) in enumerate(zip(pairs, conditions)):
            source, mixture = load_pair(pair, audio_dir)
            estimate = separate_signal(model, mixture, condition)
            if not np.all(np.isfinite(estimate)):
                raise RecipeError(f"eval_lass: non-finite estimate for pair {i} ({pair.source}, "
                                  f"{pair.caption!r})")
            row = dict(source=pair.source, noise=pair.noise, snr=pair.snr, caption=pair.caption,
                       **score_pair(source, mixture, estimate))
            rows.append(row)
            anchors.append({"sdr": float(lass_sdr(source, mixture)), "sdri": 0.0,
                            "sisdr": float(lass_sisdr(source, mixture))})
            if shift:
                other = conditions[(i + shift) % len(pairs)]
                misled = separate_signal(model, mixture, other)
                wrong.append(score_pair(source, mixture, misled))
            if i < int(cfg["write_audio"]):
                for name, signal in (("mixture", mixture), ("estimate", estimate), ("source", source)):
                    write_audio(os.path.join(out_dir, "audio", f"{i:04d}_{name}.wav"), signal,
                                LASS_SAMPLE_RATE)
    with open(os.path.join(out_dir, "pairs.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    summary = {"metrics": summarise(rows), "mixture_anchor": summarise(anchors),
               "wrong_query": summarise(wrong) if wrong else None, "pairs": len(rows),
               "set": {"csv": csv_path, "audio_dir": audio_dir},
               "checkpoint": checkpoint, "exp_dir": cfg["exp_dir"], "model": model_cfg,
               "text_encoder": encoder_cfg, "seconds": round(time.time() - start, 1)}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    m = summary["metrics"]
    misled = (f", another pair's caption: SDRi {summary['wrong_query']['sdri']:.3f}"
              if wrong else "")
    print(f"LASS {len(rows)} pairs: SDR {m['sdr']:.3f}  SDRi {m['sdri']:.3f}  SI-SDR "
          f"{m['sisdr']:.3f}  (mixture: SDR {summary['mixture_anchor']['sdr']:.3f}, SI-SDR "
          f"{summary['mixture_anchor']['sisdr']:.3f}{misled}) -> {out_dir}")
    return summary


def _row_name(path, summary):
    exp = summary.get("exp_dir") or os.path.dirname(os.path.dirname(path))
    return os.path.basename(os.path.normpath(exp)) if exp else path


def write_results(summaries, out, title):
    """RESULTS.md: one row per evaluation, and mean ± std over runs that differ only in the seed
    (names ``<variant>`` and ``<variant>_seedN``)."""
    runs = []
    for path in summaries:
        with open(path) as f:
            summary = json.load(f)
        runs.append((_row_name(path, summary), summary, path))
    lines = [f"# {title}", "",
             "DCASE 2024 Task 9 measures (python -m s5lib.bin.eval_lass); means over the pairs.", "",
             "| run | pairs | SDR | SDRi | SI-SDR | mixture SDR | mixture SI-SDR "
             "| SDRi, another pair's caption |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    groups = {}
    for name, summary, _ in sorted(runs):
        m, a = summary["metrics"], summary["mixture_anchor"]
        w = summary.get("wrong_query")
        misled = f"{w['sdri']:.3f}" if w else "—"
        lines.append(f"| {name} | {summary['pairs']} | {m['sdr']:.3f} | {m['sdri']:.3f} | "
                     f"{m['sisdr']:.3f} | {a['sdr']:.3f} | {a['sisdr']:.3f} | {misled} |")
        variant = name.split("_seed")[0]
        groups.setdefault(variant, []).append(m)
    spread = [(v, ms) for v, ms in sorted(groups.items()) if len(ms) > 1]
    if spread:
        lines += ["", "Over seeds (mean ± std, population):", "",
                  "| variant | runs | SDR | SDRi | SI-SDR |", "|---|---:|---:|---:|---:|"]
        for variant, ms in spread:
            cells = [f"{np.mean([m[k] for m in ms]):.2f} ± {np.std([m[k] for m in ms]):.2f}"
                     for k in ("sdr", "sdri", "sisdr")]
            lines.append(f"| {variant} | {len(ms)} | " + " | ".join(cells) + " |")
    lines += ["", "Sources: " + ", ".join(sorted(p for _, _, p in runs)), ""]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {out} ({len(runs)} runs)")


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    trust_checkpoints(cfg["trust_checkpoint"])
    if cfg["summaries"]:
        if isinstance(cfg["summaries"], str):
            cfg["summaries"] = cfg["summaries"].split(",")
        if not cfg["out"]:
            raise RecipeError("eval_lass: --summaries needs --out RESULTS.md")
        for path in cfg["summaries"]:
            if not os.path.isfile(path):
                raise RecipeError(f"eval_lass: {path} not found")
        title = cfg["title"]
        if isinstance(title, dict):  # "a: b" on the command line reads as a mapping
            title = "; ".join(f"{k}: {v}" for k, v in title.items())
        return write_results(cfg["summaries"], cfg["out"], str(title))
    try:
        return evaluate(cfg)
    except (TextEncoderError, LASSDataError, ValueError) as err:
        if isinstance(err, RecipeError):
            raise
        raise RecipeError(f"eval_lass: {err}") from None


if __name__ == "__main__":
    run_cli(main)
