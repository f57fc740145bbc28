"""Hugging Face checkpoint folders (config.json + *.safetensors) <-> decoder params.

``load_hf_checkpoint`` reads single-file or sharded (model.safetensors.index.json)
checkpoints lazily, one tensor at a time; ``save_hf_checkpoint`` writes the
inverse, in HF naming, so transformers' ``from_pretrained`` reads it back.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax.numpy as jnp
import numpy as np

from memr1_jax.files import atomic_folder
from memr1_jax.models.config import ModelConfig
from memr1_jax.weights.assemble import WeightLoadError, assemble, validate
from memr1_jax.weights.mappings import IGNORED_HF_SUFFIXES, resolve, from_param
from memr1_jax.weights.safetensors_io import SafetensorsError, SafetensorsFile, write_safetensors

INDEX_NAME = "model.safetensors.index.json"
_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "gemma3_text": "gemma3", "gemma3": "gemma3"}
_HF_NAMES = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM"),
             "gemma3": ("gemma3_text", "Gemma3ForCausalLM")}
# Multimodal Gemma 3 checkpoints nest the text model; map its names onto the text-only ones.
_PREFIX_ALIASES = (("model.language_model.", "model."), ("language_model.model.", "model."),
                   ("language_model.lm_head.", "lm_head."))
_MULTIMODAL_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                        "model.multi_modal_projector.")


# ------------------------------------------------------------------ config
def _rope_scaling(d: dict | None, where: str):
    if not d or d.get("rope_type", d.get("type")) in (None, "default"):
        return None
    kind = d.get("rope_type", d.get("type"))
    if kind == "linear":
        return (("rope_type", "linear"), ("factor", float(d["factor"])))
    if kind == "llama3":
        return (("rope_type", "llama3"), ("factor", float(d["factor"])),
                ("low_freq_factor", float(d.get("low_freq_factor", 1.0))),
                ("high_freq_factor", float(d.get("high_freq_factor", 4.0))),
                ("original_max_position_embeddings", int(d.get("original_max_position_embeddings", 8192))))
    raise WeightLoadError(f"{where}: rope scaling type {kind!r} is not supported (llama3, linear)")


def _unsupported(hf: dict, where: str, **checks) -> None:
    for key, ok in checks.items():
        if key in hf and not ok(hf[key]):
            raise WeightLoadError(f"{where}: {key}={hf[key]!r} is not supported by the decoder")


def config_from_hf(hf: dict, where: str = "config.json") -> ModelConfig:
    """ModelConfig from a transformers config dict (v4 ``rope_theta``/``rope_scaling``
    keys or v5 ``rope_parameters``)."""
    if hf.get("model_type") == "gemma3" and "text_config" in hf:
        hf = {**hf["text_config"], "model_type": "gemma3_text",
              "tie_word_embeddings": hf.get("tie_word_embeddings", True)}
    mt = hf.get("model_type")
    if mt not in _MODEL_TYPES:
        raise WeightLoadError(f"{where}: model_type {mt!r} is not supported ({sorted(_MODEL_TYPES)})")
    arch = _MODEL_TYPES[mt]
    try:
        heads = int(hf["num_attention_heads"])
        kw = dict(arch=arch, vocab_size=int(hf["vocab_size"]), num_layers=int(hf["num_hidden_layers"]),
                  embed_dim=int(hf["hidden_size"]), num_heads=heads,
                  num_kv_heads=int(hf.get("num_key_value_heads") or heads),
                  mlp_dim=int(hf["intermediate_size"]))
    except KeyError as err:
        raise WeightLoadError(f"{where}: missing field {err.args[0]!r}") from None
    hd = hf.get("head_dim") or (256 if arch == "gemma3" else kw["embed_dim"] // heads)
    rp = hf.get("rope_parameters") or {}
    kw.update(head_dim=int(hd), rms_eps=float(hf.get("rms_norm_eps", 1e-6 if arch == "gemma3" else 1e-5)),
              max_seq_len=int(hf.get("max_position_embeddings", 8192)),
              tie_embeddings=bool(hf.get("tie_word_embeddings", arch == "gemma3")))
    _unsupported(hf, where, mlp_bias=lambda v: not v, final_logit_softcapping=lambda v: v is None,
                 attn_logit_softcapping=lambda v: v is None, use_sliding_window=lambda v: not v,
                 use_bidirectional_attention=lambda v: not v)
    if arch == "llama":
        _unsupported(hf, where, attention_bias=lambda v: not v, hidden_act=lambda v: v == "silu")
    if arch == "qwen2":
        _unsupported(hf, where, hidden_act=lambda v: v == "silu")
        kw.update(qkv_bias=True)
    if arch in ("llama", "qwen2"):
        sub = rp if "rope_theta" in rp or "rope_type" in rp else {}
        kw.update(rope_theta=float(sub.get("rope_theta", hf.get("rope_theta", 10000.0))),
                  rope_scaling=_rope_scaling(sub or hf.get("rope_scaling"), where))
    else:
        act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
        if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise WeightLoadError(f"{where}: hidden_activation={act!r} is not supported (gelu_pytorch_tanh)")
        full, local = rp.get("full_attention") or {}, rp.get("sliding_attention") or {}
        if local.get("rope_type", "default") != "default":
            raise WeightLoadError(f"{where}: rope scaling on sliding-window layers is not supported")
        n = kw["num_layers"]
        types = hf.get("layer_types")
        every = int(hf.get("sliding_window_pattern") or 6)
        if types:
            globals_ = [i for i, t in enumerate(types) if t == "full_attention"]
            every = globals_[0] + 1 if globals_ else n + 1
            want = ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(n)]
            if list(types) != want:
                raise WeightLoadError(f"{where}: layer_types {types} do not follow a 'every k-th layer is "
                                      "global' pattern, which is all the decoder supports")
        kw.update(qk_norm=True, post_norms=True, scale_embeddings=True, activation="gelu_tanh",
                  rope_theta=float(full.get("rope_theta", hf.get("rope_theta", 1e6))),
                  rope_local_theta=float(local.get("rope_theta", hf.get("rope_local_base_freq", 1e4))),
                  rope_scaling=_rope_scaling(full or hf.get("rope_scaling"), where),
                  sliding_window=int(hf.get("sliding_window") or 4096), global_every=every,
                  query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)))
    dt = hf.get("dtype") or hf.get("torch_dtype")
    if dt in ("float32", "bfloat16", "float16"):
        kw["param_dtype"] = dt
    return ModelConfig(**kw)


def config_to_hf(cfg: ModelConfig, dtype: str | None = None) -> dict:
    """transformers config.json for ``cfg`` (legacy rope keys, read by transformers 4.4x and 5.x)."""
    model_type, cls = _HF_NAMES[cfg.arch]
    d = {"architectures": [cls], "model_type": model_type, "vocab_size": cfg.vocab_size,
         "hidden_size": cfg.embed_dim, "intermediate_size": cfg.mlp_dim,
         "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
         "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim, "rms_norm_eps": cfg.rms_eps,
         "max_position_embeddings": cfg.max_seq_len, "tie_word_embeddings": cfg.tie_embeddings,
         "rope_theta": cfg.rope_theta, "torch_dtype": dtype or cfg.param_dtype}
    if cfg.rope_scaling:
        d["rope_scaling"] = dict(cfg.rope_scaling)
    if cfg.arch == "llama":
        d.update(hidden_act="silu", attention_bias=False, mlp_bias=False)
    elif cfg.arch == "qwen2":
        if not cfg.qkv_bias:
            raise ValueError("config_to_hf: a qwen2 config without qkv_bias has no HF equivalent")
        d.update(hidden_act="silu", use_sliding_window=False)
    else:
        if not (cfg.qk_norm and cfg.post_norms and cfg.scale_embeddings and cfg.activation == "gelu_tanh"):
            raise ValueError("config_to_hf: gemma3 config lacks Gemma 3 features (qk_norm, post_norms, ...)")
        every = cfg.global_every or cfg.num_layers + 1
        d.update(hidden_activation="gelu_pytorch_tanh", sliding_window=cfg.sliding_window,
                 sliding_window_pattern=every, rope_local_base_freq=cfg.rope_local_theta or cfg.rope_theta,
                 query_pre_attn_scalar=cfg.query_pre_attn_scalar or cfg.head_dim,
                 layer_types=["sliding_attention" if cfg.is_local_layer(i) else "full_attention"
                              for i in range(cfg.num_layers)],
                 final_logit_softcapping=None, attn_logit_softcapping=None, attention_bias=False)
    return d


# ------------------------------------------------------------------ loading
def _normalize(name: str) -> str:
    for old, new in _PREFIX_ALIASES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def checkpoint_files(folder: pathlib.Path) -> list[pathlib.Path]:
    index = folder / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise WeightLoadError(f"{index}: unreadable index ({err!r})") from None
        files = sorted(set(weight_map.values()))
        for f in files:
            if not (folder / f).exists():
                raise WeightLoadError(f"{index}: lists shard {f!r}, which does not exist")
        return [folder / f for f in files]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeightLoadError(f"{folder}: no *.safetensors files and no {INDEX_NAME}")
    return files


def load_hf_checkpoint(folder, dtype=None, shardings=None, stats: dict | None = None,
                       config: ModelConfig | None = None):
    """HF checkpoint folder -> (ModelConfig, params).

    dtype: storage dtype of the loaded params (default: config.json's dtype if
    float32/bfloat16/float16, else float32). shardings: a pytree like the params,
    one Sharding, or None (default device); each tensor is placed as it is read."""
    folder = pathlib.Path(folder)
    t0 = time.perf_counter()
    cfg_path = folder / "config.json"
    if config is None:
        if not cfg_path.exists():
            raise WeightLoadError(f"{folder}: no config.json")
        try:
            hf = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as err:
            raise WeightLoadError(f"{cfg_path}: invalid JSON ({err})") from None
        config = config_from_hf(hf, str(cfg_path))
    cfg = config.replace(param_dtype=jnp.dtype(dtype).name) if dtype is not None else config
    multimodal = False
    try:
        files = [SafetensorsFile(p) for p in checkpoint_files(folder)]
    except SafetensorsError as err:
        raise WeightLoadError(str(err)) from None
    available, where_is = {}, {}
    for f in files:
        for raw, shape in f.shapes.items():
            name = _normalize(raw)
            multimodal |= raw.startswith(_MULTIMODAL_PREFIXES)
            if name in where_is:
                raise WeightLoadError(f"{f.path}: tensor {raw!r} also appears in {where_is[name][0].path}")
            where_is[name] = (f, raw)
            available[name] = (f.path, shape)
    entries = resolve(cfg, "hf")

    def ignore(name: str) -> bool:
        return (name.endswith(IGNORED_HF_SUFFIXES) or (cfg.tie_embeddings and name == "lm_head.weight")
                or (multimodal and name.startswith(_MULTIMODAL_PREFIXES)))

    validate(cfg, entries, available, str(folder), "hf", ignore)

    def read(name: str) -> np.ndarray:
        f, raw = where_is[name]
        x = f.get(raw)
        # Transform in float32 (Gemma's +1 on bf16 norms would round otherwise).
        return x.astype(np.float32) if x.dtype != np.float32 else x

    order = sorted(entries, key=lambda n: (where_is[n][0].path, where_is[n][0].entries[where_is[n][1]][2]))
    params = assemble(cfg, entries, order, read, dtype=cfg.param_dtype, shardings=shardings, stats=stats)
    for f in files:
        f.close()
    if stats is not None:
        stats.update(total_s=time.perf_counter() - t0)
    return cfg, params


# ------------------------------------------------------------------ writing
def _get(params, path):
    for k in path:
        params = params[k]
    return params


def save_hf_checkpoint(cfg: ModelConfig, params, folder, shard_size: int = 2 << 30, dtype=None,
                       overwrite: bool = True) -> pathlib.Path:
    """Write config.json + safetensors (HF names) for ``params``. Tensors larger in
    total than ``shard_size`` bytes are split into model-0000k-of-0000n.safetensors
    with an index. Written into a temporary folder, then moved into place."""
    folder = pathlib.Path(folder)
    dt = np.dtype(jnp.dtype(dtype or cfg.param_dtype))
    entries = list(resolve(cfg, "hf").values())
    shards, cur, size = [], [], 0
    for e in entries:
        nbytes = dt.itemsize * int(np.prod(e.src_shape))
        if cur and size + nbytes > shard_size:
            shards.append(cur)
            cur, size = [], 0
        cur.append(e)
        size += nbytes
    shards.append(cur)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))])
    weight_map, total = {}, 0
    # overwrite=False and a concurrent writer first: theirs stays
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        for fname, shard in zip(names, shards):
            items = []
            for e in shard:
                def produce(e=e):
                    return from_param(np.asarray(_get(params, e.param), dtype=np.float32), e, cfg).astype(dt)
                items.append((e.source, e.src_shape, dt, produce))
                weight_map[e.source] = fname
                total += dt.itemsize * int(np.prod(e.src_shape))
            write_safetensors(tmp / fname, items)
        if len(shards) > 1:
            (tmp / INDEX_NAME).write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (tmp / "config.json").write_text(json.dumps(config_to_hf(cfg, dt.name), indent=2))
    return folder
