"""HF safetensors import/export and tiny GGUF files, checked against transformers (PyTorch).

The real check of the HF name table is that checkpoints written by transformers'
own ``save_pretrained`` (randomly initialised tiny models, every weight perturbed)
load into our decoder with the same logits as the torch model.
"""

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memr1_jax.models.config import tiny_config
from memr1_jax.models.decoder import causal_mask, forward, logical_axes, positions_from_valid
from memr1_jax.models.registry import random_params
from memr1_jax.weights import (WeightLoadError, config_from_hf, load_gguf, load_hf_checkpoint, save_gguf,
                               save_hf_checkpoint)
from memr1_jax.weights.safetensors_io import SafetensorsFile, write_safetensors

IDS = np.array([[3, 17, 200, 45, 9, 100, 128, 255, 0, 64, 31, 7, 99, 12]], np.int32)


@jax.jit
def _ids_inputs(tok):
    valid = tok >= 0
    return positions_from_valid(valid), causal_mask(valid)


_forward = jax.jit(forward, static_argnums=0)  # one compile per config instead of op-by-op dispatch


def logits(cfg, params, ids=IDS):
    tok = jnp.asarray(ids)
    return np.asarray(_forward(cfg, params, tok, *_ids_inputs(tok))[0])


def perturbed(cfg, seed=0):
    # numpy-random params of the decoder's shapes (init_params costs ~20 s of op-by-op
    # dispatch or XLA compile even for tiny configs); norms near 1, everything non-trivial.
    return random_params(cfg, seed)


TINY = {
    "llama": dict(rope_scaling=(("rope_type", "llama3"), ("factor", 8.0), ("low_freq_factor", 1.0),
                                ("high_freq_factor", 4.0), ("original_max_position_embeddings", 64))),
    "qwen2": {},
    "gemma3": dict(sliding_window=4, query_pre_attn_scalar=24),
}


# ------------------------------------------------------------- own round trip
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_own_writer_round_trip(arch, tmp_path):
    cfg = tiny_config(arch, **TINY[arch])
    params = perturbed(cfg)
    save_hf_checkpoint(cfg, params, tmp_path / "ckpt")
    cfg2, params2 = load_hf_checkpoint(tmp_path / "ckpt")
    assert cfg2 == cfg
    np.testing.assert_array_equal(logits(cfg2, params2), logits(cfg, params))


def test_sharded_round_trip_and_bf16(tmp_path):
    cfg = tiny_config("qwen2")
    params = perturbed(cfg)
    folder = save_hf_checkpoint(cfg, params, tmp_path / "sharded", shard_size=40_000)
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) > 3 and (folder / "model.safetensors.index.json").exists()
    cfg2, params2 = load_hf_checkpoint(folder)
    np.testing.assert_array_equal(logits(cfg2, params2), logits(cfg, params))
    # bf16 storage: file dtype BF16, loaded as bf16 by default (config dtype), values = bf16 rounding.
    save_hf_checkpoint(cfg, params, tmp_path / "bf16", dtype="bfloat16")
    assert SafetensorsFile(tmp_path / "bf16" / "model.safetensors").dtype("lm_head.weight").name == "bfloat16"
    cfg3, params3 = load_hf_checkpoint(tmp_path / "bf16")
    assert params3["embedding"].dtype == jnp.bfloat16 and cfg3.param_dtype == "bfloat16"
    np.testing.assert_array_equal(np.asarray(params3["embedding"]),
                                  np.asarray(params["embedding"].astype(jnp.bfloat16)))
    _, params4 = load_hf_checkpoint(tmp_path / "bf16", dtype="float32")
    assert params4["layers_0"]["mlp"]["up_proj"].dtype == jnp.float32


# ------------------------------------------------------- against transformers
import torch
import transformers
torch.set_num_threads(2)


