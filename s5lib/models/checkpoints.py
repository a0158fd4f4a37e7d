"""Checkpoint helpers shared by every model: reference layouts, prefix handling, strict loading.

The released upstream checkpoints (DCASE baseline Lightning files, AudioSep, M2D, BEATs) keep
their weights under different containers and key prefixes. This module turns any of them into a
flat ``{key: tensor}`` dict that matches one of our modules, and loads it strictly: a wrong file
gives a :class:`CheckpointError` that names the file and lists the missing, unexpected and
shape-mismatched keys, instead of a long torch traceback.

It also reads the reference layout files in ``shared/reference/*.tsv`` (key, shape, dtype per
state_dict entry) so tests can check that a module is checkpoint-compatible without weights.

Renaming: every function that takes ``rename`` accepts ``None`` (identity), a mapping
``{old_key: new_key}`` (keys not in it are kept as they are; a value of ``None`` drops the key),
or a callable ``old_key -> new_key or None`` (``None`` drops the key).
"""
import json
import logging
import os
import re
import warnings
from collections.abc import Mapping

import torch

MAX_LISTED_KEYS = 20
logger = logging.getLogger(__name__)


# Extra globals that weights-only loading may rebuild for the released Lightning checkpoints, as
# (stand-in, "module.qualname") pairs (torch's tuple form, which needs no import of Lightning).
# Measured on files built in the organisers' training setup (LightningModule without
# save_hyperparameters, AdamW, no scheduler, ModelCheckpoint on the validation loss; Lightning
# 1.9.5, 2.5.1 and 2.6.6 under torch 2.11): their top-level entries (epoch, global_step,
# pytorch-lightning_version, state_dict, loops, callbacks, optimizer_states, lr_schedulers) hold
# only tensors and builtins, so the list is empty; a file that carries more (a Path or numpy value
# in hyper_parameters, say) is refused and its types are named.
LIGHTNING_SAFE_GLOBALS = ()


def lightning_safe_globals():
    """The extra globals weights-only loading allows (see :data:`LIGHTNING_SAFE_GLOBALS`)."""
    return list(LIGHTNING_SAFE_GLOBALS)


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the model; the message names the file."""

    def __init__(self, source, problem):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{source}: {problem}")


# ----------------------------------------------------------------------------------------------
# Reference layouts
# ----------------------------------------------------------------------------------------------
def read_reference_tsv(path):
    """Read a reference layout file.

    Returns:
        (rows, meta): ``rows`` maps each state_dict key to ``(shape tuple, dtype name)`` in file
        order; ``meta`` is the list of comment lines with their leading ``"# "`` removed.
    """
    if not os.path.isfile(path):
        raise CheckpointError(path, "reference layout file does not exist")
    rows, meta = {}, []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("#"):
                meta.append(line[2:] if line.startswith("# ") else line[1:])
                continue
            if line == "key\tshape\tdtype":
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise CheckpointError(path, f"line {line_number}: expected 3 tab-separated fields")
            key, shape, dtype = fields
            rows[key] = (tuple(json.loads(shape)), dtype)
    return rows, meta


def reference_parameter_count(meta):
    """The ``total parameters`` number from a reference file's comment block (or None)."""
    for line in meta:
        if line.startswith("total parameters"):
            number = line.split(":", 1)[1].split("(")[0].strip()
            return int(number.replace("_", "").replace(",", ""))
    return None


def dtype_name(tensor):
    """Torch dtype of a tensor as a plain name, e.g. ``float32``."""
    return str(tensor.dtype).replace("torch.", "")


def _make_renamer(rename):
    if rename is None:
        return lambda key: key
    if isinstance(rename, Mapping):
        return lambda key: rename.get(key, key)
    if callable(rename):
        return rename
    raise TypeError(f"rename must be None, a mapping or a callable, not {type(rename).__name__}")


