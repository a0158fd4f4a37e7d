"""Stage 1: build (or verify) a DCASE ``dev_set`` and write the fixed validation and test sets.

Without ``--db_root`` the embedded mini soundbank is generated under ``<out_dir>/dev_set`` and
completed with what the real set ships: ``metadata/valid.json`` + per-mixture JSON files, and a
pre-mixed test set (``test/`` for 2025, ``synthesized/test/`` for 2026) with ``soundscape/`` and
``oracle_target/`` under the official names. With ``--db_root`` the given tree is checked
(a report lists everything missing or malformed) and used as it is.

With a ``lass:`` section (egs/srpol) the LASS validation and test sets are written too, under
``<out_dir>/lass/{valid,test}`` in the DCASE 2024 Task 9 format (:func:`s5lib.data.lass.write_lass_sets`),
and ``dataset.json`` names them (``lass_valid``, ``lass_test``).

Either way ``<out_dir>/dataset.json`` tells the later stages where everything is.

External data (``--extra_sound_event DIR`` / ``--extra_interference DIR``, lists in the YAML;
``--valid_speakers`` for the speaker-level split of extra speech): merged into the training bank
as links in ``<out_dir>/dev_set_extended`` (:mod:`s5lib.data.external`), which the later stages
then read; the validation and test sets stay those of the base.

    python -m s5lib.bin.prep_data --year 2025 --out_dir data [--db_root /path/to/dev_set]
"""
import collections
import concurrent.futures
import json
import os
import sys
import time

import numpy as np

from s5lib import constants
from s5lib.audio import write_audio
from s5lib.bin.common import run_cli
from s5lib.config import parse_config, save_config
from s5lib.metrics.naming import source_filename

DEFAULTS = {
    "year": 2025,
    "db_root": "",  # empty: build the embedded mini soundbank
    "out_dir": "data",
    "seed": 0,
    "size": "mini",  # mini soundbank size: mini | tiny
    "n_valid": 100,  # fixed validation mixtures (mini bank only)
    "n_test": 100,  # pre-mixed test mixtures (mini bank only)
    "eval_interferers": [0, 2],  # interferers per validation/test mixture
    "nj": 2,
    "overwrite": False,
    # external data (s5lib.data.external): folders merged into the training bank as links, in a
    # new tree <out_dir>/dev_set_extended (the fixed validation / test sets are not changed)
    "extra_sound_event": [],  # folders laid out <Class>/**.wav (EARS: Speech/p001/*.wav)
    "extra_interference": [],  # folders laid out <class>/**.wav (FSD50K dev, scaper layout)
    "valid_speakers": [],      # extra sound-event files of these speakers go to the valid split
    # LASS validation / test sets (egs/srpol; s5lib.data.lass.write_lass_sets), written under
    # <out_dir>/lass from the bank's valid clips when this section is given, e.g.
    # {valid_pairs: 100, test_pairs: 200, clip_seconds: 4.0, snr: [-10, 10]}
    "lass": {},
}


def test_dir_of(bank_root, year):
    return os.path.join(bank_root, "test" if int(year) == 2025 else os.path.join("synthesized", "test"))


def _eval_synth(bank_root, year, eval_interferers):
    from s5lib.data.synth import FoaSynthesizer, SoundBank, SynthConfig
    bank = SoundBank(bank_root, "valid", cache_audio=True)
    return FoaSynthesizer(bank, SynthConfig(year=year, n_interferers=tuple(eval_interferers)))


_WORKER = {}


def _write_test_item(args):
    bank_root, year, eval_interferers, seed, index, test_dir = args
    key = (bank_root, year, tuple(eval_interferers))
    if key not in _WORKER:
        _WORKER.clear()
        _WORKER[key] = _eval_synth(bank_root, year, eval_interferers)
    synth = _WORKER[key]
    name = f"soundscape_{index:04d}"
    meta = synth.sample_metadata(np.random.default_rng([seed, 2, index]))
    mix = synth.render(meta, with_wet=False)
    write_audio(os.path.join(test_dir, "soundscape", name + ".wav"), mix.mixture,
                constants.SAMPLE_RATE, subtype="PCM_16")
    for slot, ev in enumerate(mix.targets):
        ref_name = source_filename(name, ev.label, slot if int(year) == 2026 else None)
        write_audio(os.path.join(test_dir, "oracle_target", ref_name), ev.reference, constants.SAMPLE_RATE, subtype="PCM_16")
    with open(os.path.join(test_dir, "metadata", name + ".json"), "w") as f:
        json.dump(meta, f, indent=1)
    return name, mix.labels


def write_valid_metadata(bank_root, year, n_valid, seed, eval_interferers):
    synth = _eval_synth(bank_root, year, eval_interferers)
    mdir = os.path.join(bank_root, "metadata", "valid")
    os.makedirs(mdir, exist_ok=True)
    entries = []
    for i in range(n_valid):
        meta = synth.sample_metadata(np.random.default_rng([seed, 1, i]))
        name = f"soundscape_{i:04d}"
        with open(os.path.join(mdir, name + ".json"), "w") as f:
            json.dump(meta, f, indent=1)
        labels = [e["label"] for e in meta["fg_events"]]
        if int(year) == 2025:  # the 2025 loader expects 3 entries, padded with silence
            labels = labels + [constants.SILENCE] * (constants.MAX_TARGETS - len(labels))
        entries.append({"metadata_path": f"valid/{name}.json", "ref_event": labels})
    tmp = os.path.join(bank_root, "metadata", "valid.json.tmp")
    with open(tmp, "w") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, os.path.join(bank_root, "metadata", "valid.json"))
    return entries


