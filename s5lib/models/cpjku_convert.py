"""Strict conversion of CP-JKU's separator checkpoints (theMoro/dcase25task4) onto our
:class:`~s5lib.models.audiosep_sed.AudioSepSED`.

Their Lightning checkpoint's ``state_dict`` holds ``model.*`` (the separator) and ``embedding_model.*``
(the Stage-2 SED copy, a ``Wrapper(m2d)`` built without ``head_norm``); a plain separator state_dict
(no prefixes) is accepted too, then without an SED. Key rules (layout: tests/data/cpjku_separator_*.tsv):

====================================================  =========================================
theirs                                                ours
====================================================  =========================================
``base.ss_model.X`` (iterative) / ``base.X``          ``base.X``
``soundbeam_weights``                                 ``injection.layer_weights`` (softmax logits)
``base[.ss_model].weight_x_center``                   ``injection.scale_bottleneck``
``base[.ss_model].weight_soundbeam_features``         ``injection.scale_injected``
``base[.ss_model].downsample_conv.*`` / ``_bn.*``     ``injection.proj.*`` / ``injection.norm.*``
``base.ss_model.bn0_fb.*``                            ``feedback_bn.*``
``base.ss_model.DPRNN.0.row_rnn.i.rnn.*``             ``dprnn.blocks.i.time_path.rnn.*``
``....row_rnn.i.proj.*`` / ``row_norm.i.*``           ``....time_path.linear.*`` / ``.norm.*``
``....col_rnn.i.*`` / ``col_norm.i.*``                the same under ``freq_path``
``....DPRNN.0.output.0.weight`` / ``output.1.*``      ``dprnn.prelu.weight`` / ``dprnn.output.*``
``time_embedding.*``                                  ``time_embedding.*``
``film.*``, ``label_embedding.*``                     unchanged
``time_film.*``                                       dropped (built by their code, never used)
``embedding_model.X``                                 ``sed.X``
====================================================  =========================================

Every key must follow one of these rules and every key of the model must be filled: anything else
is a :class:`~s5lib.models.checkpoints.CheckpointError` naming the keys. The architecture (which
guidance terms, DPRNN, refinement, SED head norm) is read from the keys; CP-JKU's evaluation runs
``max_iterations`` steps, which the weights do not record (``refine_iterations`` 2, their config's
default, unless given).
"""
import re

from s5lib.models.checkpoints import CheckpointError, extract_state_dict, load_checkpoint_file

SEPARATOR_PREFIX = "model."
SED_PREFIX = "embedding_model."
_DPRNN = re.compile(r"^base\.DPRNN\.0\.(row|col)_(rnn|norm)\.(\d+)\.(.*)$")
_DPRNN_OUTPUT = {"base.DPRNN.0.output.0.weight": "dprnn.prelu.weight"}
_INJECTION = {"base.weight_x_center": "injection.scale_bottleneck",
              "base.weight_soundbeam_features": "injection.scale_injected",
              "soundbeam_weights": "injection.layer_weights"}


def separator_key(key):
    """One CP-JKU separator key -> ours, or None for a key that is dropped (``time_film.*``)."""
    if key.startswith("time_film."):
        return None
    if key.startswith("base.ss_model."):
        key = "base." + key[len("base.ss_model."):]
    if key in _INJECTION:
        return _INJECTION[key]
    if key in _DPRNN_OUTPUT:
        return _DPRNN_OUTPUT[key]
    for theirs, ours in (("base.downsample_conv.", "injection.proj."),
                         ("base.downsample_bn.", "injection.norm."),
                         ("base.bn0_fb.", "feedback_bn."),
                         ("base.DPRNN.0.output.1.", "dprnn.output.")):
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    found = _DPRNN.match(key)
    if found:
        axis, kind, index, rest = found.groups()
        path = "time_path" if axis == "row" else "freq_path"
        if kind == "norm":
            return f"dprnn.blocks.{index}.{path}.norm.{rest}"
        if rest.startswith("rnn."):
            return f"dprnn.blocks.{index}.{path}.{rest}"
        if rest.startswith("proj."):
            return f"dprnn.blocks.{index}.{path}.linear.{rest[len('proj.'):]}"
        return f"?{key}"  # unknown inside the DPRNN: reported by the caller
    if key.startswith(("base.", "film.", "label_embedding.", "time_embedding.")):
        return key
    return f"?{key}"