def rename_keys(state_dict, rename=None):
    """Apply a renaming (see module docstring) to a state dict; keys mapped to None are dropped."""
    renamer = _make_renamer(rename)
    renamed = {}
    for key, value in state_dict.items():
        new_key = renamer(key)
        if new_key is None:
            continue
        if new_key in renamed:
            raise ValueError(f"renaming maps two keys onto {new_key!r}")
        renamed[new_key] = value
    return renamed


def compare_state_dict(state_dict, rows, rename=None):
    """Compare a state dict with a reference layout.

    Args:
        state_dict: ours, ``{key: tensor}``.
        rows: reference ``{key: (shape, dtype)}`` as returned by :func:`read_reference_tsv`.
        rename: maps OUR keys to reference keys (see module docstring).
    Returns:
        (missing, unexpected, mismatched), sorted lists of keys: reference keys we lack, our
        keys the reference lacks, and common keys whose shape or dtype differs.
    """
    ours = {key: (tuple(value.shape), dtype_name(value))
            for key, value in rename_keys(state_dict, rename).items()}
    missing = sorted(set(rows) - set(ours))
    unexpected = sorted(set(ours) - set(rows))
    mismatched = sorted(key for key in set(ours) & set(rows)
                        if ours[key][0] != tuple(rows[key][0]) or ours[key][1] != rows[key][1])
    return missing, unexpected, mismatched


def unique_parameter_count(module):
    """Number of elements in the distinct ``nn.Parameter``s of a module (frozen ones included)."""
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------
# Reading checkpoint files
# ----------------------------------------------------------------------------------------------
# Files from outside are untrusted: unpickling one can run any code it carries. Every checkpoint
# is read with ``torch.load(weights_only=True)``, which rebuilds tensors and plain containers only;
# the few extra types that the released Lightning checkpoints carry are allowed by name through
# torch's safe-globals list (see LIGHTNING_SAFE_GLOBALS). A full unpickle happens only when the
# user asks for it (``--trust_checkpoint true`` -> :func:`trust_checkpoints`), with a warning
# that names the file.
_TRUST_CHECKPOINTS = False
WEIGHTS_ONLY_REFUSAL = "Weights only load failed"


def trust_checkpoints(value=True):
    """Allow (``True``) or forbid (``False``, the default) full unpickling of checkpoint files that
    weights-only loading refuses, for this process. Entry points call it for
    ``--trust_checkpoint true``."""
    global _TRUST_CHECKPOINTS
    _TRUST_CHECKPOINTS = bool(value)


def checkpoints_trusted():
    return _TRUST_CHECKPOINTS


def _refused_type(message):
    """The ``module.name`` that torch's weights-only unpickler refused, from its error message."""
    match = re.search(r"(?:Unsupported global|unsupported GLOBAL|GLOBAL)\W+([A-Za-z_][\w.]*)", message)
    if match:
        return match.group(1)
    match = re.search(r"Unsupported operand[^\n]*", message)
    return match.group(0) if match else "a type outside the weights-only allowlist"


