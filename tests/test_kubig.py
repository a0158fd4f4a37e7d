"""KUBIG's end-to-end separator: sizes at the report's configuration, the frozen encoder, the joint
PIT loss (permutation invariance, the silent-slot energy term, the choice of the permutation),
slot decoding with the DoA threshold, the DoA error, and checkpoint handling."""
import itertools
import json
import math
import os

import numpy as np
import pytest
import torch

from s5lib import constants
from s5lib.infer.end_to_end import check_end_to_end, decode_outputs
from s5lib.losses.joint_pit import JointPITLoss, energy_db, pairwise_costs
from s5lib.metrics.doa import angular_error_deg, read_estimate_doas
from s5lib.models.checkpoints import CheckpointError
from s5lib.models.factory import build_separator, load_model_file
from s5lib.models.kubig import KubigConfig, SpatialSeparatorModel, band_matrix

SMALL = {"type": "kubig", "beats_preset": "small", "hidden_dim": 32, "n_compressed": 4,
         "temporal_layers": 1, "n_fft": 256, "hop_length": 128}
S = constants.SILENCE_INDEX


def test_report_configuration_sizes():
    model = SpatialSeparatorModel(KubigConfig())
    total = sum(p.numel() for p in model.parameters())
    assert model.trainable_parameters() == 1_578_680   # report: ~1.5 M
    assert total == 91_890_472                          # report: 91.8 M (BEATs 90,311,792)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert total - model.trainable_parameters() == 90_311_792


def test_frozen_encoder_gets_no_gradient_and_no_optimizer_state():
    from s5lib.train.optim import build_optimizer, build_param_groups
    torch.manual_seed(0)
    model = build_separator(SMALL)
    model.train()
    assert not model.encoder.training and model.temporal.training  # the frozen part stays in eval
    groups = build_param_groups(model, 1e-3, 0.0)  # as the trainer builds them
    optimizer = build_optimizer(groups, "adamw", lr=1e-3)
    out = model(0.1 * torch.randn(2, 4, 32000))
    (out["waveforms"].pow(2).mean() + out["logits"].sum() + out["doa"].sum()).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.mask_head.weight.grad is not None and model.compress.weight.grad is not None
    optimizer.step()
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    assert encoder_ids.isdisjoint({id(p) for p in optimizer.state})
    assert encoder_ids.isdisjoint({id(p) for g in optimizer.param_groups for p in g["params"]})


def test_model_outputs_and_input_check():
    torch.manual_seed(0)
    model = build_separator(SMALL).eval()
    with torch.no_grad():
        out = model(0.1 * torch.randn(2, 4, 48000))
    assert out["waveforms"].shape == (2, 3, 48000)
    assert out["logits"].shape == (2, 3, 19) and out["doa"].shape == (2, 3, 3)
    assert float(out["masks"].min()) >= 0 and float(out["masks"].max()) <= 1
    with pytest.raises(ValueError, match="4 FOA channels"):
        model(torch.zeros(2, 1, 48000))
    matrix = band_matrix(9, 3)
    assert torch.allclose(matrix.sum(1), torch.ones(3)) and float(matrix[:, 0].abs().sum()) == 0


def _targets(B=3, K=3, T=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    refs = torch.randn(B, K, T, generator=g)
    active = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])[:B]
    refs = refs * active[..., None]
    labels = torch.tensor([[4, 4, S], [7, S, S], [1, 2, 3]])[:B]
    doa = torch.nn.functional.normalize(torch.randn(B, K, 3, generator=g), dim=-1) * active[..., None]
    mixture = torch.randn(B, 4, T, generator=g) + refs.sum(1, keepdim=True)
    return {"references": refs, "active": active, "label_index": labels, "doa": doa,
            "mixture": mixture}


def _outputs(B=3, K=3, T=4000, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"waveforms": torch.randn(B, K, T, generator=g), "logits": torch.randn(B, K, 19, generator=g),
            "doa": torch.randn(B, K, 3, generator=g)}


def test_joint_pit_is_invariant_to_slot_orders():
    loss_fn = JointPITLoss()
    batch, outputs = _targets(), _outputs()
    reference, _, _ = loss_fn(outputs, batch)
    for order in itertools.permutations(range(3)):
        order = list(order)
        permuted_targets = {k: (v[:, order] if k != "mixture" else v) for k, v in batch.items()}
        permuted_outputs = {k: v[:, order] for k, v in outputs.items()}
        assert torch.allclose(loss_fn(outputs, permuted_targets)[0], reference, atol=1e-5)
        assert torch.allclose(loss_fn(permuted_outputs, batch)[0], reference, atol=1e-5)