def hf_tiny_model(arch):
    if arch == "llama":
        conf = transformers.LlamaConfig(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=512,
            rope_theta=50000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
        cls = transformers.LlamaForCausalLM
    elif arch == "qwen2":
        conf = transformers.Qwen2Config(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=1e6,
            max_position_embeddings=512)
        cls = transformers.Qwen2ForCausalLM
    else:
        conf = transformers.Gemma3TextConfig(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6, sliding_window=4, sliding_window_pattern=2,
            query_pre_attn_scalar=24, rope_theta=1e6, rope_local_base_freq=1e4, max_position_embeddings=512)
        cls = transformers.Gemma3ForCausalLM
    torch.manual_seed(0)
    model = cls(conf).eval()
    with torch.no_grad():  # random init leaves norms at 1/0 and biases at 0: perturb everything
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def torch_logits(model, ids=IDS):
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.float().numpy()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_transformers_save_pretrained_loads(arch, tmp_path):
    model = hf_tiny_model(arch)
    # Sharded save for one arch covers transformers' own index format.
    model.save_pretrained(tmp_path / "hf", max_shard_size="100KB" if arch == "qwen2" else "1GB")
    if arch == "qwen2":
        assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    cfg, params = load_hf_checkpoint(tmp_path / "hf")
    assert cfg.arch == arch
    ours, ref = logits(cfg, params), torch_logits(model)
    assert np.abs(ours - ref).max() <= 1e-4, np.abs(ours - ref).max()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_our_writer_loads_in_transformers(arch, tmp_path):
    cfg = tiny_config(arch, **TINY[arch])
    params = perturbed(cfg)
    save_hf_checkpoint(cfg, params, tmp_path / "ckpt", shard_size=60_000)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32).eval()
    ours, ref = logits(cfg, params), torch_logits(model)
    assert np.abs(ours - ref).max() <= 1e-4, np.abs(ours - ref).max()


GEMMA_GGUF = dict(head_dim=256, num_heads=2, num_kv_heads=1, num_layers=6, global_every=6, sliding_window=4,
                  query_pre_attn_scalar=256)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_tiny_gguf_matches_transformers(arch, tmp_path):
    # llama-arch GGUF Q/K rows are permuted by the writer (llama.cpp layout); transformers'
    # GGUF loader reverses that independently, so this checks our un-permute.
    cfg = tiny_config(arch, **(GEMMA_GGUF if arch == "gemma3" else {}))
    params = perturbed(cfg)
    save_gguf(cfg, params, tmp_path / "m.gguf")
    cfg2, params2 = load_gguf(tmp_path / "m.gguf")
    assert cfg2 == cfg
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    ours, ref = logits(cfg2, params2), torch_logits(model)
    assert np.abs(ours - ref).max() <= 1e-4, np.abs(ours - ref).max()


# ------------------------------------------------------------------ errors
def _rewrite(src: pathlib.Path, dst: pathlib.Path, drop=(), add=None, reshape=None):
    f = SafetensorsFile(src)
    items = []
    for name, shape in f.shapes.items():
        if name in drop:
            continue
        x = f.get(name)
        if reshape and name == reshape:
            x = x.reshape(-1)[: x.size - x.shape[-1]].reshape(x.shape[0] - 1, *x.shape[1:]) \
                if x.ndim == 2 else x[:-1]
        items.append((name, x.shape, x.dtype, lambda x=x: x))
    for name, x in (add or {}).items():
        items.append((name, x.shape, x.dtype, lambda x=x: x))
    write_safetensors(dst, items)


@pytest.fixture()
def llama_ckpt(tmp_path):
    cfg = tiny_config("llama")
    return save_hf_checkpoint(cfg, perturbed(cfg), tmp_path / "ok")


def test_missing_tensor_names_file_and_tensor(llama_ckpt):
    st = llama_ckpt / "model.safetensors"
    _rewrite(st, st, drop={"model.layers.1.mlp.up_proj.weight"})
    with pytest.raises(WeightLoadError, match=r"(?s)ok.*missing.*'model\.layers\.1\.mlp\.up_proj\.weight'"):
        load_hf_checkpoint(llama_ckpt)


def test_unmapped_tensor_names_file_and_tensor(llama_ckpt):
    st = llama_ckpt / "model.safetensors"
    _rewrite(st, st, add={"model.layers.0.self_attn.o_proj.bias": np.zeros(64, np.float32)})
    with pytest.raises(WeightLoadError, match=r"not mapped.*'model\.layers\.0\.self_attn\.o_proj\.bias' "
                                              r"\(in .*model\.safetensors\)"):
        load_hf_checkpoint(llama_ckpt)


def test_misshaped_tensor_names_file_and_tensor(llama_ckpt):
    st = llama_ckpt / "model.safetensors"
    _rewrite(st, st, reshape="model.layers.0.self_attn.k_proj.weight")
    with pytest.raises(WeightLoadError, match=r"model\.safetensors: tensor 'model\.layers\.0\.self_attn\."
                                              r"k_proj\.weight' has shape \(31, 64\), expected \(32, 64\)"):
        load_hf_checkpoint(llama_ckpt)