def pickled_globals(path):
    """Every ``module.name`` a torch checkpoint's pickle refers to (read without unpickling).

    Works for the zip format of ``torch.save`` and for legacy plain pickles, any protocol
    (torch's own scanner stops at protocol-4 framing). Returns a sorted list, empty when the
    file cannot be scanned.
    """
    import pickletools
    import zipfile
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(member) if member else b""
        else:
            with open(path, "rb") as handle:
                data = handle.read()
    except (OSError, zipfile.BadZipFile):
        return []
    found, memo, strings = set(), {}, []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                        "SHORT_BINSTRING", "BINSTRING", "STRING"):
                strings.append(arg)
            elif name in ("BINGET", "LONG_BINGET", "GET") and isinstance(memo.get(arg), str):
                strings.append(memo[arg])
            elif name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                memo[arg] = strings[-1]
            elif name == "GLOBAL":
                found.add(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001 - a damaged pickle: report what was seen so far
        pass
    return sorted(found)


def _unsafe_globals(path):
    """The globals of ``path`` that weights-only loading does not allow (best effort)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except (ImportError, AttributeError):
        allowed = set()
    allowed |= {f"{getattr(g, '__module__', '')}.{getattr(g, '__qualname__', '')}"
                for g in lightning_safe_globals() if not isinstance(g, tuple)}
    allowed |= {g[1] for g in lightning_safe_globals() if isinstance(g, tuple)}
    return [name for name in pickled_globals(path)
            if name not in allowed and not name.startswith(("torch.", "collections.OrderedDict"))]


def load_checkpoint_file(path, trust=None):
    """Read a ``.ckpt``/``.pt``/``.pth`` file onto the CPU, weights-only.

    ``torch.load(weights_only=True)`` with the Lightning types of :data:`LIGHTNING_SAFE_GLOBALS`
    allowed. A file that needs anything else is refused with a :class:`CheckpointError` naming the
    file and the refused type, unless ``trust`` (default: :func:`trust_checkpoints`' setting) is
    true: then it is fully unpickled, with a warning naming the file. A missing, truncated or
    corrupt file raises :class:`CheckpointError` too.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(path, "checkpoint file does not exist")
    trust = _TRUST_CHECKPOINTS if trust is None else bool(trust)
    try:
        with torch.serialization.safe_globals(lightning_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every failure is reported with the file name
        message = str(error)
        if WEIGHTS_ONLY_REFUSAL not in message:
            raise CheckpointError(path, f"unreadable checkpoint ({type(error).__name__}: "
                                        f"{message.splitlines()[0] if message else ''})") from None
        unsafe = _unsafe_globals(path)
        refused = ", ".join(unsafe) if unsafe else _refused_type(message)
        if not trust:
            raise CheckpointError(
                path, f"refused: it holds {refused}, which weights-only loading does not rebuild; "
                      "reading it would unpickle arbitrary objects, and unpickling can run any "
                      "code the file carries. If you trust where this file comes from, pass "
                      "--trust_checkpoint true") from None
        warnings.warn(f"{path}: fully unpickling a checkpoint that holds {refused} "
                      "(--trust_checkpoint true); this runs whatever code the file carries",
                      RuntimeWarning, stacklevel=2)
        logger.warning("%s: full unpickle (--trust_checkpoint true); it holds %s", path, refused)
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as full_error:  # noqa: BLE001
            raise CheckpointError(path, f"unreadable checkpoint ({type(full_error).__name__}: "
                                        f"{full_error})") from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(path, f"expected a dict of tensors, found {type(checkpoint).__name__}")
    return dict(checkpoint)


def _is_tensor_dict(value):
    return isinstance(value, Mapping) and len(value) > 0 and all(
        isinstance(v, torch.Tensor) for v in value.values())


def extract_state_dict(checkpoint, prefixes=("model.", "module."), keep_unprefixed=False,
                       source="<checkpoint>"):
    """Return the flat weights of a checkpoint, with the model prefix removed.

    The weights are taken from ``checkpoint['state_dict']`` (Lightning), else
    ``checkpoint['model']`` (BEATs, M2D EVAR files), else the checkpoint itself when it is a plain
    ``{key: tensor}`` dict. Then the first prefix in ``prefixes`` that at least one key starts
    with is stripped. Keys without that prefix are dropped, unless ``keep_unprefixed`` is set
    (then they are kept verbatim). When no prefix matches, the keys are returned unchanged.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(source, f"expected a dict, found {type(checkpoint).__name__}")
    if isinstance(checkpoint.get("state_dict"), Mapping):
        weights = checkpoint["state_dict"]
    elif isinstance(checkpoint.get("model"), Mapping):
        weights = checkpoint["model"]
    elif _is_tensor_dict(checkpoint):
        weights = checkpoint
    else:
        raise CheckpointError(source, "no 'state_dict' or 'model' entry and not a dict of tensors "
                                      f"(top-level keys: {sorted(checkpoint)[:10]})")
    weights = {key: value for key, value in weights.items() if isinstance(value, torch.Tensor)}
    if not weights:
        raise CheckpointError(source, "the checkpoint holds no tensors")
    for prefix in prefixes:
        if any(key.startswith(prefix) for key in weights):
            stripped = {}
            for key, value in weights.items():
                if key.startswith(prefix):
                    stripped[key[len(prefix):]] = value
                elif keep_unprefixed:
                    stripped[key] = value
            return stripped
    return dict(weights)


def detect_prefix(keys, anchor_key):
    """Find the prefix put in front of ``anchor_key`` (a known module key), as the DCASE loader does.

    Returns the prefix string ('' if ``anchor_key`` is present as is) or None if no key ends with it.
    """
    for key in keys:
        if key.endswith(anchor_key):
            return key[: len(key) - len(anchor_key)]
    return None


def strip_prefix(state_dict, prefix, drop_others=True):
    """Remove ``prefix`` from every key that has it; other keys are dropped (or kept)."""
    result = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            result[key[len(prefix):]] = value
        elif not drop_others:
            result[key] = value
    return result


def _listing(title, keys):
    if not keys:
        return ""
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = f" ... and {len(keys) - MAX_LISTED_KEYS} more" if len(keys) > MAX_LISTED_KEYS else ""
    return f"\n  {len(keys)} {title}: {shown}{more}"


def check_fit(module, state_dict, source="<state_dict>"):
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly the module's keys and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{key} (file {list(state_dict[key].shape)}, model {list(expected[key].shape)})"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape))
    if missing or unexpected or mismatched:
        raise CheckpointError(
            source, f"does not fit {type(module).__name__}:"
                    + _listing("missing keys", missing)
                    + _listing("unexpected keys", unexpected)
                    + _listing("shape mismatches", mismatched))


def load_strict(module, state_dict, source="<state_dict>", rename=None):
    """Load ``state_dict`` into ``module`` strictly (every key, every shape, buffers included).

    Args:
        module: the target ``nn.Module``.
        state_dict: flat weights, already without the container prefix (see
            :func:`extract_state_dict`).
        source: the file name, used in error messages.
        rename: maps CHECKPOINT keys to module keys (see module docstring).
    Raises:
        CheckpointError listing the first missing / unexpected / shape-mismatched keys.
    """
    try:
        renamed = rename_keys(state_dict, rename)
    except ValueError as error:
        raise CheckpointError(source, str(error)) from None
    check_fit(module, renamed, source)
    try:
        module.load_state_dict(renamed, strict=True)
    except RuntimeError as error:  # e.g. a dtype that cannot be copied
        raise CheckpointError(source, f"load_state_dict failed: {error}") from None
    return module


def load_strict_from_file(module, path, prefixes=("model.",), rename=None):
    """Read ``path``, strip the first matching prefix, and load strictly into ``module``."""
    checkpoint = load_checkpoint_file(path)
    state_dict = extract_state_dict(checkpoint, prefixes=prefixes, source=path)
    return load_strict(module, state_dict, source=path, rename=rename)


# ----------------------------------------------------------------------------------------------
# Key-renaming tables
# ----------------------------------------------------------------------------------------------
AUDIOSEP_SEPARATOR_PREFIXES = ("ss_model.base.", "ss_model.film.")


def audiosep_key_map(key):
    """AudioSep checkpoint key -> our ResUNet30 key, or None for keys we do not use.

    AudioSep's Lightning file holds ``ss_model.*`` (the separator) and ``query_encoder.model.*``
    (the frozen CLAP). As CP-JKU does, only ``ss_model.base.*`` and ``ss_model.film.*`` are kept
    and ``ss_model.`` is stripped; our ResUNet30 uses the same names below that.
    """
    if key.startswith(AUDIOSEP_SEPARATOR_PREFIXES):
        return key[len("ss_model."):]
    return None


def audiosep_key_map_to_checkpoint(key):
    """Inverse of :func:`audiosep_key_map` for our separator keys (``base.*``, ``film.*``)."""
    if key.startswith(("base.", "film.")):
        return "ss_model." + key
    return None