def test_joint_pit_picks_the_matching_permutation_and_backpropagates():
    batch = _targets()
    order = [2, 0, 1]  # output slot k holds target slot order[k]
    logits = torch.full((3, 3, 19), -5.0)
    for b in range(3):
        for k in range(3):
            logits[b, k, int(batch["label_index"][b, order[k]])] = 5.0
    outputs = {"waveforms": batch["references"][:, order] + 0.01 * torch.randn(3, 3, 4000),
               "logits": logits.requires_grad_(), "doa": batch["doa"][:, order].clone()}
    outputs["waveforms"].requires_grad_()
    loss, perm, logs = JointPITLoss()(outputs, batch)
    for b in range(3):  # perm[b, j] = output slot of target j; only active / distinct slots matter
        for j in range(3):
            if batch["active"][b, j] and (b != 0 or j < 2):
                assert int(perm[b, j]) == order.index(j)
    assert logs["si_sdr"] > 30 and logs["doa_mse"] < 1e-6
    loss.mean().backward()
    assert outputs["waveforms"].grad is not None and outputs["logits"].grad.abs().sum() > 0


def test_silent_target_slots_cost_the_energy_term():
    batch = _targets()
    batch["active"][:] = False
    batch["label_index"][:] = S
    outputs = _outputs()
    cost, parts = pairwise_costs(outputs, batch, w_si_sdr=0.3, w_energy=0.1, w_ce=0.0, w_doa=0.0)
    mix_power = batch["mixture"][:, 0].pow(2).mean(-1)
    for b in range(3):
        for i in range(3):
            power = outputs["waveforms"][b, i].pow(2).mean()
            expected = 0.1 * 10 * math.log10((power + 1e-3 * mix_power[b]) / mix_power[b])
            assert torch.allclose(cost[b, i], torch.full((3,), expected), atol=1e-4)
    # a silent estimate sits at the floor, -30 dB below the mixture, and no lower
    zeros = energy_db(torch.zeros(3, 3, 4000), batch["mixture"][:, 0])
    assert torch.allclose(zeros, torch.full((3, 3), -30.0), atol=1e-3)
    # ... and a silent slot's DoA target is [0, 0, 0]
    cost_doa, _ = pairwise_costs(outputs, batch, w_si_sdr=0.0, w_energy=0.0, w_ce=0.0, w_doa=1.0)
    assert torch.allclose(cost_doa[:, :, 0], outputs["doa"].pow(2).mean(-1), atol=1e-6)


def test_decoding_drops_silence_and_thresholds_directions():
    logits = torch.full((1, 3, 19), -9.0)
    logits[0, 0, 5] = 9.0
    logits[0, 1, S] = 9.0
    logits[0, 2, 5] = 9.0   # the same class twice (2026)
    doa = torch.tensor([[[0.0, 0.3, 0.4], [1.0, 0.0, 0.0], [0.05, 0.0, 0.0]]])
    waves = torch.randn(1, 3, 100)
    decoded = decode_outputs({"logits": logits, "doa": doa, "waveforms": waves}, doa_threshold=0.1)[0]
    assert [d["slot"] for d in decoded] == [0, 2]
    assert [d["label"] for d in decoded] == [constants.CLASSES[5]] * 2
    assert decoded[0]["probability"] > 0.99
    assert np.allclose(decoded[0]["doa"], [0.0, 0.6, 0.8]) and decoded[1]["doa"] is None
    assert torch.equal(decoded[1]["waveform"], waves[0, 2])
    with pytest.raises(ValueError, match="unknown"):
        check_end_to_end({"doa_treshold": 0.2})


def test_angular_error_of_known_pairs(tmp_path):
    assert angular_error_deg([1, 0, 0], [0, 1, 0]) == pytest.approx(90.0)
    assert angular_error_deg([1, 1, 0], [2, 0, 0]) == pytest.approx(45.0)
    assert angular_error_deg([0, 0, 1], [0, 0, -3]) == pytest.approx(180.0)
    assert angular_error_deg([0.3, -0.2, 0.9], [0.6, -0.4, 1.8]) == pytest.approx(0.0, abs=1e-6)
    path = tmp_path / "eval_results.json"
    path.write_text(json.dumps({"probabilities": [{"soundscape": "m", "estimate": [
        {"filename": "m_0_Speech.wav", "label": "Speech", "probability": 0.5, "doa": [1, 0, 0]},
        {"filename": "m_1_Speech.wav", "label": "Speech", "probability": 0.5, "doa": None}]}]}))
    assert read_estimate_doas(str(path)) == {"m_0_Speech.wav": [1, 0, 0], "m_1_Speech.wav": None}
    path.write_text(json.dumps({"probabilities": [{"soundscape": "m", "estimate": [
        {"filename": "m_0_Speech.wav", "label": "Speech", "probability": 0.5, "doa": [1, 0]}]}]}))
    with pytest.raises(ValueError, match="m_0_Speech.wav"):
        read_estimate_doas(str(path))