def test_gguf_errors_name_file_and_tensor(tmp_path):
    import gguf
    cfg = tiny_config("llama")
    params = perturbed(cfg)
    # Missing tensor: drop a layer's params from the tree before writing.
    broken = jax.tree.map(lambda x: x, params)
    save_gguf(cfg, params, tmp_path / "ok.gguf")
    from memr1_jax.text.gguf_meta import read_gguf_header
    header = read_gguf_header(tmp_path / "ok.gguf")

    def rewrite(path, skip=None, extra=None, bad_shape=None):
        src = np.memmap(tmp_path / "ok.gguf", np.uint8, mode="r")
        w = gguf.GGUFWriter(str(path), "llama")
        for k, v in header.metadata.items():
            if k.startswith("llama."):
                (w.add_float32 if isinstance(v, float) else w.add_uint32)(k, v)
        for t in header.tensors:
            if t.name == skip:
                continue
            shp = tuple(reversed(t.shape))
            x = np.frombuffer(src[header.data_start + t.offset:][: 4 * int(np.prod(shp))].tobytes(),
                              np.float32).reshape(shp)
            if t.name == bad_shape:
                x = x[:-1]
            w.add_tensor(t.name, x)
        for name, x in (extra or {}).items():
            w.add_tensor(name, x)
        w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()

    del broken
    rewrite(tmp_path / "missing.gguf", skip="blk.1.ffn_down.weight")
    with pytest.raises(WeightLoadError, match=r"missing\.gguf: missing 1 tensor.*'blk\.1\.ffn_down\.weight'"):
        load_gguf(tmp_path / "missing.gguf")
    rewrite(tmp_path / "extra.gguf", extra={"blk.0.attn_output.bias": np.zeros(64, np.float32)})
    with pytest.raises(WeightLoadError, match=r"extra\.gguf.*not mapped.*'blk\.0\.attn_output\.bias'"):
        load_gguf(tmp_path / "extra.gguf")
    rewrite(tmp_path / "shape.gguf", bad_shape="blk.0.attn_k.weight")
    with pytest.raises(WeightLoadError, match=r"shape\.gguf: tensor 'blk\.0\.attn_k\.weight' has shape "
                                              r"\(31, 64\), expected \(32, 64\)"):
        load_gguf(tmp_path / "shape.gguf")


def test_config_errors_name_the_field():
    base = dict(model_type="llama", vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                num_attention_heads=2)
    with pytest.raises(WeightLoadError, match=r"cfg\.json: model_type 'gpt2'"):
        config_from_hf({**base, "model_type": "gpt2"}, "cfg.json")
    with pytest.raises(WeightLoadError, match=r"cfg\.json: attention_bias=True"):
        config_from_hf({**base, "attention_bias": True}, "cfg.json")
    with pytest.raises(WeightLoadError, match=r"cfg\.json: missing field 'hidden_size'"):
        config_from_hf({k: v for k, v in base.items() if k != "hidden_size"}, "cfg.json")
    with pytest.raises(WeightLoadError, match="layer_types"):
        config_from_hf({**base, "model_type": "gemma3_text", "layer_types": ["full_attention", "sliding_attention"],
                        "num_hidden_layers": 2}, "cfg.json")


# ---------------------------------------------------------------- sharding
def test_load_into_sharded_layout(tmp_path):
    assert jax.device_count() >= 8
    cfg = tiny_config("qwen2")
    params = perturbed(cfg)
    save_hf_checkpoint(cfg, params, tmp_path / "ckpt")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("fsdp",))
    rules = (("embed", "fsdp"), ("vocab", None), ("heads", None), ("kv_heads", None), ("head_dim", None),
             ("mlp", None), ("norm", None))
    shardings = nn.logical_to_mesh_sharding(logical_axes(cfg), mesh, rules)
    _, sharded = load_hf_checkpoint(tmp_path / "ckpt", shardings=shardings)
    P = jax.sharding.PartitionSpec
    emb = sharded["embedding"]
    assert emb.sharding == shardings["embedding"]
    assert emb.sharding.spec == P(None, "fsdp") and len(emb.addressable_shards) == 8
    assert emb.addressable_shards[0].data.shape == (cfg.vocab_size, cfg.embed_dim // 8)
    q = sharded["layers_1"]["attn"]["q_proj"]
    assert q.sharding == shardings["layers_1"]["attn"]["q_proj"] and q.sharding.spec == P("fsdp", None, None)
    o = sharded["layers_0"]["attn"]["o_proj"]
    assert o.sharding.spec == P(None, None, "fsdp")
    np.testing.assert_allclose(logits(cfg, sharded), logits(cfg, params), atol=1e-5)
    # GGUF loader places tensors the same way.
    save_gguf(cfg, params, tmp_path / "m.gguf")
    _, sharded2 = load_gguf(tmp_path / "m.gguf", shardings=shardings)
    assert sharded2["lm_head"].sharding == shardings["lm_head"]
    assert sharded2["lm_head"].sharding.spec == P("fsdp", None)
