"""Per-device memory of each paper config on its target (``configs/*_paper.py``, ``target``).

    python benchmarks/memory_plan.py [--no-compile]

For every config: the mesh of the config over the target's device count (virtual CPU devices),
the model's published architecture (``memr1_jax.models.architectures``) and abstract arrays
only (no weights). Columns, in GiB per device:

* weights, optimiser, critic: exact, summed over each leaf's shard shape under the config's
  shardings (``rl.train_state.train_state_shardings``): the trained copy, the frozen
  pretrained weights (reference policy and untrained baseline), AdamW moments, the PPO critic;
* KV cache: exact shard of the sampler's cache for one generation call (gen_batch_size x G
  rows, prompt 4096 + response 2048 slots, batch over data x fsdp, kv-heads over tensor);
* activations: an analytic model of the update with per-layer remat and blockwise attention
  (saved layer inputs, one layer's recompute working set, one LM-head chunk, gradients).
  XLA:CPU's buffer assignment is not a TPU plan: on a 4-layer Qwen2.5-7B slice its temp
  bytes *rise* with remat (15.5 -> 18.9 GB per device, measured 2026-12-01), because the CPU
  scheduler is not memory-aware, so compiled temp sizes are shown for reference only.

With compilation (default) the update of a 2-layer slice of each model is also lowered and
compiled on the target mesh (AOT, abstract arrays, virtual CPU devices), and its argument
bytes are checked against the same exact accounting. Last line: the tightest fit as a ratio
of the target's memory.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=16")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memr1_jax.config import load_config_file  # noqa: E402
from memr1_jax.models import decoder as dec  # noqa: E402
from memr1_jax.models.architectures import ARCHITECTURES  # noqa: E402
from memr1_jax.parallel.mesh import make_mesh, mesh_devices  # noqa: E402
from memr1_jax.parallel.rules import batch_sharding, boxed_shardings, logical_to_sharding  # noqa: E402
from memr1_jax.parallel.targets import TARGETS  # noqa: E402
from memr1_jax.rl.train_state import init_train_state, train_state_shardings  # noqa: E402
from memr1_jax.rl.update import RLBatch, make_update_fn  # noqa: E402
from memr1_jax.sampling.sampler import bucket_size  # noqa: E402

GIB = 2 ** 30


def shard_bytes(abstract, shardings) -> int:
    total = 0
    leaves = jax.tree.leaves(shardings, is_leaf=lambda x: hasattr(x, "shard_shape"))
    for a, s in zip(jax.tree.leaves(abstract), leaves):
        total += int(np.prod(s.shard_shape(a.shape))) * jnp.dtype(a.dtype).itemsize
    return total


def abstract_state(model_cfg, rl, mesh, rules):
    params = nn.meta.unbox(dec.abstract_params(model_cfg))
    state = jax.eval_shape(lambda p: init_train_state(model_cfg, rl, p, jax.random.PRNGKey(0)), params)
    return params, state, train_state_shardings(model_cfg, rl, state, mesh, rules)


def resident(model_cfg, rl, mesh, rules) -> dict:
    params, state, sh = abstract_state(model_cfg, rl, mesh, rules)
    frozen = shard_bytes(params, boxed_shardings(dec.abstract_params(model_cfg), mesh, rules))
    out = {"trained": shard_bytes(state.params, sh.params), "frozen": frozen,
           "optimizer": shard_bytes(state.opt_state, sh.opt_state), "critic": 0}
    if state.critic_params is not None:
        out["critic"] = shard_bytes(state.critic_params, sh.critic_params) + shard_bytes(
            state.critic_opt_state, sh.critic_opt_state)
    return out


def kv_cache_bytes(cfg, model_cfg, mesh, rules) -> int:
    rows = cfg.rollout.gen_batch_size * cfg.rl.group_size
    slots = bucket_size(cfg.rollout.max_prompt_tokens) + bucket_size(cfg.task.answer.max_new_tokens
                                                                      if cfg.task.agent == "answer"
                                                                      else cfg.task.manager.max_new_tokens)
    shape = (rows, model_cfg.num_kv_heads, slots, model_cfg.head_dim)
    abstract = jax.ShapeDtypeStruct(shape, jnp.dtype(model_cfg.dtype))
    sh = logical_to_sharding(nn.logical_to_mesh_axes(("batch", "kv_heads", "length", "head_dim"), rules),
                             abstract, mesh, rules)
    return 2 * model_cfg.num_layers * int(np.prod(sh.shard_shape(shape))) * abstract.dtype.itemsize


def update_shape(cfg) -> tuple[int, int]:
    new = cfg.task.answer.max_new_tokens if cfg.task.agent == "answer" else cfg.task.manager.max_new_tokens
    rows = cfg.rollout.questions_per_step * cfg.rl.group_size
    return rows, bucket_size(cfg.rollout.max_prompt_tokens) + new


def activation_bytes(cfg, model_cfg, mesh) -> int:
    """Per device, one micro-batch of the update: remat keeps each layer's input; the layer
    being recomputed holds its attention and MLP tensors and their gradients; one LM-head chunk
    of float32 logits with softmax and gradient; the float32 hidden-state gradient. A PPO critic
    is a second backbone in the same backward pass."""
    _, t = update_shape(cfg)
    split = mesh.shape["data"] * mesh.shape["fsdp"]
    micro = cfg.rl.micro_batch_size
    r = micro // split if micro % split == 0 else micro
    m, bf = model_cfg, jnp.dtype(model_cfg.dtype).itemsize
    saved = m.num_layers * r * t * m.embed_dim * bf
    qkvo = r * t * (2 * m.num_heads + 2 * m.num_kv_heads) * m.head_dim
    block = min(m.attention_block, t)
    attn = 2 * bf * qkvo + 3 * 4 * r * m.num_heads * block * block
    mlp = 2 * bf * 3 * r * t * m.mlp_dim
    head = 3 * 4 * r * min(cfg.rl.logprob_chunk, t) * m.vocab_size
    hidden_grad = 2 * 4 * r * t * m.embed_dim
    one = saved + attn + mlp + head + hidden_grad
    return one * (2 if cfg.rl.algorithm == "ppo" else 1)


def compiled_slice(cfg, model_cfg, rl, mesh, rules, layers=2):
    """AOT compile of the update on a ``layers``-layer slice: (argument bytes, exact state bytes, temp bytes)."""
    sliced = model_cfg.replace(num_layers=layers)
    params, state, sh = abstract_state(sliced, rl, mesh, rules)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, sh)
    b, t = update_shape(cfg)

    def arr(shape, dt):
        return jax.ShapeDtypeStruct(shape, dt, sharding=batch_sharding(mesh, shape, rules))
    batch = RLBatch(tokens=arr((b, t), jnp.int32), valid=arr((b, t), bool), positions=arr((b, t), jnp.int32),
                    response_mask=arr((b, t), bool), rewards=arr((b,), jnp.float32),
                    old_logprobs=arr((b, t), jnp.float32),
                    ref_logprobs=arr((b, t), jnp.float32) if rl.beta else None)
    compiled = make_update_fn(sliced, rl, mesh, rules).lower(state, batch).compile()
    stats = compiled.memory_analysis()
    exact = shard_bytes(jax.tree.leaves(state), [x.sharding for x in jax.tree.leaves(state)])
    exact += sum(int(np.prod(x.sharding.shard_shape(x.shape))) * jnp.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(batch))
    return stats.argument_size_in_bytes, exact, stats.temp_size_in_bytes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-compile", action="store_true", help="skip the AOT compile of the 2-layer slices")
    args = ap.parse_args(argv)
    rows = []
    t0 = time.time()
    for path in sorted((REPO / "configs").glob("*_paper.py")):
        cfg = load_config_file(path)
        target = TARGETS[cfg.target]
        m = cfg.model
        model_cfg = ARCHITECTURES[m.name].replace(dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat,
                                                  attention=m.attention, attention_block=m.attention_block)
        devices = mesh_devices(cfg.mesh, jax.devices()[: target.devices])
        if len(devices) != target.devices:
            raise SystemExit(f"{path.name}: mesh spans {len(devices)} devices, "
                             f"target {target.name} has {target.devices}")
        mesh = make_mesh(cfg.mesh, devices)
        rl = cfg.update_config(model_cfg.num_layers)
        res = resident(model_cfg, rl, mesh, cfg.mesh.rules)
        state = sum(res.values())
        act = activation_bytes(cfg, model_cfg, mesh)
        grads = 2 * res["trained"]     # accumulated and current micro-batch gradients (float32)
        kv = kv_cache_bytes(cfg, model_cfg, mesh, cfg.mesh.rules)
        peak = state + max(act + grads, kv)
        row = dict(config=path.stem, target=target.name, mesh="x".join(str(mesh.shape[a]) for a in mesh.axis_names),
                   params=model_cfg.num_params() / 1e9, weights=(res["trained"] + res["frozen"]) / GIB,
                   optimizer=res["optimizer"] / GIB, critic=res["critic"] / GIB, act=(act + grads) / GIB,
                   kv=kv / GIB, peak=peak / GIB, hbm=target.memory_gib, check="")
        if not args.no_compile:
            got, exact, temp = compiled_slice(cfg, model_cfg, rl, mesh, cfg.mesh.rules)
            row["check"] = f"{got / GIB:.2f} = {exact / GIB:.2f} (cpu temp {temp / GIB:.1f})"
            if got != exact:
                raise SystemExit(f"{path.name}: compiled argument bytes {got} != exact accounting {exact}")
        rows.append(row)
        print(f"  {path.stem}: done ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)

    head = ("| config | target | mesh (data x fsdp x tensor) | params (B) | weights | optimiser | critic | "
            "update activations + grads | KV cache | peak | HBM | fits | 2-layer slice: compiled args = exact (GiB) |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        print(f"| {r['config']} | {r['target']} | {r['mesh']} | {r['params']:.2f} | {r['weights']:.1f} | "
              f"{r['optimizer']:.1f} | {r['critic']:.1f} | {r['act']:.1f} | {r['kv']:.1f} | {r['peak']:.1f} | "
              f"{r['hbm']:.0f} | {'yes' if r['peak'] <= r['hbm'] else 'NO'} | {r['check']} |")
    import resource
    print(f"peak host memory of this run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB; "
          f"{time.time() - t0:.0f} s")
    worst = max(rows, key=lambda r: r["peak"] / r["hbm"])
    fits = sum(r["peak"] <= r["hbm"] for r in rows)
    print(f"{fits}/{len(rows)} paper configs fit their target; tightest: {worst['config']} on {worst['target']} "
          f"at {worst['peak'] / worst['hbm']:.2f} of device memory")
    return 0 if fits == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