def test_checkpoints_need_their_config_and_a_matching_encoder(tmp_path):
    torch.manual_seed(0)
    model = build_separator(SMALL)
    plain = tmp_path / "kubig.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="config file"):
        load_model_file(str(plain), "separator")
    loaded, _, _ = load_model_file(str(plain), "separator", dict(SMALL))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.state_dict().values()))
    # the encoder from a BEATs release file of another size: the mismatch names file and keys
    from s5lib.models.beats import BEATs, BEATsConfig
    other = BEATs(BEATsConfig.small(encoder_embed_dim=64))
    release = tmp_path / "BEATs_other.pt"
    torch.save({"cfg": dict(other.config.__dict__), "model": other.state_dict()}, release)
    with pytest.raises(CheckpointError, match="BEATs_other.pt"):
        build_separator(dict(SMALL, encoder_checkpoint=str(release)))
    with pytest.raises(ValueError, match="unknown key"):
        build_separator(dict(SMALL, hidden=3))


def test_scoring_measures_the_doa_error_of_tp_estimates(tmp_path):
    """Oracle references as estimates, each with its target's direction turned by a known angle
    about an axis at right angles to it (one estimate without a direction): the DoA error is
    that angle, over the TP estimates that gave a direction."""
    import shutil
    from s5lib.bin import prep_data, score
    from s5lib.data.synth import FoaSynthesizer, SoundBank, synth_config_from_metadata
    data = tmp_path / "data"
    prep_data.main(["--year", "2026", "--size", "tiny", "--n_valid", "1", "--n_test", "4",
                    "--nj", "1", "--out_dir", str(data)])
    test = data / "dev_set" / "synthesized" / "test"
    bank = SoundBank(str(data / "dev_set"), "valid")
    est_dir = tmp_path / "est"
    est_dir.mkdir()
    entries, angles, skipped = [], [], False
    for name in sorted(os.listdir(test / "oracle_target")):
        mix = "_".join(name.split("_")[:2])
        meta = json.loads((test / "metadata" / f"{mix}.json").read_text())
        targets = FoaSynthesizer(bank, synth_config_from_metadata(meta)).target_positions(meta)
        slot = int(name.split("_")[2])
        d = np.asarray(targets[slot][1], dtype=np.float64)
        d /= np.linalg.norm(d)
        axis = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
        axis /= np.linalg.norm(axis)
        angle = 5.0 + 10.0 * len(angles)
        turned = d * math.cos(math.radians(angle)) + np.cross(axis, d) * math.sin(math.radians(angle))
        shutil.copy(test / "oracle_target" / name, est_dir / name)
        doa = turned.tolist()
        if not skipped:
            doa, skipped = None, True
        else:
            angles.append(angle)
        entries.append({"soundscape": mix, "estimate": [{"filename": name, "label": targets[slot][0],
                                                         "probability": 1.0, "doa": doa}]})
    assert len(angles) >= 1
    probs = tmp_path / "eval_results.json"
    probs.write_text(json.dumps({"probabilities": entries}))
    summary = score.score({"year": 2026, "ref_dir": str(test), "est_dir": str(est_dir),
                           "probs": str(probs), "out_dir": str(tmp_path / "score"), "nj": 1,
                           "bank_root": str(data / "dev_set"), "plot": False, "recipe": "t"})
    metrics = summary["metrics"]
    assert metrics["n_tp_with_doa"] == len(angles)
    assert metrics["DoA_err_tp"] == pytest.approx(float(np.mean(angles)), abs=1e-3)
    # without the bank the directions are not scored (and the other figures do not change)
    plain = score.score({"year": 2026, "ref_dir": str(test), "est_dir": str(est_dir),
                         "probs": str(probs), "out_dir": str(tmp_path / "score2"), "nj": 1,
                         "plot": False, "recipe": "t"})["metrics"]
    assert "DoA_err_tp" not in plain and plain["CAPI-SDRi"] == metrics["CAPI-SDRi"]
