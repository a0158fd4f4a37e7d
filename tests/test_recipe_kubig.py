"""End to end: egs/kubig (a BEATs-shaped tagger as the encoder -> the end-to-end separator on it,
frozen -> decoding without a tagger, DoA per estimate -> CAPI-SDRi scores) on the tiny embedded
bank with the recipe's own configs shrunk to a few updates; the 2026-only rule; and stage 2
skipped for a BEATs release file."""
import json
import re

import pytest
import torch
import yaml

from test_recipe import shrink  # the tests folder is on sys.path (pytest rootdir imports)
from test_recipe_cpjku import copy_recipe, run

TINY_BEATS = {"embed_dim": 16, "encoder_layers": 1, "encoder_embed_dim": 16,
              "encoder_ffn_embed_dim": 32, "encoder_attention_heads": 2, "conv_pos": 4,
              "conv_pos_groups": 2, "num_buckets": 16, "max_distance": 40}
SHORT = {"epoch_size": 8, "pool.mixtures": 4, "pool.num_workers": 0, "valid_max_mixtures": 2,
         "train.batch_size": 4, "train.max_steps": 2, "train.num_workers": 0,
         "train.valid_every_steps": None, "train.warmup_steps": 0, "train.scheduler": "constant"}


@pytest.fixture
def kubig_recipe(tmp_path):
    recipe = copy_recipe(tmp_path, "kubig")
    conf = recipe / "conf"
    shrink(conf / "prep_data.yaml", {"size": "tiny", "n_valid": 4, "n_test": 4})
    shrink(conf / "tagger.yaml", {"model.beats": TINY_BEATS, **SHORT})
    shrink(conf / "separator.yaml", {"model.hidden_dim": 16, "model.n_compressed": 2,
                                     "model.temporal_layers": 1, "segment_seconds": 2, **SHORT})
    return recipe


def test_kubig_all_stages(kubig_recipe):
    result = run(kubig_recipe, "--nj", "1", "--class_eq_mixtures", "4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = kubig_recipe / "exp"
    tagger, separator = exp / "tagger_2026", exp / "separator_2026"
    cfg = yaml.safe_load((separator / "config.yaml").read_text())
    # stage 3 froze stage 2's encoder: its settings and weights, unchanged by training
    assert cfg["model"]["encoder_checkpoint"] == "exp/tagger_2026/checkpoint_best.pt"
    assert cfg["model"]["beats"]["encoder_embed_dim"] == 16 and cfg["loss"] == "joint_pit"
    encoder = {k[len("encoder."):]: v for k, v in
               torch.load(tagger / "checkpoint_best.pt", weights_only=True)["model"].items()
               if k.startswith("encoder.")}
    trained = torch.load(separator / "checkpoint_best.pt", weights_only=True)
    for key, value in encoder.items():
        assert torch.equal(trained["model"]["encoder." + key], value), key
    log = (separator / "logs" / "train.log").read_text()
    assert re.search(r"separator kubig: [\d,]+ parameters, [\d,]+ trainable", log)
    assert "valid_loss" in log
    # decoding: no tagger, estimated labels only, 2026 names with the model's slot, a DoA entry
    decode = separator / "decode_test"
    assert not (decode / "oracle").exists()
    probs = json.loads((decode / "estimated" / "eval_results.json").read_text())
    assert len(probs["probabilities"]) == 4
    for entry in probs["probabilities"]:
        for est in entry["estimate"]:
            assert re.fullmatch(entry["soundscape"] + r"_[0-2]_[A-Za-z]+\.wav", est["filename"])
            assert "doa" in est and (est["doa"] is None or len(est["doa"]) == 3)
            assert 0 < est["probability"] <= 1
    summary = json.loads((decode / "scores" / "estimated" / "summary.json").read_text())
    assert summary["year"] == 2026 and "CAPI-SDRi" in summary["metrics"]
    results = (kubig_recipe / "RESULTS.md").read_text()
    assert "CAPI-SDRi" in results and "separator_2026/decode_test" in results


def test_kubig_refuses_the_2025_rules_and_skips_stage2_for_a_release(kubig_recipe, tmp_path):
    result = run(kubig_recipe, "--year", "2025", "--stage", "2", "--stop_stage", "2")
    assert result.returncode != 0 and "2026" in result.stdout + result.stderr
    # a separator config naming a BEATs release file: stage 2 has nothing to train
    missing = kubig_recipe / "conf" / "separator_release.yaml"
    missing.write_text("base: separator.yaml\nmodel: {encoder_checkpoint: /nonexistent/BEATs.pt}\n")
    result = run(kubig_recipe, "--stage", "2", "--stop_stage", "2",
                 "--separator_config", "conf/separator_release.yaml")
    assert result.returncode != 0 and "/nonexistent/BEATs.pt not found" in result.stdout + result.stderr
    from s5lib.models.beats import BEATs, BEATsConfig
    beats = BEATs(BEATsConfig.from_dict(dict(BEATsConfig.small().__dict__, **TINY_BEATS)))
    release = tmp_path / "BEATs_tiny.pt"
    torch.save({"cfg": dict(beats.config.__dict__), "model": beats.state_dict()}, release)
    missing.write_text(f"base: separator.yaml\nmodel: {{encoder_checkpoint: {release}, "
                       "beats: " + json.dumps(TINY_BEATS) + "}\n")
    result = run(kubig_recipe, "--stage", "2", "--stop_stage", "2",
                 "--separator_config", "conf/separator_release.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stage 2 skipped" in result.stdout
    assert not (kubig_recipe / "exp" / "tagger_2026" / "checkpoint_best.pt").exists()
