"""Iterative refinement at inference (CP-JKU, SPEC §7.2): run a refining separator for K steps and
keep the estimate of every step, so one pass gives the score after each step 1..K (the report's
Fig. 2).

The separator must take ``n_iter`` and ``return_steps`` (:class:`~s5lib.models.audiosep_sed.AudioSepSED`
built with ``refine_iterations`` > 1); one query per batch row, as the single-query ResUNet.
"""
import torch

from s5lib.infer.end_to_end import is_end_to_end
from s5lib.infer.separate import single_query_chunks

# redux: s5lib.infer.redux; end_to_end: s5lib.infer.end_to_end (a separator that labels its own
# slots; no tagger); caption_queried: s5lib.infer.caption_query (a LASS separator, captions)
PROCEDURES = ("single", "iterative", "redux", "end_to_end", "caption_queried")


def check_procedure(separator, procedure, steps):
    """The number of steps to run (1 for ``single``); a clear error when the separator cannot refine."""
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure must be one of {PROCEDURES}, got {procedure!r}")
    end_to_end = is_end_to_end(separator)
    if end_to_end != (procedure == "end_to_end"):
        if end_to_end:
            raise ValueError(f"the {getattr(separator, 'kind', '?')} separator labels its own slots "
                             "(no label query): use procedure: end_to_end")
        raise ValueError(f"procedure 'end_to_end' needs an end-to-end separator (e.g. type kubig); "
                         f"this one is a label-queried {getattr(separator, 'kind', '?')}")
    captioned = getattr(separator, "kind", "") == "caption_queried"
    if captioned != (procedure == "caption_queried"):
        if captioned:
            raise ValueError("a LASS separator is queried with captions: use procedure: "
                             "caption_queried")
        raise ValueError("procedure 'caption_queried' needs a LASS separator (a train_lass "
                         f"experiment, model.type lass); this one is a {getattr(separator, 'kind', '?')}")
    if procedure in ("single", "redux", "end_to_end", "caption_queried"):
        return 1
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"refine_steps must be >= 1, got {steps}")
    if getattr(separator, "feedback_bn", None) is None:
        raise ValueError(f"procedure 'iterative' needs a separator trained with refinement "
                         f"(model.refine_iterations > 1); this one is a {getattr(separator, 'kind', '?')} "
                         "without a feedback input")
    return steps


@torch.no_grad()
def separate_batch_steps(model, mixture, label_lists, steps, max_rows=16):
    """Every step's estimates: a list of ``steps`` entries, each a list (per mixture) of
    (label, (N,) tensor), the same layout as :func:`s5lib.infer.separate.separate_batch`."""
    out = [[[] for _ in label_lists] for _ in range(steps)]
    for chunk, mix, query in single_query_chunks(mixture, label_lists, max_rows):
        estimates = model(mix, query, n_iter=steps, return_steps=True)
        for k, est in enumerate(estimates):
            for r, (b, label) in enumerate(chunk):
                out[k][b].append((label, est[r, 0].float()))
    return out