def split_checkpoint(weights, source):
    """(separator weights, SED weights or None) of a CP-JKU file's state_dict."""
    if any(k.startswith(SEPARATOR_PREFIX) for k in weights):
        other = sorted(k for k in weights if not k.startswith((SEPARATOR_PREFIX, SED_PREFIX)))
        if other:
            raise CheckpointError(source, f"{len(other)} keys outside 'model.' and 'embedding_model.': "
                                          f"{', '.join(other[:10])}")
        separator = {k[len(SEPARATOR_PREFIX):]: v for k, v in weights.items()
                     if k.startswith(SEPARATOR_PREFIX)}
        sed = {k[len(SED_PREFIX):]: v for k, v in weights.items() if k.startswith(SED_PREFIX)}
        return separator, (sed or None)
    return dict(weights), None


def convert_cpjku_separator(weights, source="<state_dict>"):
    """CP-JKU state_dict (Lightning ``state_dict`` or plain separator) -> (our state_dict, model
    config dict for :func:`s5lib.models.factory.build_separator`)."""
    separator, sed = split_checkpoint(weights, source)
    if "base.stft.conv_real.weight" not in separator and "base.ss_model.stft.conv_real.weight" not in separator:
        raise CheckpointError(source, "no 'base[.ss_model].stft.conv_real.weight': not a CP-JKU "
                                      f"separator (first keys: {list(separator)[:5]})")
    converted, unknown, dropped = {}, [], []
    for key, value in separator.items():
        new = separator_key(key)
        if new is None:
            dropped.append(key)
        elif new.startswith("?"):
            unknown.append(key)
        else:
            converted[new] = value
    if unknown:
        raise CheckpointError(source, f"{len(unknown)} separator keys follow no CP-JKU rule: "
                                      f"{', '.join(unknown[:20])}")
    for key, value in (sed or {}).items():
        converted["sed." + key] = value
    time_film = "time_embedding.0.weight" in converted
    injection = "injection.layer_weights" in converted
    refine = "feedback_bn.weight" in converted
    if (time_film or injection) and sed is None:
        raise CheckpointError(source, "the separator uses Time-FiLM / embedding injection but the "
                                      "file has no 'embedding_model.*' (the Stage-2 SED): give the "
                                      "Lightning checkpoint, not the separator's weights alone")
    cfg = {"type": "audiosep_sed", "time_film": time_film, "embedding_injection": injection,
           "dprnn": any(k.startswith("dprnn.") for k in converted),
           "refine_iterations": 2 if refine else 1,
           "n_fft": int(converted["base.stft.conv_real.weight"].shape[-1]), "hop_length": 160}
    if sed is not None:
        cfg["sed"] = {"use_head_norm": "sed.head_norm.running_mean" in converted}
    if "label_embedding.0.weight" in converted:
        cfg["condition_size"] = int(converted["label_embedding.0.weight"].shape[0])
    return converted, cfg


def load_cpjku_separator(path, refine_iterations=None):
    """Build our separator from a CP-JKU checkpoint file and load it strictly. Returns
    ``(model, model config)``; the model is in eval mode."""
    from s5lib.models.checkpoints import load_strict
    from s5lib.models.factory import build_separator
    weights = extract_state_dict(load_checkpoint_file(path), prefixes=(), source=path)
    converted, cfg = convert_cpjku_separator(weights, source=path)
    if refine_iterations and cfg["refine_iterations"] > 1:
        cfg["refine_iterations"] = int(refine_iterations)
    model = build_separator(dict(cfg))
    load_strict(model, converted, source=path)
    return model.eval(), cfg
