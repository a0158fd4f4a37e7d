"""REDUX's classify / separate / verify / subtract strategy (SPEC §7.3, report §3.4-3.5).

One tagger and one separator serve every position of the pipeline (C1, C2, ..., Sep1, Sep2 are
steps, not models). For a mixture ``y`` (all channels; estimates and subtraction act on channel 0,
the reference channel):

1. **C1** tags ``y``: labels ``l_1..l_n`` with probabilities ``p_k`` (the decoding of the
   ``decode:`` section: 1-3 labels for a 2025 tagger; 0-3, duplicates allowed, for a 2026 one).
2. **Sep** separates ``y`` for those labels: ``w_1..w_n``.
3. **C2** tags every ``w_k`` alone: its most probable class ``v_k`` with probability ``q_k``, or
   *silence* (no class reaches the decoding threshold; a 2026 slot tagger: every slot silent),
   which counts as probability ``silence_probability`` (0.51).
4. Slot ``k`` is *confirmed* when ``v_k == l_k``. With ``a`` of the ``n`` slots confirmed:

   * **I** (``a == n``): done, the ``n`` estimates are the output.
   * **II** (``a == n - 1``, ``n >= 2``): the remaining estimate is the residual
     ``y[0] - sum of the confirmed w`` (report eq. 5), labelled by **C3**; it is dropped (silence)
     when C3 finds silence or a label that repeats a confirmed one.
   * **IV** (``a == 0``): each slot takes the more probable of ``(l_k, p_k)`` and ``(v_k, q_k)``
     (silence drops the slot) and **Sep2** separates the current mixture again with those labels.
   * **III** (otherwise, ``1 <= a <= n - 2``): the confirmed estimates are kept and subtracted,
     ``y_1 = y - sum of the confirmed w``; the next round tags ``y_1`` (**C_i**) and queries the
     ``n - a`` open slots with the most probable labels among C_i's labels and the unconfirmed
     labels of the last round (both classifiers; silence at 0.51: choosing it closes a slot), then
     separates ``y_1`` (**Sep_i**) and verifies (**C_i+1**) as in 2-4. After ``max_rounds`` rounds
     a round that would be case III is resolved as case IV.

"Repeats a confirmed label" (2025: the classes of a mixture are distinct) is generalised to the
2026 rules, where a mixture may hold two sources of one class: a class may appear in the output
as many times as C1 decoded it (at least once), so a duplicate C1 predicted is allowed and any
other repeat is silence. A mixture for which C1 decodes no label (2026: an empty scene) gets no
estimate (case ``empty``).

The subtraction acts on channel 0; the re-separated mixture keeps the other channels as they were
(``residual_input: channel0``) or repeats the channel-0 residual on every channel (``replicate``).

``verify_level`` (the report does not say): ``raw`` gives C2 / C3 the estimates as they are;
``mixture`` scales each to the RMS of the channel 0 it was separated from first (the tagger was
trained on mixtures, and a quiet estimate reads as "less of everything"); an estimate more than
60 dB below that mixture is then silence, whatever the tagger says of it.

Every mixture's path is recorded: the case of each round (e.g. ``["III", "II"]``), the number of
rounds and separator / tagger calls.
"""
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch

from s5lib import constants
from s5lib.infer.separate import separate_batch
from s5lib.infer.tag import class_probabilities, is_slot_tagger, tag_batch
from s5lib.models.tagger import decode_slots

RESIDUAL_INPUTS = ("channel0", "replicate")
VERIFY_LEVELS = ("raw", "mixture")
CASES = ("I", "II", "III", "IV", "empty")
STRATEGY_DEFAULTS = {"max_rounds": 3, "silence_probability": 0.51, "residual_input": "channel0",
                     "verify_level": "raw"}
# verify_level: mixture: an estimate this far below the mixture it came from is silence, whatever
# the tagger says of it
SILENCE_FLOOR_DB = -60.0


