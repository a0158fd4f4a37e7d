"""REDUX's classify / separate / verify / subtract strategy on hand-made taggers and separators.

Every class owns one sample position of a short "waveform": a mixture's channel 0 is the sum of
its sources, each a spike at its class's position. The stub separator returns, for a queried
label, channel 0 of the mixture it is given at one position (the label's own unless a test routes
it elsewhere: a confused separator); the stub verifier labels a waveform by its largest sample
(silence when it is all zero); the stub mixture tagger follows a script per call.
"""
from collections import Counter

import pytest
import torch

from s5lib import constants
from s5lib.infer.redux import (MixtureState, ReduxStrategy, best_labels, check_strategy,
                               model_strategy, summarise, waveform_verifier)
from s5lib.models.factory import build_separator, build_tagger

A, B, C, X, Y = constants.CLASSES[:5]
POSITION = {label: k for k, label in enumerate(constants.CLASSES[:6])}
LENGTH = len(POSITION)


def spike(label, amplitude=1.0):
    wave = torch.zeros(LENGTH)
    wave[POSITION[label]] = amplitude
    return wave


def mixture_of(*labels, channels=2):
    """(channels, L): channel 0 = sum of the sources; the other channels a fixed pattern."""
    mix = torch.zeros(channels, LENGTH)
    for k, label in enumerate(labels):
        mix[0] += spike(label, 1.0 + k)
    mix[1:] = torch.arange(LENGTH, dtype=torch.float32) + 100.0
    return mix


class Stubs:
    """The three callables of the strategy, recording what they were given."""

    def __init__(self, scripts, route=None, probs=None, leak=None, min_level=1e-9):
        self.scripts = [list(s) for s in scripts]    # per mixture: the tagger's outputs, call by call
        self.route = route or {}                      # queried label -> position it returns
        self.probs = probs or {}                      # verified label -> its probability
        self.leak = leak or {}                        # queried label -> fraction returned
        self.min_level = min_level                    # the verifier's silence level
        self.separated, self.tagged, self.verified = [], [], []
        self.calls = [0] * len(scripts)

    def tag(self, mixtures):
        out = []
        for mixture in mixtures:
            self.tagged.append(mixture.clone())
            b = self.mixture_id(mixture)
            script = self.scripts[b] if 0 <= b < len(self.scripts) else []
            out.append(script.pop(0) if script else
                       [(label, 0.8) for label, k in POSITION.items() if mixture[0, k].abs() > 1e-9])
        return out

    def mixture_id(self, mixture):
        # the tests put the mixture number in the last sample of channel 1
        return int(mixture[1, -1].item() - 100.0 - (LENGTH - 1)) if mixture.shape[0] > 1 else 0

    def separate(self, mixtures, label_lists):
        out = []
        for mixture, labels in zip(mixtures, label_lists):
            self.separated.append((mixture.clone(), list(labels)))
            row = []
            for label in labels:
                position = self.route.get(label, POSITION[label])
                wave = torch.zeros(LENGTH)
                wave[position] = mixture[0, position] * self.leak.get(label, 1.0)
                row.append((label, wave))
            out.append(row)
        return out

    def verify(self, waves):
        out = []
        for wave in waves:
            self.verified.append(wave.clone())
            if wave.abs().max() < self.min_level:
                out.append((None, 0.0))
            else:
                label = constants.CLASSES[int(wave.abs().argmax())]
                out.append((label, self.probs.get(label, 0.9)))
        return out

    def strategy(self, **options):
        return ReduxStrategy(self.tag, self.verify, self.separate, **options)


def batch(*mixtures):
    stacked = torch.stack(mixtures)
    for b in range(len(mixtures)):
        stacked[b, 1, -1] += b   # mixture id for the stub tagger
    return stacked


def as_dict(outputs):
    return {label: wave for label, wave, _ in outputs}


