"""CP-JKU's "AudioSep-SED" separator (DCASE 2025 Task 4, rank 2; SPEC §7.2).

A single-query :class:`~s5lib.models.resunet.ResUNet30` (n_fft = win 2048, hop 160, 4 input channels,
18-d one-hot query through the label MLP into additive FiLM) that is guided by an SED tagger
(:class:`~s5lib.models.tagger.SEDTagger`, held as ``sed``: the "Stage-2 SED", a copy of the stage-1
tagger run once per mixture on channel 0). Each guidance term is a switch:

* ``time_film``: the SED's frame-wise strong **logits** of the queried class (B, 250) (zero for a
  silent query) -> per-frame :class:`~s5lib.models.blocks.ConditionMLP` (1 -> 512) -> **the same
  FiLM layers as the label query** -> a per-frame bias per conditioned BatchNorm, bilinearly
  resampled in time to each block (the frames span the padded STFT length) and added next to the
  label bias.
* ``embedding_injection``: :class:`~s5lib.models.blocks.EmbeddingInjection` of the SED's depth + 1
  hidden states into the bottleneck (after the bottleneck block, before the decoder; the skips are
  untouched).
* ``sed_trainable``: the SED's backbone trains (its own lr and layer decay come from the optimiser's
  ``param_groups``); its heads never do. ``false``: the whole SED is frozen and kept in eval mode.
* ``dprnn``: :class:`~s5lib.models.blocks.DualPathRNN` after the injection.
* ``refine_iterations`` N > 1: iterative refinement. The previous estimate (zeros at step 1) enters
  as a 5th U-Net input channel: its STFT magnitude through its own BatchNorm over frequency
  (``feedback_bn``), with a pre-conv kernel that starts at zero. The FiLM and Time-FiLM terms, the
  SED pass and the weighted sum of its hidden states are computed once per forward and reused at
  every step.
  Training runs ``n_iter`` steps (the loss step draws it from U{1..N}); all but the last run without
  gradient and the feedback is detached. Inference runs any number of steps
  (``forward(..., n_iter=K, return_steps=True)`` gives every step's estimate).

Keys: ResUNet30's (``base.*``, ``film.*``, ``label_embedding.*``) at the top, so the separator
loaders find them as they find the baseline's, plus ``sed.*`` (the SEDTagger layout, ``sed.model.m2d.*``,
``sed.head_norm.*``, ``sed.strong_head.*``, ``sed.weak_head.*``), ``time_embedding.*`` (the Time-FiLM
MLP), ``injection.*``, ``dprnn.*`` and ``feedback_bn.*``. CP-JKU's code builds one more FiLM
(``time_film.*``) that it never uses; we do not build it
(:func:`s5lib.models.cpjku_convert.convert_cpjku_separator` drops it), which is why our full-size
count is theirs minus that FiLM (see tests/test_audiosep_sed.py).
"""
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn

from s5lib import constants
from s5lib.config import dataclass_from_dict
from s5lib.models.blocks import ConditionMLP, DualPathRNN, EmbeddingInjection
from s5lib.models.resunet import MAGNITUDE_FLOOR, ResUNet30, ResUNetConfig


@dataclass
class GuidanceConfig:
    """The CP-JKU additions to ResUNet30 (each a switch; see the module docstring)."""

    time_film: bool = True
    embedding_injection: bool = True
    sed_trainable: bool = True
    dprnn: bool = False
    dprnn_hidden: int = 256        # GRU units per direction
    dprnn_blocks: int = 2
    dprnn_layers: int = 2
    dprnn_dropout: float = 0.1
    refine_iterations: int = 1     # N: training draws n_iter from U{1..N}; 1 = no feedback input
    eval_iterations: int = 0       # refinement steps of a plain forward in eval mode (0: N)
    injection_momentum: float = 0.01

    def __post_init__(self):
        problems = []
        if int(self.refine_iterations) < 1:
            problems.append(f"refine_iterations must be >= 1, got {self.refine_iterations}")
        if int(self.eval_iterations) < 0:
            problems.append(f"eval_iterations must be >= 0, got {self.eval_iterations}")
        if self.dprnn and (int(self.dprnn_hidden) < 1 or int(self.dprnn_blocks) < 1
                           or int(self.dprnn_layers) < 1):
            problems.append("dprnn_hidden, dprnn_blocks and dprnn_layers must be >= 1")
        if problems:
            raise ValueError("GuidanceConfig: " + "; ".join(problems))
        self.refine_iterations = int(self.refine_iterations)
        self.eval_iterations = int(self.eval_iterations)

    @classmethod
    def from_dict(cls, values):
        """Build from a (YAML) dict; unknown keys are an error that names them."""
        return dataclass_from_dict(cls, values)

    @property
    def uses_sed(self):
        return self.time_film or self.embedding_injection


def audiosep_sed_resunet_config(refine_iterations=1, **overrides):
    """The ResUNet30 part at CP-JKU's size: single query (18-d), n_fft 2048, hop 160, 4 channels."""
    values = dict(num_slots=1, label_len=constants.N_CLASSES, n_fft=2048, hop_length=160,
                  extra_input_channels=1 if refine_iterations > 1 else 0)
    values.update(overrides)
    return ResUNetConfig(**values)