def check_strategy(options):
    """The strategy options with defaults filled in; a clear error for a wrong one."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(STRATEGY_DEFAULTS))
    if unknown:
        raise ValueError(f"strategy: unknown option(s) {unknown}; known: {sorted(STRATEGY_DEFAULTS)}")
    full = dict(STRATEGY_DEFAULTS, **options)
    if int(full["max_rounds"]) < 1:
        raise ValueError(f"strategy: max_rounds must be >= 1, got {full['max_rounds']}")
    if not 0.0 <= float(full["silence_probability"]) <= 1.0:
        raise ValueError(f"strategy: silence_probability must be in [0, 1], got "
                         f"{full['silence_probability']}")
    if full["residual_input"] not in RESIDUAL_INPUTS:
        raise ValueError(f"strategy: residual_input must be one of {RESIDUAL_INPUTS}, got "
                         f"{full['residual_input']!r}")
    if full["verify_level"] not in VERIFY_LEVELS:
        raise ValueError(f"strategy: verify_level must be one of {VERIFY_LEVELS}, got "
                         f"{full['verify_level']!r}")
    return full


@dataclass
class MixtureState:
    """One mixture's progress through the strategy."""

    mixture: torch.Tensor                       # (C, L): the current (residual) mixture
    limits: Counter                             # how often each class may appear in the output
    labels: List[Tuple[str, float]] = field(default_factory=list)   # this round's queries
    confirmed: List[Tuple[str, torch.Tensor, float]] = field(default_factory=list)
    outputs: Optional[List[Tuple[str, torch.Tensor, float]]] = None
    cases: List[str] = field(default_factory=list)
    separator_calls: int = 0
    tagger_calls: int = 0

    def allowed(self, label, taken=()):
        """Whether ``label`` may be added to the confirmed labels and ``taken``."""
        used = sum(1 for lbl, _, _ in self.confirmed if lbl == label) + sum(1 for lbl in taken if lbl == label)
        return used < max(1, self.limits.get(label, 0))

    def finish(self, case, extra=()):
        self.cases.append(case)
        self.outputs = list(self.confirmed) + list(extra)

    def record(self):
        return {"cases": list(self.cases), "case": self.cases[-1] if self.cases else None,
                "rounds": len(self.cases), "separator_calls": self.separator_calls,
                "tagger_calls": self.tagger_calls}


def best_labels(candidates, n_open, state):
    """Up to ``n_open`` labels from ``candidates`` [(label or None, probability)], most probable
    first, each allowed by ``state``; a silence (None) candidate chosen closes one slot."""
    chosen, closed = [], 0
    for label, prob in sorted(candidates, key=lambda lp: -lp[1]):
        if len(chosen) + closed >= n_open:
            break
        if label is None:
            closed += 1
        elif state.allowed(label, [lbl for lbl, _ in chosen]):
            chosen.append((label, prob))
    return chosen


