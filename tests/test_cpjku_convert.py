"""The CP-JKU separator converter, on state_dicts built from their code's layout
(tests/data/cpjku_separator_*.tsv, dumped from theMoro/dcase25task4 @ ad7938f) and the SED
wrapper's (shared/reference/cpjku_m2d_sed_wrapper.tsv)."""
import os

import pytest
import torch

from s5lib.models.checkpoints import CheckpointError, load_strict, read_reference_tsv
from s5lib.models.cpjku_convert import convert_cpjku_separator, load_cpjku_separator, separator_key
from s5lib.models.factory import build_separator, load_model_file

DATA = os.path.join(os.path.dirname(__file__), "data")
REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")
if not os.path.isdir(REFERENCE_DIR):
    REFERENCE_DIR = "/work/shared/reference"
needs_reference = pytest.mark.skipif(not os.path.isdir(REFERENCE_DIR),
                                     reason="shared/reference layouts not available")


def layout(path):
    rows, _ = read_reference_tsv(path)
    return rows


def lightning_state(separator_tsv, with_sed=True):
    """A CP-JKU Lightning state_dict: every tensor filled with a value unique to its key."""
    state = {}
    for i, (key, (shape, dtype)) in enumerate(layout(os.path.join(DATA, separator_tsv)).items()):
        state["model." + key] = torch.full(shape, float(i % 997), dtype=getattr(torch, dtype))
    if with_sed:
        sed = layout(os.path.join(REFERENCE_DIR, "cpjku_m2d_sed_wrapper.tsv"))
        for j, (key, (shape, dtype)) in enumerate(sed.items()):
            if key.startswith("head_norm."):  # their Stage-2 copy has no head norm
                continue
            state["embedding_model." + key] = torch.full(shape, float(j % 991),
                                                         dtype=getattr(torch, dtype))
    return state


@needs_reference
@pytest.mark.parametrize("tsv, dprnn, refine", [("cpjku_separator_noniter.tsv", False, 1),
                                                ("cpjku_separator_iter_dprnn.tsv", True, 2)])
def test_their_layout_converts_onto_ours_strictly(tsv, dprnn, refine):
    state = lightning_state(tsv)
    converted, cfg = convert_cpjku_separator(state)
    assert cfg["dprnn"] is dprnn and cfg["refine_iterations"] == refine
    assert cfg["time_film"] and cfg["embedding_injection"] and cfg["sed"] == {"use_head_norm": False}
    model = build_separator(dict(cfg))
    load_strict(model, converted, source=tsv)  # every key, every shape
    # tensors land where the rules say
    prefix = "model.base.ss_model." if refine > 1 else "model.base."
    assert torch.equal(model.injection.layer_weights, state["model.soundbeam_weights"])
    assert torch.equal(model.injection.proj.weight, state[prefix + "downsample_conv.weight"])
    assert torch.equal(model.injection.scale_bottleneck, state[prefix + "weight_x_center"])
    assert torch.equal(model.time_embedding[3].weight, state["model.time_embedding.3.weight"])
    assert torch.equal(model.base.encoder_block4.conv_block1.conv2.weight,
                       state[prefix + "encoder_block4.conv_block1.conv2.weight"])
    assert torch.equal(model.sed.strong_head.weight, state["embedding_model.strong_head.weight"])
    if dprnn:
        assert torch.equal(model.dprnn.blocks[1].freq_path.linear.weight,
                           state[prefix + "DPRNN.0.col_rnn.1.proj.weight"])
        assert torch.equal(model.dprnn.blocks[0].time_path.rnn.weight_hh_l1_reverse,
                           state[prefix + "DPRNN.0.row_rnn.0.rnn.weight_hh_l1_reverse"])
        assert torch.equal(model.dprnn.prelu.weight, state[prefix + "DPRNN.0.output.0.weight"])
        assert torch.equal(model.feedback_bn.running_var, state[prefix + "bn0_fb.running_var"])
    assert not any(k.startswith("time_film.") for k in converted)  # unused in their code: dropped