def test_case_one_all_agree():
    stubs = Stubs([[[(A, 0.9), (B, 0.8)]]])
    outputs, records = stubs.strategy().run(batch(mixture_of(A, B)))
    assert [label for label, _, _ in outputs[0]] == [A, B]
    assert torch.equal(as_dict(outputs[0])[B], spike(B, 2.0))
    assert records[0]["cases"] == ["I"] and records[0]["separator_calls"] == 1


def test_case_two_residual_is_the_third_source():
    # C1 says A, B, X; the scene holds A, B, C: X's estimate is silent, so A and B are confirmed
    stubs = Stubs([[[(A, 0.9), (B, 0.8), (X, 0.6)]]])
    mix = batch(mixture_of(A, B, C))
    outputs, records = stubs.strategy().run(mix)
    found = as_dict(outputs[0])
    assert sorted(found) == sorted([A, B, C])
    # the remaining estimate is channel 0 minus the confirmed estimates (eq. 5)
    assert torch.equal(found[C], mix[0, 0] - spike(A, 1.0) - spike(B, 2.0))
    assert records[0]["cases"] == ["II"] and records[0]["separator_calls"] == 1
    assert records[0]["tagger_calls"] == 3   # C1, C2, C3


def test_case_two_repeat_or_silence_is_dropped():
    # the separator returns only half of A: the residual is mostly A again -> a repeat -> silence
    stubs = Stubs([[[(A, 0.9), (B, 0.8), (X, 0.6)]], [[(A, 0.9), (B, 0.8), (X, 0.6)]]],
                  leak={A: 0.5})
    outputs, records = stubs.strategy().run(batch(mixture_of(A, B), mixture_of(A, B)))
    for row, record in zip(outputs, records):
        assert [label for label, _, _ in row] == [A, B]
        assert record["cases"] == ["II"]
    # nothing but A and B in the scene and a perfect separator: the residual is silent
    stubs = Stubs([[[(A, 0.9), (B, 0.8), (X, 0.6)]]])
    outputs, _ = stubs.strategy().run(batch(mixture_of(A, B)))
    assert [label for label, _, _ in outputs[0]] == [A, B]


def test_case_three_subtracts_and_runs_again():
    # C1 says A, X, Y; the scene holds A, B, C: only A is confirmed; the residual is re-tagged
    stubs = Stubs([[[(A, 0.9), (X, 0.6), (Y, 0.55)]]])
    mix = batch(mixture_of(A, B, C))
    outputs, records = stubs.strategy().run(mix)
    found = as_dict(outputs[0])
    assert sorted(found) == sorted([A, B, C])
    assert records[0]["cases"] == ["III", "I"] and records[0]["rounds"] == 2
    # the second separation saw channel 0 minus A's estimate, the other channels unchanged
    second_mixture, second_labels = stubs.separated[1]
    assert sorted(second_labels) == sorted([B, C])
    assert torch.equal(second_mixture[0], mix[0, 0] - spike(A, 1.0))
    assert torch.equal(second_mixture[1], mix[0, 1])
    assert torch.equal(found[A], spike(A, 1.0))


def test_case_three_replicated_residual():
    stubs = Stubs([[[(A, 0.9), (X, 0.6), (Y, 0.55)]]])
    mix = batch(mixture_of(A, B, C))
    stubs.strategy(residual_input="replicate").run(mix)
    second_mixture, _ = stubs.separated[1]
    assert torch.equal(second_mixture[1], mix[0, 0] - spike(A, 1.0))


def test_case_three_labels_come_from_both_passes_and_silence_closes_slots():
    # the residual tagger finds B only (0.7); the last round offered X 0.6 / silence 0.51 and
    # Y 0.4 / silence 0.51: the two open slots take B (0.7) and X (0.6)
    stubs = Stubs([[[(A, 0.9), (X, 0.6), (Y, 0.4)], [(B, 0.7)]]])
    outputs, records = stubs.strategy().run(batch(mixture_of(A, B)))
    second_mixture, second_labels = stubs.separated[1]
    assert second_labels == [B, X]
    # round 2: B agrees, X's estimate is silent -> case II on 2 slots; the residual is silent
    assert [label for label, _, _ in outputs[0]] == [A, B]
    assert records[0]["cases"] == ["III", "II"]
    state = MixtureState(mixture=torch.zeros(1, 1), limits=Counter([A]))
    assert best_labels([(B, 0.7), (None, 0.51), (X, 0.5)], 2, state) == [(B, 0.7)]