class ReduxStrategy:
    """The strategy over a batch of mixtures.

    Args:
        tag: ``tag(mixtures (N, C, L)) -> [[(label, probability), ...], ...]``, the mixture
            decoding (C1, C_i).
        verify: ``verify(waveforms (N, L)) -> [(label or None, probability), ...]``, the label of
            one separated waveform (C2, C3); None is silence.
        separate: ``separate(mixtures (N, C, L), label_lists) -> [[(label, (L,) tensor), ...], ...]``.
        max_rounds, silence_probability, residual_input: see the module docstring.
    """

    def __init__(self, tag: Callable, verify: Callable, separate: Callable, max_rounds=3,
                 silence_probability=0.51, residual_input="channel0", verify_level="raw"):
        options = check_strategy(dict(max_rounds=max_rounds, silence_probability=silence_probability,
                                      residual_input=residual_input, verify_level=verify_level))
        self.tag, self.verify, self.separate_fn = tag, verify, separate
        self.max_rounds = int(options["max_rounds"])
        self.silence_probability = float(options["silence_probability"])
        self.residual_input = options["residual_input"]
        self.verify_level = options["verify_level"]

    # -- helpers ---------------------------------------------------------------------------
    def _verify(self, waves, references):
        """C2 / C3 on ``waves``; ``references``: the channel 0 each was separated from."""
        if not waves:
            return []
        batch = torch.stack(waves)
        silent = torch.zeros(len(waves), dtype=torch.bool)
        if self.verify_level == "mixture":
            # the tagger was trained on mixtures: present every estimate at its mixture's level
            level = batch.float().square().mean(dim=1).sqrt()
            target = torch.stack(references).float().square().mean(dim=1).sqrt()
            silent = (level <= target * 10 ** (SILENCE_FLOOR_DB / 20)).cpu()
            batch = batch * (target / level.clamp(min=1e-12)).to(batch.dtype)[:, None]
        out = self.verify(batch)
        return [(None, self.silence_probability) if quiet or label is None else (label, float(prob))
                for (label, prob), quiet in zip(out, silent.tolist())]

    def _separate(self, states, label_lists):
        mixtures = torch.stack([s.mixture for s in states])
        for s in states:
            s.separator_calls += 1
        return [[wave for _, wave in row] for row in self.separate_fn(mixtures, label_lists)]

    def _residual(self, state, waves):
        """The current mixture minus ``waves`` on channel 0 (C, L)."""
        residual = state.mixture[0] - sum(waves)
        if self.residual_input == "replicate":
            return residual[None].expand_as(state.mixture).clone()
        mixture = state.mixture.clone()
        mixture[0] = residual
        return mixture

    # -- the procedure -----------------------------------------------------------------------
    def run(self, mixtures):
        """mixtures (B, C, L) -> (outputs, records): per mixture a list of (label, (L,) waveform,
        probability) and a dict of its path (:meth:`MixtureState.record`)."""
        decoded = self.tag(mixtures)
        states = []
        for mixture, labels in zip(mixtures, decoded):
            state = MixtureState(mixture=mixture, limits=Counter(lbl for lbl, _ in labels),
                                 labels=[(lbl, float(p)) for lbl, p in labels], tagger_calls=1)
            if not state.labels:
                state.finish("empty")
            states.append(state)
        while True:
            active = [s for s in states if s.outputs is None]
            if not active:
                break
            self._round(active)
        return [s.outputs for s in states], [s.record() for s in states]

    def _round(self, active):
        waves = self._separate(active, [[lbl for lbl, _ in s.labels] for s in active])
        flat = [w for row in waves for w in row]
        references = [s.mixture[0] for s, row in zip(active, waves) for _ in row]
        verdicts = iter(self._verify(flat, references))
        for s in active:
            s.tagger_calls += 1
        case2, case3, case4 = [], [], []
        for s, row in zip(active, waves):
            slots = [(lbl, p, w, next(verdicts)) for (lbl, p), w in zip(s.labels, row)]
            agree = [slot for slot in slots if slot[3][0] == slot[0]]
            rest = [slot for slot in slots if slot[3][0] != slot[0]]
            n, a = len(slots), len(agree)
            if a == n:
                s.finish("I", [(lbl, w, max(p, q)) for lbl, p, w, (_, q) in slots])
                continue
            s.confirmed += [(lbl, w, max(p, q)) for lbl, p, w, (_, q) in agree]
            if a == 0 or (a < n - 1 and len(s.cases) + 1 >= self.max_rounds):
                case4.append((s, rest))  # beyond max_rounds a case III keeps its confirmed slots
            elif a == n - 1:
                case2.append((s, [w for _, _, w, _ in agree]))
            else:
                case3.append((s, rest, [w for _, _, w, _ in agree]))
        self._case2(case2)
        self._case4(case4)
        self._case3(case3)

    def _case2(self, items):
        """Residual of the confirmed estimates, labelled by C3; silence or a repeat drops it."""
        residuals = [s.mixture[0] - sum(waves) for s, waves in items]
        for s, _ in items:
            s.tagger_calls += 1
        verdicts = self._verify(residuals, [s.mixture[0] for s, _ in items])
        for (s, _), residual, (label, prob) in zip(items, residuals, verdicts):
            if label is not None and s.allowed(label):
                s.finish("II", [(label, residual, prob)])
            else:
                s.finish("II")

    def _case4(self, items):
        """Per open slot the more probable of the two labels; separate once more (Sep2)."""
        todo = []
        for s, open_slots in items:
            chosen = []
            for lbl, p, _, (v, q) in open_slots:
                options = sorted([(lbl, p), (v, q)], key=lambda lp: -lp[1])
                for label, prob in options:
                    if label is None:
                        break  # silence is the more probable: the slot is dropped
                    if s.allowed(label, [c for c, _ in chosen]):
                        chosen.append((label, prob))
                        break
            if [c for c, _ in chosen] == [lbl for lbl, _, _, _ in open_slots]:
                # the queries did not change: Sep2 would give Sep1's estimates again
                s.finish("IV", [(lbl, w, prob) for (lbl, _, w, _), (_, prob) in zip(open_slots, chosen)])
            elif chosen:
                todo.append((s, chosen))
            else:
                s.finish("IV")
        if todo:
            waves = self._separate([s for s, _ in todo], [[c for c, _ in chosen] for _, chosen in todo])
            for (s, chosen), row in zip(todo, waves):
                s.finish("IV", [(label, w, prob) for (label, prob), w in zip(chosen, row)])

    def _case3(self, items):
        """Subtract the confirmed estimates; the next round queries the open slots again."""
        if not items:
            return
        for s, _, confirmed_waves in items:
            s.mixture = self._residual(s, confirmed_waves)
            s.tagger_calls += 1
        decoded = self.tag(torch.stack([s.mixture for s, _, _ in items]))
        for (s, rest, _), new in zip(items, decoded):
            s.cases.append("III")
            pool = [(lbl, float(p)) for lbl, p in new]
            for lbl, p, _, (v, q) in rest:
                pool += [(lbl, p), (v, q)]
            s.labels = best_labels(pool, len(rest), s)
            if not s.labels:
                s.outputs = list(s.confirmed)  # every open slot closed as silence


