"""MixIT training of the S5 label-queried separators (``train_separator --training_mode mixit``)."""
import pytest
import torch
import yaml
from torch import nn

from s5lib import constants
from s5lib.bin.common import RecipeError, crop_mixit_batch, segment_starts
from s5lib.bin.train_separator import SeparatorMixITStep, make_train_data, pair_batch
from s5lib.data.synth import SynthConfig

N_CLASSES = constants.N_CLASSES
T = 2048


def sources(seed=0):
    """One distinct random signal per class, (18, T)."""
    return torch.randn(N_CLASSES, T, generator=torch.Generator().manual_seed(seed))


class OracleSingleQuery(nn.Module):
    """A stand-in single-query separator: the query's class signal (optionally shifted to
    another class), whatever the mixture. Output (N, 1, T) like ResUNet."""

    def __init__(self, signals, shift=0):
        super().__init__()
        self.signals, self.shift = signals, shift
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, mixture, query):
        classes = (query.argmax(-1) + self.shift) % N_CLASSES
        return (self.signals[classes] * self.scale)[:, None]


class OracleMultiSlot(nn.Module):
    """The same for a 3-slot separator: query (B, 54) -> (B, 3, T), zero for a silent slot."""

    def __init__(self, signals):
        super().__init__()
        self.signals = signals
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, mixture, query):
        onehot = query.reshape(query.shape[0], constants.MAX_TARGETS, N_CLASSES)
        return torch.einsum("bkc,ct->bkt", onehot, self.signals) * self.scale


def pair_of(labels1, labels2, signals, batch=1):
    """A MixIT batch whose mixtures are the sums of their labels' signals (channel 0)."""
    out = {"index": torch.arange(batch)}
    for suffix, labels in (("", labels1), ("2", labels2)):
        onehot = torch.zeros(batch, constants.MAX_TARGETS, N_CLASSES)
        active = torch.zeros(batch, constants.MAX_TARGETS, dtype=torch.bool)
        for k, c in enumerate(labels):
            onehot[:, k, c], active[:, k] = 1.0, True
        mono = sum((signals[c] for c in labels), torch.zeros(T))
        out["mixture" + suffix] = mono.expand(batch, 4, T).clone()
        out["slot_onehot" + suffix], out["active" + suffix] = onehot, active
        out["onset" + suffix] = torch.where(active, 0, -1)
        out["offset" + suffix] = torch.where(active, T, -1)
    return out


@pytest.mark.parametrize("kind,model_class", [("resunet", OracleSingleQuery),
                                              ("resunetk", OracleMultiSlot)])
def test_mixit_finds_the_labels_assignment(kind, model_class):
    signals = sources()
    step = SeparatorMixITStep(kind, "neg_snr", {}, None)
    batch = pair_of([2, 5], [7], signals, batch=2)
    loss, logs = step(model_class(signals), batch)
    assert float(logs["mixit_as_labelled"]) == 1.0
    assert float(logs["mixit_queries"]) == 3.0
    assert float(loss.detach()) < -60  # the re-mixed estimates are the two mixtures (-SNR, 1e-8 floor)
    # the loss has a gradient through the estimates
    model = model_class(signals)
    step(model, batch)[0].backward()
    assert model.scale.grad is not None


def test_mixit_assignment_follows_the_signals_not_the_labels():
    """A separator answering query c with class c+1's signal: MixIT puts each estimate where it
    fits, which is not where the labels say."""
    signals = sources(1)
    step = SeparatorMixITStep("resunet", "neg_snr", {}, None)
    # mixture 1 holds class 2, mixture 2 class 3. Query 2 (from mixture 1) gives signal 3: it fits
    # mixture 2 exactly; query 3 (from mixture 2) gives signal 4, in neither: it costs least in
    # mixture 1 (one wrong signal there, ~+3 dB) rather than spoiling mixture 2's exact match
    batch = pair_of([2], [3], signals)
    model = OracleSingleQuery(signals, shift=1)
    _, logs = step(model, batch)
    assert float(logs["mixit_as_labelled"]) == 0.0
    est = step.estimates(model, batch["mixture"] + batch["mixture2"],
                         torch.cat([batch["slot_onehot"], batch["slot_onehot2"]], 1),
                         torch.cat([batch["active"], batch["active2"]], 1))
    torch.testing.assert_close(est[0, 0], signals[3])
    _, assignment = step.loss_fn(est, batch["mixture"][:, 0], batch["mixture2"][:, 0])
    # estimates: mixture 1's three slots, then mixture 2's (silent slots are zero and tie at 0)
    assert assignment.tolist() == [[1, 0, 0, 0, 0, 0]]


def test_mixit_skips_pairs_without_labels():
    signals = sources()
    step = SeparatorMixITStep("resunet", "neg_snr", {}, None)
    loss, logs = step(OracleSingleQuery(signals), pair_of([], [], signals, batch=2))
    assert float(loss.detach()) == 0.0 and logs == {"skipped": 1.0}


def test_mixit_needs_a_single_source_loss():
    with pytest.raises(ValueError, match="single-source loss"):
        SeparatorMixITStep("resunetk", "masked_multislot_neg_snr", {}, None)


