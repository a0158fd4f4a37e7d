"""Optimizer construction: per-parameter-group learning rates and layer-wise lr decay.

A YAML lists parameter groups; each parameter goes to the **first** group whose ``match`` regular
expression matches the start of its name (``re.match``, so a plain prefix such as ``encoder.``
works too). Parameters matching no group use the base ``lr`` and ``weight_decay``. Example (the
CP-JKU separator: new parts 1e-3, pretrained ResUNet 2e-4, DPRNN 5e-4, trainable SED 4e-4 with layer
decay 0.9)::

    lr: 1.0e-3
    param_groups:
      - {match: 'sed\\.', lr: 4.0e-4, layer_decay: 0.9}
      - {match: 'dprnn\\.', lr: 5.0e-4}
      - {match: 'resunet\\.', lr: 2.0e-4}
      - {match: 'tagger\\.', freeze: true}

Keys of a group: ``match`` (required), ``lr``, ``weight_decay``, ``freeze`` (set
``requires_grad=False``), and for layer-wise decay ``layer_decay``, ``block_pattern`` (a regex
whose first group is the block number; default ``blocks.<i>.``), ``num_blocks`` (default: the
largest block number matched + 1) and ``embed_pattern`` (parameters below the first block).

Layer-wise decay (BEiT convention): layer id 0 for the embeddings (patch/position embeddings, CLS
token), ``i + 1`` for block ``i``, ``num_blocks + 1`` for anything else in the group (final norm,
heads). A parameter with layer id ``l`` gets ``lr * layer_decay ** (num_blocks + 1 - l)``: the
top keeps ``lr``, the last block ``lr * decay``, the first block ``lr * decay ** num_blocks``.
"""
import re

import torch

GROUP_KEYS = {"match", "lr", "weight_decay", "freeze", "layer_decay", "block_pattern", "num_blocks",
              "embed_pattern"}
DEFAULT_BLOCK_PATTERN = r"(?:^|.*\.)blocks\.(\d+)\."
DEFAULT_EMBED_PATTERN = r"(?:^|.*\.)(patch_embed|pos_embed|cls_token|mask_token|pos_drop)"


class OptimizerConfigError(ValueError):
    pass


def _check_group_spec(index, spec):
    if not isinstance(spec, dict) or "match" not in spec:
        raise OptimizerConfigError(f"param_groups[{index}] must be a mapping with a 'match' key, "
                                   f"got {spec!r}")
    unknown = set(spec) - GROUP_KEYS
    if unknown:
        raise OptimizerConfigError(f"param_groups[{index}] has unknown key(s) {sorted(unknown)}; "
                                   f"known: {sorted(GROUP_KEYS)}")
    try:
        re.compile(spec["match"])
    except re.error as err:
        raise OptimizerConfigError(f"param_groups[{index}].match {spec['match']!r} is not a valid "
                                   f"regular expression ({err})") from None


def layer_id(name, num_blocks, block_pattern=DEFAULT_BLOCK_PATTERN,
             embed_pattern=DEFAULT_EMBED_PATTERN):
    """Layer id of a parameter for layer-wise decay (see the module docstring)."""
    found = re.match(block_pattern, name)
    if found:
        return int(found.group(1)) + 1
    if re.match(embed_pattern, name):
        return 0
    return num_blocks + 1


def layer_decay_scale(name, decay, num_blocks, block_pattern=DEFAULT_BLOCK_PATTERN,
                      embed_pattern=DEFAULT_EMBED_PATTERN):
    """The factor ``decay ** (num_blocks + 1 - layer_id)`` applied to a parameter's lr."""
    return decay ** (num_blocks + 1 - layer_id(name, num_blocks, block_pattern, embed_pattern))


def build_param_groups(model, lr, weight_decay, group_specs=()):
    """Optimizer parameter groups for ``model`` from the YAML list ``group_specs``.

    Returns a list of dicts with ``params``, ``lr``, ``weight_decay``, ``name`` and ``param_names``
    (empty groups left out). Frozen parameters (``requires_grad=False``, or ``freeze: true``) are
    left out.
    """
    group_specs = list(group_specs or [])
    for index, spec in enumerate(group_specs):
        _check_group_spec(index, spec)
    named = list(model.named_parameters())
    assigned = {}  # parameter name -> spec index (or None for the default group)
    for name, param in named:
        assigned[name] = next((i for i, spec in enumerate(group_specs)
                               if re.match(spec["match"], name)), None)
        if assigned[name] is not None and group_specs[assigned[name]].get("freeze", False):
            param.requires_grad_(False)
    groups = {}
    order = []
    for name, param in named:
        if not param.requires_grad:
            continue
        index = assigned[name]
        spec = group_specs[index] if index is not None else {}
        group_lr = float(spec.get("lr", lr))
        group_wd = float(spec.get("weight_decay", weight_decay))
        label = "default" if index is None else f"{index}:{spec['match']}"
        if spec.get("layer_decay") is not None:
            block_pattern = spec.get("block_pattern", DEFAULT_BLOCK_PATTERN)
            embed_pattern = spec.get("embed_pattern", DEFAULT_EMBED_PATTERN)
            num_blocks = spec.get("num_blocks")
            if num_blocks is None:
                num_blocks = _count_blocks([n for n in assigned if assigned[n] == index],
                                           block_pattern)
            level = layer_id(name, num_blocks, block_pattern, embed_pattern)
            group_lr = group_lr * float(spec["layer_decay"]) ** (num_blocks + 1 - level)
            label = f"{label}:layer{level}"
        if label not in groups:
            groups[label] = {"params": [], "param_names": [], "lr": group_lr,
                             "weight_decay": group_wd, "name": label}
            order.append(label)
        groups[label]["params"].append(param)
        groups[label]["param_names"].append(name)
    for index, spec in enumerate(group_specs):
        if not any(value == index for value in assigned.values()):
            raise OptimizerConfigError(f"param_groups[{index}].match {spec['match']!r} matches no "
                                       "parameter of the model")
    if not order:
        raise OptimizerConfigError("the model has no trainable parameter")
    return [groups[label] for label in order]


def _count_blocks(names, block_pattern):
    numbers = [int(m.group(1)) for m in (re.match(block_pattern, n) for n in names) if m]
    return max(numbers) + 1 if numbers else 0


def build_optimizer(param_groups, name="adamw", lr=1e-4, weight_decay=0.0, amsgrad=False,
                    betas=(0.9, 0.999), eps=1e-8, momentum=0.9, fused=False):
    """AdamW (default; ``amsgrad`` as in the DCASE baseline), Adam or SGD over ``param_groups``.

    ``fused=True`` picks torch's fused kernels (one kernel for all parameters; the caller decides
    the device, the trainer uses them on CUDA only); otherwise torch's default implementation.
    """
    name = name.lower()
    kernels = {"fused": True} if fused else {}
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, amsgrad=amsgrad,
                                 betas=tuple(betas), eps=eps, **kernels)
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay, amsgrad=amsgrad,
                                betas=tuple(betas), eps=eps, **kernels)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, weight_decay=weight_decay, momentum=momentum,
                               **kernels)
    raise OptimizerConfigError(f"unknown optimizer {name!r}; known: adamw, adam, sgd")


def describe_param_groups(param_groups):
    """One readable line per group: name, parameter count, lr, weight decay."""
    lines = []
    for group in param_groups:
        count = sum(p.numel() for p in group["params"])
        lines.append(f"{group.get('name', '?')}: {count} parameters, lr {group['lr']:.3g}, "
                     f"weight_decay {group['weight_decay']:.3g}")
    return lines
