"""YAML configs with ``--key value`` overrides, ESPnet style.

Every ``python -m s5lib.bin.<step>`` takes ``--config file.yaml`` plus overrides of any key,
nested keys written with dots (``--optim.lr 1e-3``). Values are parsed as YAML scalars, so
``--epochs 3`` is an int, ``--use_amp false`` a bool and ``--labels '[a, b]'`` a list.
A config file may name a ``base:`` file that it changes (:func:`load_config_file`). The
resolved config is written beside the outputs with :func:`save_config`.
"""
import argparse
import copy
import dataclasses
import os
import re
import sys

import yaml


class ConfigError(ValueError):
    pass


_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def dataclass_from_dict(cls, values, what=None):
    """``cls(**values)`` for a config dataclass; unknown keys are a ValueError that names them
    (``<what>: unknown option(s) [...]; known: [...]``, ``what`` defaulting to the class name)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{what or cls.__name__}: unknown option(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def load_yaml(path):
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_config_file(path, _chain=()):
    """A YAML config, with its ``base:`` chain resolved.

    A file may start from another one: ``base: separator.yaml`` (a path relative to the file)
    loads that file first and merges this file's keys over it (nested mappings key by key), so
    a variant config lists only what it changes. Bases may have bases; a cycle is an error.
    """
    real = os.path.realpath(path)
    if real in _chain:
        raise ConfigError(f"{path}: 'base:' chain loops back to itself")
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: 'base:' must be a file name, got {base!r}")
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    if not os.path.isfile(base_path):
        raise ConfigError(f"{path}: base config not found: {base_path}")
    return merge(load_config_file(base_path, _chain + (real,)), data)


def merge(base, update):
    """Recursive dict merge; ``update`` wins. Returns a new dict."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(cfg, dotted, value, strict_keys=None):
    """Set ``a.b.c`` in a nested dict; with ``strict_keys`` an unknown top-level key is an error."""
    parts = dotted.replace("-", "_").split(".")
    if strict_keys is not None and parts[0] not in strict_keys:
        raise ConfigError(f"unknown option --{dotted} (known: {', '.join(sorted(strict_keys))})")
    node = cfg
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def parse_overrides(tokens):
    """Turn ``['--a.b', '1', '--c', 'x']`` into ``[('a.b', 1), ('c', 'x')]``."""
    pairs = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise ConfigError(f"expected --key value, got {tok!r}")
        key = tok[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ConfigError(f"option --{key} needs a value")
            raw = tokens[i + 1]
            i += 2
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and _EXPONENT_NUMBER.match(value):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        pairs.append((key, value))
    return pairs


def parse_config(defaults, argv=None, description=None):
    """Build a config: ``defaults`` < ``--config`` YAML < ``--key value`` overrides.

    Unknown top-level keys (not in ``defaults``) are refused, so a typo cannot pass unnoticed.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=description, add_help=True)
    parser.add_argument("--config", action="append", default=[],
                        help="YAML config file(s); later files win")
    args, rest = parser.parse_known_args(argv)
    cfg = copy.deepcopy(defaults)
    for path in args.config:
        file_cfg = load_config_file(path)
        unknown = set(file_cfg) - set(defaults)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; "
                              f"known: {sorted(defaults)}")
        cfg = merge(cfg, file_cfg)
    for key, value in parse_overrides(rest):
        set_dotted(cfg, key, value, strict_keys=set(defaults))
    return cfg


def save_config(cfg, path):
    """Write the resolved config (atomically)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False, default_flow_style=None)
    os.replace(tmp, path)
