"""Direction-of-arrival measures: the angle between an estimated and a reference direction.

The official S5 scorer measures no direction; systems that predict one (KUBIG) are also scored
by the angular error of their true-positive estimates (the estimate paired with a reference by
CAPI-SDRi), in degrees.
"""
import json
import math
import os

import numpy as np


def angular_error_deg(a, b):
    """Angle in degrees between two 3-d vectors (any length; 0-length vectors give 90)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cos = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def read_estimate_doas(path):
    """``eval_results.json`` -> {estimate file name: [x, y, z] or None} for the estimates that
    carry a ``doa`` entry (an empty dict when none does). Raises ValueError naming the file for a
    malformed direction."""
    if not path or not os.path.isfile(path):
        return {}
    with open(path) as f:
        data = json.load(f)
    out = {}
    if not isinstance(data, dict):
        return out
    for entry in data.get("probabilities") or []:
        for est in (entry.get("estimate") or []) if isinstance(entry, dict) else []:
            if not isinstance(est, dict) or "doa" not in est:
                continue
            doa = est["doa"]
            if doa is not None:
                if not (isinstance(doa, list) and len(doa) == 3
                        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in doa)):
                    raise ValueError(f"{path}: estimate {est.get('filename')!r}: doa must be null "
                                     f"or a list of 3 finite numbers, got {doa!r}")
            out[est.get("filename")] = doa
    return out