def test_case_four_takes_the_more_probable_label_and_separates_again():
    # C1 says X (0.6) for a scene holding B; the confused separator returns B for X; C2 says B (0.9)
    stubs = Stubs([[[(X, 0.6)]]], route={X: POSITION[B]})
    outputs, records = stubs.strategy().run(batch(mixture_of(B)))
    assert [(label, prob) for label, _, prob in outputs[0]] == [(B, 0.9)]
    assert records[0]["cases"] == ["IV"] and records[0]["separator_calls"] == 2
    assert stubs.separated[1][1] == [B]
    # C1 more confident than C2: the label stays, Sep2 would repeat Sep1 and is skipped
    stubs = Stubs([[[(X, 0.95)]]], route={X: POSITION[B]})
    outputs, records = stubs.strategy().run(batch(mixture_of(B)))
    assert [label for label, _, _ in outputs[0]] == [X]
    assert records[0]["separator_calls"] == 1
    # silence more probable than the C1 label: the slot is dropped
    stubs = Stubs([[[(X, 0.3)]]])
    outputs, records = stubs.strategy().run(batch(mixture_of(B)))
    assert outputs[0] == [] and records[0]["cases"] == ["IV"]


def test_max_rounds_resolves_case_three_as_case_four():
    stubs = Stubs([[[(A, 0.9), (X, 0.6), (Y, 0.55)]]])
    outputs, records = stubs.strategy(max_rounds=1).run(batch(mixture_of(A, B, C)))
    assert records[0]["cases"] == ["IV"]
    # A stays confirmed; X (0.6 vs silence 0.51) and Y (0.55) keep their labels: no new separation
    assert [label for label, _, _ in outputs[0]] == [A, X, Y]
    assert records[0]["separator_calls"] == 1


def test_empty_scene_and_duplicates_2026():
    stubs = Stubs([[[]], [[(A, 0.9), (A, 0.8)]]])
    outputs, records = stubs.strategy().run(batch(mixture_of(), mixture_of(A)))
    assert outputs[0] == [] and records[0]["cases"] == ["empty"] and records[0]["separator_calls"] == 0
    assert [label for label, _, _ in outputs[1]] == [A, A] and records[1]["cases"] == ["I"]
    # a class may appear as often as C1 decoded it, at least once
    state = MixtureState(mixture=torch.zeros(1, 1), limits=Counter([A, A, B]))
    state.confirmed = [(A, None, 0.9)]
    assert state.allowed(A) and not state.allowed(A, [A]) and state.allowed(C)
    state.confirmed.append((B, None, 0.9))
    assert not state.allowed(B)


def test_summary_counts_every_mixture():
    stubs = Stubs([[[(A, 0.9)]], [[(A, 0.9), (B, 0.8), (X, 0.6)]], [[]]])
    _, records = stubs.strategy().run(batch(mixture_of(A), mixture_of(A, B, C), mixture_of()))
    summary = summarise(records)
    assert summary["mixtures"] == 3
    assert summary["final_case"] == {"I": 1, "II": 1, "empty": 1}
    assert summary["paths"] == {"I": 1, "II": 1, "empty": 1}
    assert summary["separator_calls"] == 2