@needs_reference
def test_converter_refuses_unknown_and_missing_keys():
    state = lightning_state("cpjku_separator_noniter.tsv")
    with pytest.raises(CheckpointError, match="follow no CP-JKU rule"):
        convert_cpjku_separator(dict(state, **{"model.query_encoder.weight": torch.zeros(3)}))
    converted, cfg = convert_cpjku_separator(dict(state, **{"model.base.extra.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match="base.extra.weight"):
        load_strict(build_separator(dict(cfg)), converted, source="x")
    with pytest.raises(CheckpointError, match="outside 'model.'"):
        convert_cpjku_separator(dict(state, **{"optimizer_thing": torch.zeros(1)}))
    no_sed = {k: v for k, v in state.items() if k.startswith("model.")}
    with pytest.raises(CheckpointError, match="no 'embedding_model"):
        convert_cpjku_separator(no_sed)
    converted, cfg = convert_cpjku_separator(state)
    del converted["base.bn0.running_mean"]
    with pytest.raises(CheckpointError, match="bn0.running_mean"):
        load_strict(build_separator(dict(cfg)), converted, source="x")
    assert separator_key("base.ss_model.DPRNN.0.row_rnn.0.gate.weight").startswith("?")


@needs_reference
def test_converted_file_runs_through_stage_4_loading(tmp_path):
    from s5lib.bin import convert_cpjku
    path = tmp_path / "cpjku.ckpt"
    torch.manual_seed(0)
    state = {k: v.clone() if v.dtype == torch.int64 else torch.randn(v.shape) * 0.01
             for k, v in lightning_state("cpjku_separator_iter_dprnn.tsv").items()}
    # fixed front-end buffers and sane BatchNorm statistics, so the random model stays finite
    fresh = build_separator({"type": "audiosep_sed", "sed": {"use_head_norm": False}}).sed.state_dict()
    for key in list(state):
        if "running_var" in key:
            state[key] = torch.ones(state[key].shape)
        if key.startswith("embedding_model.") and ("to_spec" in key or "norm_stats" in key):
            state[key] = fresh[key[len("embedding_model."):]].clone()
    torch.save({"state_dict": state, "epoch": 3}, path)
    out = tmp_path / "converted"
    convert_cpjku.main(["--checkpoint", str(path), "--out_dir", str(out), "--refine_iterations", "3"])
    model, cfg, description = load_model_file(str(out / "checkpoint_best.pt"), "separator",
                                              str(out / "config.yaml"))
    assert model.kind == "audiosep_sed" and model.guidance.refine_iterations == 3
    direct, _ = load_cpjku_separator(str(path), refine_iterations=3)
    mixture = torch.randn(1, 4, 32000) * 0.01
    query = torch.zeros(1, 18)
    query[0, 4] = 1
    with torch.no_grad():
        a = model(mixture, query, n_iter=2)
        b = direct(mixture, query, n_iter=2)
    assert a.shape == (1, 1, 32000) and torch.isfinite(a).all() and torch.equal(a, b)


@needs_reference
def test_their_stage1_sed_tagger_checkpoint_loads_as_a_sed_tagger(tmp_path):
    rows = layout(os.path.join(REFERENCE_DIR, "cpjku_m2d_sed_wrapper.tsv"))
    fresh = build_separator({"type": "audiosep_sed", "sed": {}}).sed.state_dict()
    state = {}
    for key, (shape, dtype) in rows.items():  # their Lightning file: 'model.' + the Wrapper keys
        value = fresh[key].clone() if ("to_spec" in key or "norm_stats" in key or "running" in key
                                       or "num_batches" in key) else torch.randn(shape) * 0.02
        state["model." + key] = value.to(getattr(torch, dtype))
    path = tmp_path / "sed_tagger.ckpt"
    torch.save({"state_dict": state, "epoch": 69}, path)
    model, cfg, description = load_model_file(str(path), "tagger")
    assert model.kind == "sed" and cfg["use_head_norm"] is True and "key prefix 'model.'" in description
    assert torch.equal(model.strong_head.weight, state["model.strong_head.weight"])
    from s5lib.infer.tag import tag_batch
    labels = tag_batch(model, torch.randn(2, 4, 32000) * 0.05)
    assert all(1 <= len(found) <= 3 for found in labels)