# ----------------------------------------------------------------------------------------------
# The toolkit's models in the strategy's positions
# ----------------------------------------------------------------------------------------------
def waveform_verifier(tagger, threshold=0.5, n_channels=constants.N_FOA_CHANNELS):
    """``verify`` for a tagger of the toolkit: a separated waveform (L,) is given to the tagger on
    every input channel (the 1-channel taggers read channel 0); its label is the most probable
    class, silence when none reaches ``threshold`` (multi-label taggers) or every slot is silent
    (2026 slot taggers)."""

    @torch.no_grad()
    def verify(waves):
        inputs = waves[:, None, :].expand(-1, n_channels, -1).contiguous()
        outputs = tagger(inputs)
        if is_slot_tagger(tagger):
            verdicts = []
            for row in decode_slots(outputs.float()):
                verdicts.append(max(row, key=lambda lp: lp[1]) if row else (None, 0.0))
            return verdicts
        best, index = class_probabilities(outputs).max(dim=1)
        return [(constants.CLASSES[k] if p >= threshold else None, p)
                for p, k in zip(best.tolist(), index.tolist())]

    return verify


def model_strategy(tagger, separator, decode, options):
    """A :class:`ReduxStrategy` with a tagger and a separator of the toolkit in every position."""
    options = check_strategy(options)

    def tag(mixtures):
        return tag_batch(tagger, mixtures, **decode)

    def separate(mixtures, label_lists):
        return separate_batch(separator, mixtures, label_lists)

    return ReduxStrategy(tag, waveform_verifier(tagger, decode.get("threshold", 0.5)), separate,
                         **options)


def summarise(records):
    """Counts over mixtures: final case, first-round case, path, rounds; and the call totals."""
    def count(values):
        return dict(sorted(Counter(values).items()))
    return {"mixtures": len(records),
            "final_case": count(r["case"] for r in records),
            "first_case": count(r["cases"][0] for r in records if r["cases"]),
            "paths": count(">".join(r["cases"]) for r in records),
            "rounds": count(r["rounds"] for r in records),
            "separator_calls": sum(r["separator_calls"] for r in records),
            "tagger_calls": sum(r["tagger_calls"] for r in records)}
