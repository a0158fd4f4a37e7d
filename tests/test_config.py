"""Config files: --config layering, base: chains of variant configs, override parsing."""
import pytest

from s5lib.config import ConfigError, load_config_file, parse_config

DEFAULTS = {"model": {"type": "resunetk", "width": 1.0, "n_fft": 1024}, "train": {"lr": 1e-4},
            "pool": {}, "class_eq_init": 0}


def write(path, text):
    path.write_text(text)
    return str(path)


def test_variant_config_changes_only_what_it_lists(tmp_path):
    write(tmp_path / "separator.yaml", "model: {type: resunetk, n_fft: 512}\ntrain: {lr: 2.0e-3}\n")
    (tmp_path / "variants").mkdir()
    variant = write(tmp_path / "variants" / "eq.yaml",
                    "base: ../separator.yaml\nclass_eq_init: 300\nmodel: {width: 0.5}\n")
    cfg = parse_config(DEFAULTS, ["--config", variant, "--train.lr", "1e-3"])
    assert cfg["model"] == {"type": "resunetk", "width": 0.5, "n_fft": 512}  # merged key by key
    assert cfg["class_eq_init"] == 300 and cfg["train"]["lr"] == 1e-3
    assert "base" not in cfg
    # a base may itself have a base
    second = write(tmp_path / "variants" / "eq_small.yaml", "base: eq.yaml\npool: {mixtures: 600}\n")
    cfg = load_config_file(second)
    assert cfg["pool"] == {"mixtures": 600} and cfg["class_eq_init"] == 300
    assert cfg["model"]["n_fft"] == 512


def test_base_errors_name_the_file(tmp_path):
    a = write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config_file(a)
    missing = write(tmp_path / "m.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="base config not found: .*nowhere.yaml"):
        load_config_file(missing)
    bad = write(tmp_path / "bad.yaml", "base: [1, 2]\n")
    with pytest.raises(ConfigError, match="'base:' must be a file name"):
        load_config_file(bad)
    typo = write(tmp_path / "typo.yaml", "base: b2.yaml\nclass_eq_int: 3\n")
    write(tmp_path / "b2.yaml", "train: {lr: 1}\n")
    with pytest.raises(ConfigError, match="unknown key.*class_eq_int"):
        parse_config(DEFAULTS, ["--config", typo])


def test_exponent_overrides_are_numbers():
    cfg = parse_config(DEFAULTS, ["--train.lr", "1e-3", "--model.type", "1e3x"])
    assert cfg["train"]["lr"] == 1e-3 and isinstance(cfg["train"]["lr"], float)
    assert cfg["model"]["type"] == "1e3x"
