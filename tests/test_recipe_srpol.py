"""End to end: egs/srpol (LASS sets at stage 1 -> the text encoder checked offline at stage 2 ->
the text-queried separator -> the Task 9 measures on the LASS test set -> RESULTS.md) on the
tiny embedded bank with the recipe's own configs shrunk to a few updates; a released-style
separator file decoded at stage 4 without training; and the S5 pipeline with the tagger's labels
as captions."""
import csv
import json

import pytest
import torch
import yaml

from test_recipe import shrink  # the tests folder is on sys.path (pytest rootdir imports)
from test_recipe_cpjku import copy_recipe, run

pytest.importorskip("tokenizers")  # the lass extra


@pytest.fixture
def srpol_recipe(tmp_path):
    recipe = copy_recipe(tmp_path, "srpol")
    conf = recipe / "conf"
    shrink(conf / "prep_data.yaml", {"size": "tiny", "n_valid": 4, "n_test": 3,
                                     "lass.valid_pairs": 4, "lass.test_pairs": 6,
                                     "lass.clip_seconds": 1.0})
    shrink(conf / "separator.yaml", {"model.channels": [4, 4, 8, 8, 8, 8],
                                     "model.bottleneck_channels": 8, "segment_seconds": 0.5,
                                     "epoch_size": 8, "valid_max_pairs": 4, "train.batch_size": 4,
                                     "train.max_steps": 2, "train.warmup_steps": 0,
                                     "train.valid_every_steps": None})
    shrink(conf / "tagger.yaml", {"model.m2d": {"embed_dim": 32, "depth": 1, "num_heads": 2},
                                  "epoch_size": 8, "pool.mixtures": 4, "pool.num_workers": 0,
                                  "valid_max_mixtures": 4, "train.batch_size": 4, "train.max_steps": 2,
                                  "train.num_workers": 0, "train.valid_every_steps": None,
                                  "train.warmup_steps": 0, "train.scheduler": "constant"})
    return recipe


def test_srpol_all_stages_and_the_s5_pipeline(srpol_recipe):
    result = run(srpol_recipe, "--nj", "1", "--class_eq_mixtures", "4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "text encoder minilm loads offline" in result.stdout
    data = json.loads((srpol_recipe / "data" / "dataset.json").read_text())
    assert data["lass_valid"]["pairs"] == 4 and data["lass_test"]["pairs"] == 6
    separator = srpol_recipe / "exp" / "separator"
    cfg = yaml.safe_load((separator / "config.yaml").read_text())
    assert cfg["model"]["type"] == "lass" and cfg["loss"] == "l1_wave"
    assert not (srpol_recipe / "exp" / "tagger" / "checkpoint_best.pt").exists()  # no tagger
    decode = separator / "decode_test"
    summary = json.loads((decode / "summary.json").read_text())
    assert summary["pairs"] == 6 and summary["set"]["csv"] == data["lass_test"]["csv"]
    rows = list(csv.DictReader(open(decode / "pairs.csv")))
    assert len(rows) == 6
    results = (srpol_recipe / "RESULTS.md").read_text()
    assert "| separator | 6 |" in results and "SDRi" in results
    # a separator file (as a released LASS checkpoint would be) decoded at stage 4, no training:
    # its architecture from --separator_checkpoint_config
    state = torch.load(separator / "checkpoint_best.pt", weights_only=True)["model"]
    release = srpol_recipe / "released.ckpt"
    torch.save({"state_dict": {"ss_model." + k: v for k, v in state.items()}}, release)
    arch = srpol_recipe / "conf" / "released.yaml"
    arch.write_text(yaml.safe_dump({"model": cfg["model"], "text_encoder": {"type": "minilm"}}))
    result = run(srpol_recipe, "--stage", "4", "--stop_stage", "4", "--tag", "released",
                 "--separator_checkpoint", str(release),
                 "--separator_checkpoint_config", "conf/released.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    released = json.loads((srpol_recipe / "exp" / "separator_released" / "decode_test" /
                           "summary.json").read_text())
    assert released["metrics"] == pytest.approx(summary["metrics"], abs=1e-4)

    # S5 with free-text queries (--infer_config conf/infer_s5.yaml): stage 2 now trains the
    # baseline tagger, stage 3 is kept, stage 4 queries the LASS separator with each label's
    # caption, stage 5 scores CA-SDRi like every recipe; the LASS and S5 tables share RESULTS.md
    result = run(srpol_recipe, "--nj", "1", "--class_eq_mixtures", "4", "--stage", "2",
                 "--infer_config", "conf/infer_s5.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = srpol_recipe / "exp"
    assert (exp / "tagger" / "checkpoint_best.pt").is_file()
    decode = exp / "separator" / "decode_test_infer_s5"
    for mode in ("estimated", "oracle"):
        probs = json.loads((decode / mode / "eval_results.json").read_text())
        assert len(probs["probabilities"]) == 3
        for entry in probs["probabilities"]:
            for est in entry["estimate"]:
                assert est["filename"] == f"{entry['soundscape']}_{est['label']}.wav"
        summary = json.loads((decode / "scores" / mode / "summary.json").read_text())
        assert "CA-SDRi" in summary["metrics"]
    import soundfile as sf
    wav = next((decode / "oracle" / "estimates").glob("*.wav"))
    info = sf.info(str(wav))
    assert info.samplerate == 32000 and info.frames == 320000   # back at the S5 rate and length
    results = (srpol_recipe / "RESULTS.md").read_text()
    assert "LASS on the mini bank" in results and "{" not in results.splitlines()[0] and "CA-SDRi" in results
    # the LASS separator with the plain S5 procedure is a clear error
    (srpol_recipe / "conf" / "infer_bad.yaml").write_text("procedure: single\n")
    result = run(srpol_recipe, "--stage", "4", "--stop_stage", "4", "--infer_config",
                 "conf/infer_bad.yaml")
    assert result.returncode != 0