def write_test_set(bank_root, year, n_test, seed, eval_interferers, nj):
    test_dir = test_dir_of(bank_root, year)
    for sub in ("soundscape", "oracle_target", "metadata"):
        d = os.path.join(test_dir, sub)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):  # re-runs overwrite, never mix two sets
            os.unlink(os.path.join(d, f))
    jobs = [(bank_root, int(year), list(eval_interferers), seed, i, test_dir) for i in range(n_test)]
    if nj > 1:
        with concurrent.futures.ProcessPoolExecutor(nj) as pool:
            results = list(pool.map(_write_test_item, jobs, chunksize=8))
    else:
        results = [_write_test_item(j) for j in jobs]
    return test_dir, results


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    year = int(cfg["year"])
    if year not in constants.YEARS:
        sys.exit(f"prep_data: --year must be one of {constants.YEARS}, got {year}")
    out_dir = os.path.abspath(cfg["out_dir"])
    os.makedirs(out_dir, exist_ok=True)
    save_config(cfg, os.path.join(out_dir, "prep_data.yaml"))
    t0 = time.time()
    if cfg["db_root"]:
        from s5lib.data.layout import check_dev_set
        bank_root = os.path.abspath(cfg["db_root"])
        check_dev_set(bank_root, year)
        valid_list = os.path.join(bank_root, "metadata", "valid.json")
        test_dir = test_dir_of(bank_root, year)
        source = "db_root"
    else:
        from s5lib.data.soundbank import build_mini_soundbank
        bank_root = os.path.join(out_dir, "dev_set")
        summary = build_mini_soundbank(bank_root, seed=cfg["seed"], size=cfg["size"],
                                       overwrite=bool(cfg["overwrite"]))
        counts = "; ".join(f"{kind} {split['train']} train / {split['valid']} valid"
                           for kind, split in summary["counts"].items())
        state = "reused" if summary.get("skipped") else f"built in {summary['seconds']:.1f} s"
        print(f"mini soundbank ({summary['size']}, seed {summary['seed']}, {state}, "
              f"{summary['megabytes']:.0f} MB): {bank_root}\n  files: {counts}")
        entries = write_valid_metadata(bank_root, year, int(cfg["n_valid"]), cfg["seed"],
                                       cfg["eval_interferers"])
        print(f"validation metadata: {len(entries)} mixtures")
        test_dir, results = write_test_set(bank_root, year, int(cfg["n_test"]), cfg["seed"],
                                           cfg["eval_interferers"], int(cfg["nj"]))
        counts = collections.Counter(len(labels) for _, labels in results)
        shown = ", ".join(f"{n} target{'s' if n != 1 else ''}: {counts[n]}" for n in sorted(counts))
        print(f"test set: {len(results)} mixtures ({shown})")
        valid_list = os.path.join(bank_root, "metadata", "valid.json")
        source = "mini"
    for key in ("extra_sound_event", "extra_interference", "valid_speakers"):
        # one value on the command line: a folder (or comma-separated speakers)
        if isinstance(cfg[key], str):
            cfg[key] = [v.strip() for v in cfg[key].split(",") if v.strip()]
        elif cfg[key] is None:
            cfg[key] = []
    if cfg["extra_sound_event"] or cfg["extra_interference"]:
        from s5lib.data.external import ExternalDataError, merge_external
        try:
            merged = merge_external(bank_root, os.path.join(out_dir, "dev_set_extended"),
                                    cfg["extra_sound_event"], cfg["extra_interference"],
                                    cfg["valid_speakers"])
        except ExternalDataError as err:
            sys.exit(f"prep_data: {err}")
        added = "; ".join(f"{key} +{n}" for key, n in sorted(merged["added"].items()))
        print(f"external data merged into {merged['root']}: {added}")
        bank_root = merged["root"]
    dataset = {"year": year, "source": source, "bank_root": bank_root, "train_split": "train",
               "valid_split": "valid", "valid_list": valid_list, "test_dir": test_dir}
    if cfg["lass"]:
        from s5lib.data.lass import LASSDataError, write_lass_sets
        try:
            lass = write_lass_sets(bank_root, os.path.join(out_dir, "lass"), dict(cfg["lass"]),
                                   seed=cfg["seed"])
        except LASSDataError as err:
            sys.exit(f"prep_data: {err}")
        dataset.update(lass)
        print("LASS sets: " + "; ".join(f"{key} {entry['pairs']} pairs of {entry['clips']} clips"
                                        for key, entry in lass.items()))
    tmp = os.path.join(out_dir, "dataset.json.tmp")
    with open(tmp, "w") as f:
        json.dump(dataset, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "dataset.json"))
    print(f"wrote {os.path.join(out_dir, 'dataset.json')} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    run_cli(main)