def test_verify_level_presents_estimates_at_the_mixture_level():
    # a separator that returns 1 % of B; a verifier deaf below 0.1: raw -> silence, B unconfirmed
    mix = batch(mixture_of(A, B))
    stubs = Stubs([[[(A, 0.9), (B, 0.8)]]], leak={B: 0.01}, min_level=0.1)
    outputs, records = stubs.strategy().run(mix)
    assert records[0]["cases"] == ["II"]
    stubs = Stubs([[[(A, 0.9), (B, 0.8)]]], leak={B: 0.01}, min_level=0.1)
    outputs, records = stubs.strategy(verify_level="mixture").run(mix)
    assert records[0]["cases"] == ["I"]
    assert torch.equal(as_dict(outputs[0])[B], spike(B, 0.02))   # the output is not rescaled
    # far below the mixture (-80 dB): silence whatever the verifier says; B is then the residual
    stubs = Stubs([[[(A, 0.9), (B, 0.8)]]], leak={B: 1e-4})
    outputs, records = stubs.strategy(verify_level="mixture").run(mix)
    assert records[0]["cases"] == ["II"]
    assert torch.equal(as_dict(outputs[0])[B], mix[0, 0] - spike(A, 1.0))


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown option"):
        check_strategy({"rounds": 2})
    with pytest.raises(ValueError, match="residual_input"):
        check_strategy({"residual_input": "all"})
    with pytest.raises(ValueError, match="max_rounds"):
        check_strategy({"max_rounds": 0})
    with pytest.raises(ValueError, match="verify_level"):
        check_strategy({"verify_level": "loud"})


class FixedTagger(torch.nn.Module):
    """A 2025 multi-label 'tagger' whose logits are a fixed function of the input's channel 0."""

    kind = "m2d_2025"

    def forward(self, mixture):
        assert mixture.shape[1] == constants.N_FOA_CHANNELS
        energy = mixture[:, 0].square().mean(dim=1)
        logits = torch.full((mixture.shape[0], constants.N_CLASSES), -5.0)
        logits[:, 2] = torch.where(energy > 0.01, 3.0, -3.0)
        return logits


def test_waveform_verifier_on_a_model():
    verify = waveform_verifier(FixedTagger())
    loud, quiet = torch.ones(2, 100), torch.zeros(2, 100)
    verdicts = verify(torch.cat((loud[:1], quiet[:1])))
    assert verdicts[0][0] == constants.CLASSES[2] and verdicts[0][1] > 0.9
    assert verdicts[1][0] is None


@pytest.mark.parametrize("separator_type, tagger_type", [("resunetk", "m2d_2026"),
                                                         ("resunext", "m2d_2025")])
def test_the_toolkit_models_fill_every_position(separator_type, tagger_type):
    torch.manual_seed(0)
    tagger = build_tagger({"type": tagger_type, "m2d": {"embed_dim": 16, "depth": 1, "num_heads": 2,
                                                        "patch_size": [80, 8]}}).eval()
    sizes = ({"channels": [4, 4, 8, 8, 8, 8]} if separator_type == "resunetk"
             else {"channels": [4, 4, 8, 8, 8], "pre_channels": 4, "blocks_per_level": 1,
                   "intermediate_blocks": 1})
    separator = build_separator(dict(type=separator_type, bottleneck_channels=8, condition_size=8,
                                     n_fft=256, hop_length=128, **sizes)).eval()
    decode = {"threshold": 0.5, "min_labels": 1, "max_labels": 3}
    if tagger_type == "m2d_2026":
        decode = {"min_confidence": 0.0}
    strategy = model_strategy(tagger, separator, decode, {"max_rounds": 2})
    mixtures = torch.randn(2, constants.N_FOA_CHANNELS, constants.N_SAMPLES) * 0.01
    with torch.inference_mode():
        outputs, records = strategy.run(mixtures)
    for row, record in zip(outputs, records):
        assert record["case"] in ("I", "II", "IV", "empty") and 1 <= record["rounds"] <= 2
        for label, wave, prob in row:
            assert label in constants.CLASSES and wave.shape == (constants.N_SAMPLES,)
            assert 0.0 <= prob <= 1.0 and torch.isfinite(wave).all()