def test_crop_keeps_only_labels_inside_the_window():
    batch = pair_of([1, 4], [6], sources(), batch=1)
    total = 64000
    for suffix in ("", "2"):
        batch["mixture" + suffix] = torch.randn(1, 4, total)
    start = int(segment_starts(batch["index"], total, 32000)[0])
    # label 1 ends before the window, label 4 overlaps it; label 6 starts inside it
    batch["onset"][0, :2] = torch.tensor([0, start + 100])
    batch["offset"][0, :2] = torch.tensor([start, start + 200])
    batch["onset2"][0, 0], batch["offset2"][0, 0] = start + 31999, total
    out = crop_mixit_batch(batch, 1.0, constants.SAMPLE_RATE)
    assert out["mixture"].shape[-1] == 32000 and out["mixture2"].shape[-1] == 32000
    torch.testing.assert_close(out["mixture2"][0], batch["mixture2"][0, :, start:start + 32000])
    assert out["active"][0].tolist() == [False, True, False]
    assert out["slot_onehot"][0, 0].sum() == 0 and out["slot_onehot"][0, 1, 4] == 1
    assert out["active2"][0].tolist() == [True, False, False]


def test_pair_batch_pairs_consecutive_items():
    batch = {"mixture": torch.arange(5.0)[:, None], "active": torch.ones(5, 3, dtype=torch.bool)}
    pairs = pair_batch(batch)
    assert pairs["mixture"].flatten().tolist() == [0.0, 2.0]
    assert pairs["mixture2"].flatten().tolist() == [1.0, 3.0]
    assert pairs["active2"].shape == (2, 3)


@pytest.mark.parametrize("synthesis", ["cpu", "device"])
def test_mixit_training_data_reads_no_reference(bank_root, synthesis):
    dataset, collate_fn, transform = make_train_data(
        synthesis, torch.device("cpu"), bank_root, "train", SynthConfig(year=2025), epoch_size=2,
        seed=0, mixit=True)
    items = [dataset[i] for i in range(2)]
    batch = torch.utils.data.default_collate(items) if collate_fn is None else collate_fn(items)
    if transform is not None:
        batch = transform(batch, "cpu")
    assert "references" not in batch and "references2" not in batch
    assert batch["mixture"].shape == batch["mixture2"].shape == (2, 4, 320000)
    assert not torch.equal(batch["mixture"], batch["mixture2"])  # two independent mixtures
    for key in ("active2", "slot_onehot2", "onset2", "offset2"):
        assert key in batch


MICRO = {"type": "resunetk", "channels": [4, 4, 8, 8, 8, 8], "bottleneck_channels": 8,
         "condition_size": 16, "n_fft": 128, "hop_length": 64, "momentum": 0.1, "mask_init": 0.3}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from s5lib.bin.prep_data import main as prep_data
    data = tmp_path_factory.mktemp("mixit") / "data"
    prep_data(["--out_dir", str(data), "--size", "tiny", "--n_valid", "4", "--n_test", "1",
               "--nj", "1"])
    return data


def write_config(path, **overrides):
    config = {"model": MICRO, "training_mode": "mixit", "loss": "neg_snr",
              "segment_seconds": 1, "epoch_size": 4, "valid_max_mixtures": 4,
              "valid_batch_size": 2,
              "train": {"max_steps": 2, "batch_size": 2, "device": "cpu", "progress": False,
                        "scheduler": "constant", "lr": 1e-2, "valid_every_steps": 2}}
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("kind", ["resunetk", "resunet"])
def test_train_separator_mixit_mode(tiny_data, tmp_path, kind):
    from s5lib.bin.train_separator import main as train_separator
    from s5lib.models.factory import build_separator
    model_cfg = dict(MICRO, type=kind)
    config = write_config(tmp_path / "mixit.yaml", model=model_cfg)
    exp = tmp_path / "exp"
    train_separator(["--config", str(config), "--data", str(tiny_data), "--exp_dir", str(exp)])
    recorded = yaml.safe_load((exp / "config.yaml").read_text())
    assert recorded["training_mode"] == "mixit"
    assert recorded["train"]["best_metric"] == "valid_mixit_loss"
    assert recorded["train"]["best_mode"] == "min"
    checkpoint = torch.load(exp / "checkpoint_best.pt", weights_only=True)
    model = build_separator(dict(model_cfg))
    model.load_state_dict(checkpoint["model"])  # a MixIT separator is an ordinary separator
    torch.manual_seed(0)
    start = build_separator(dict(model_cfg)).state_dict()
    moved = [k for k, v in checkpoint["model"].items()
             if v.is_floating_point() and not torch.equal(v, start[k])]
    assert moved
    log = (exp / "train.log").read_text()
    assert "valid_mixit_loss" in log and "valid_sdri" in log and "mixit_as_labelled" in log
    # resuming with the other training mode is refused (the recorded run config differs)
    supervised = write_config(tmp_path / "supervised.yaml", model=model_cfg,
                              training_mode="supervised",
                              train={"max_steps": 4, "batch_size": 2, "device": "cpu",
                                     "progress": False, "scheduler": "constant"})
    with pytest.raises(Exception, match="training_mode"):
        train_separator(["--config", str(supervised), "--data", str(tiny_data),
                         "--exp_dir", str(exp)])


def test_mixit_mode_refusals(tiny_data, tmp_path):
    from s5lib.bin.train_separator import main as train_separator
    exp = str(tmp_path / "exp")
    bad_mode = write_config(tmp_path / "a.yaml", training_mode="pit")
    with pytest.raises(RecipeError, match="training_mode must be supervised or mixit"):
        train_separator(["--config", str(bad_mode), "--data", str(tiny_data), "--exp_dir", exp])
    eq = write_config(tmp_path / "b.yaml", class_eq_init=4,
                      model=dict(MICRO, class_freq_bias=True))
    with pytest.raises(RecipeError, match="class_eq_init"):
        train_separator(["--config", str(eq), "--data", str(tiny_data), "--exp_dir", exp])
    multislot = write_config(tmp_path / "c.yaml", loss="masked_multislot_neg_snr")
    with pytest.raises(RecipeError, match="single-source loss"):
        train_separator(["--config", str(multislot), "--data", str(tiny_data), "--exp_dir", exp])
