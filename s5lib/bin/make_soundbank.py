"""Build the embedded synthetic mini soundbank in the DCASE dev_set layout.

    python -m s5lib.bin.make_soundbank --out DIR [--seed 0] [--size mini|tiny]
                                       [--ir_seconds X] [--overwrite true] [--config x.yaml]

Options may also come from a YAML file (``--config``); command-line keys win. A finished bank
with the same settings is left as it is unless ``--overwrite true`` is given.
"""
import sys

from s5lib.config import ConfigError, parse_config

DEFAULTS = {
    "out": "",  # output directory (the dev_set folder); required
    "seed": 0,
    "size": "mini",  # mini | tiny
    "ir_seconds": None,  # room-response length in s (default: 0.5 mini, 0.25 tiny)
    "overwrite": False,
}


def _normalise_flags(argv):
    """Accept a bare ``--overwrite`` (no value) as ``--overwrite true``."""
    out = []
    for i, token in enumerate(argv):
        out.append(token)
        if token == "--overwrite" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            out.append("true")
    return out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(DEFAULTS, _normalise_flags(argv), description=__doc__)
    if not cfg["out"]:
        raise ConfigError("--out DIR is required (where to write the soundbank)")
    if not isinstance(cfg["overwrite"], bool):
        raise ConfigError(f"--overwrite must be true or false, got {cfg['overwrite']!r}")
    from s5lib.data.soundbank import build_mini_soundbank

    summary = build_mini_soundbank(cfg["out"], seed=int(cfg["seed"]), size=str(cfg["size"]),
                                   overwrite=cfg["overwrite"], ir_seconds=cfg["ir_seconds"],
                                   progress=True)
    state = "already built, skipped" if summary["skipped"] else f"built in {summary['seconds']} s"
    print(f"mini soundbank at {summary['root']}: {state}")
    print(f"  seed {summary['seed']}, size {summary['size']}, "
          f"room responses {summary['ir_seconds']} s, {summary['megabytes']} MB")
    for kind, per_split in summary["counts"].items():
        print(f"  {kind:13s} " + ", ".join(f"{split} {n}" for split, n in per_split.items()))
    return summary


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, ValueError) as err:
        sys.exit(f"make_soundbank: error: {err}")