class AudioSepSED(ResUNet30):
    """``forward(mixture (B, 4, L), condition (B, 18)) -> (B, 1, L)`` (see the module docstring)."""

    def __init__(self, config: ResUNetConfig, guidance: GuidanceConfig, sed=None):
        if config.num_slots != 1:
            raise ValueError("AudioSepSED is a single-query separator (num_slots 1)")
        if guidance.refine_iterations > 1 and config.extra_input_channels != 1:
            raise ValueError("refine_iterations > 1 needs extra_input_channels: 1 (the feedback)")
        if guidance.refine_iterations == 1 and config.extra_input_channels:
            raise ValueError("extra_input_channels is only used by iterative refinement")
        super().__init__(config)
        self.guidance = guidance
        if guidance.uses_sed and sed is None:
            raise ValueError("time_film / embedding_injection need an SED tagger (sed)")
        self.sed = sed
        if sed is not None:
            for head in (sed.strong_head, sed.weak_head):
                head.requires_grad_(False)          # the heads never train here
            if not guidance.sed_trainable:
                sed.requires_grad_(False)
                sed.eval()
        size = config.condition_size
        self.time_embedding = ConditionMLP(1, size) if guidance.time_film else None
        if guidance.embedding_injection:
            m2d = sed.cfg
            self.injection = EmbeddingInjection(m2d.depth + 1, m2d.embed_dim, config.bottleneck_width,
                                                momentum=guidance.injection_momentum)
        else:
            self.injection = None
        if guidance.dprnn:
            self.dprnn = DualPathRNN(config.bottleneck_width, guidance.dprnn_hidden,
                                     guidance.dprnn_blocks, guidance.dprnn_layers,
                                     guidance.dprnn_dropout)
        else:
            self.dprnn = None
        if guidance.refine_iterations > 1:
            self.feedback_bn = nn.BatchNorm2d(config.n_fft // 2 + 1, momentum=config.momentum)
        else:
            self.feedback_bn = None

    # -- mode ---------------------------------------------------------------------------------
    def train(self, mode=True):
        super().train(mode)
        if self.sed is not None and not self.guidance.sed_trainable:
            self.sed.eval()                         # a frozen SED keeps its BatchNorm statistics
        return self

    @property
    def default_iterations(self):
        g = self.guidance
        return g.refine_iterations if self.training or not g.eval_iterations else g.eval_iterations

    # -- guidance -----------------------------------------------------------------------------
    def sed_guidance(self, mixture, condition):
        """(Time-FiLM biases or None, hidden states or None) of the SED for this batch."""
        g = self.guidance
        if not g.uses_sed:
            return None, None
        frozen = not g.sed_trainable or not torch.is_grad_enabled()
        with torch.no_grad() if frozen else nullcontext():
            out = self.sed(mixture, return_hidden=g.embedding_injection)
        extra_film = None
        if self.time_embedding is not None:
            # the queried class's frame logits; a silent (all-zero) query gives zeros
            activity = (out["strong_logits"].float() * condition[:, None, :].float()).sum(-1)
            frames = self.time_embedding(activity[..., None].to(condition.dtype))     # (B, T, width)
            extra_film = {name: getattr(self.film, name)(frames).transpose(1, 2)
                          for name in self.film.names}                           # (B, width, T)
        hidden = out.get("hidden") if g.embedding_injection else None
        return extra_film, hidden

    def bottleneck_function(self, hidden):
        """The function applied to the bottleneck (injection merge, then DPRNN), or None. The
        weighted sum of the hidden states is taken once; as in CP-JKU's code, its normalisation,
        resize and projection run at every refinement step (their BatchNorm statistics move at
        every step while training)."""
        if self.injection is None and self.dprnn is None:
            return None
        mixed = self.injection.mix(hidden) if self.injection is not None else None

        def apply(x):
            if self.injection is not None:
                x = self.injection.merge(x, self.injection.features(mixed, x.shape[-2:]))
            if self.dprnn is not None:
                x = self.dprnn(x)
            return x

        return apply

    def feedback_features(self, estimate):
        """Previous estimate (B, 1, L) -> normalised STFT magnitude (B, 1, T, F)."""
        spec = self.base.stft.complex_spectrogram(estimate)
        magnitude = (spec.real.square() + spec.imag.square()).clamp(min=MAGNITUDE_FLOOR).sqrt()
        return self.feedback_bn(magnitude.transpose(1, 3)).transpose(1, 3)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, mixture, condition, n_iter=None, return_steps=False):
        """Separate the queried class.

        Args:
            mixture: (B, 4, L); condition: (B, 18) one-hot (zeros: a silent query).
            n_iter: refinement steps (default: ``refine_iterations`` while training,
                ``eval_iterations`` or ``refine_iterations`` in eval mode); must be 1 without
                refinement.
            return_steps: return the list of every step's (B, 1, L) estimate.
        """
        cfg = self.config
        self.check_inputs(mixture, condition)
        n_iter = int(n_iter or self.default_iterations)
        if n_iter < 1 or (n_iter > 1 and self.feedback_bn is None):
            raise ValueError(f"n_iter {n_iter}: this separator has no refinement feedback "
                             "(refine_iterations 1): only one step")
        spec, features = self.base.analyse(mixture)
        film = self.film(self.condition_embedding(condition))
        map_bias = self.mask_bias(condition, self.frame_logits(spec))
        extra_film, hidden = self.sed_guidance(mixture, condition)
        bottleneck_fn = self.bottleneck_function(hidden)
        activity = self.slot_activity(condition)[:, :, None] if cfg.zero_silent_slots else None
        length = mixture.shape[-1]
        estimate = mixture.new_zeros(mixture.shape[0], 1, length)
        steps = []
        for step in range(n_iter):
            last = step == n_iter - 1
            with nullcontext() if last else torch.no_grad():
                extra = None
                if self.feedback_bn is not None:
                    extra = self.feedback_features(estimate.detach())
                estimate = self.base.separate(spec, features, film, length, extra_film, map_bias,
                                              extra, bottleneck_fn)[:, :, 0]      # (B, 1, L)
                if activity is not None:
                    estimate = estimate * activity
            steps.append(estimate)
        return steps if return_steps else estimate
