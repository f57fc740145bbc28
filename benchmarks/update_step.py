"""Throughput of one GRPO update step vs PyTorch, and LoRA memory on a 0.5B model.

Default mode (SmolLM2-135M-Instruct, 16 sequences x 512 tokens, fp32, 2 threads):
  * the machine's matmul peak (best of a few f32 GEMMs in XLA),
  * one jitted GRPO update of this project (old/ref log-probs given, so the step is the
    forward + backward + AdamW over the batch, in micro-batches),
  * the same forward, backward (GRPO surrogate on the gathered log-probs) and AdamW step
    with transformers/PyTorch on the same GGUF weights, same micro-batches, same threads.
Prints a table, peak RSS, and last line ``update speedup vs torch: X, MFU: Y``.

``--qwen-lora-memory``: one GRPO update of Qwen2.5-Coder-0.5B-Instruct with LoRA (rank 8),
per-layer remat and micro-batches on 16 x 512 tokens; prints the peak RSS (must fit 24 GiB).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

THREADS = int(os.environ.get("BENCH_THREADS", "2"))  # torch threads; XLA uses every core (2 here)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memr1_jax import assets  # noqa: E402
from memr1_jax.rl.lora import LoraConfig  # noqa: E402
from memr1_jax.rl.train_state import RLConfig, init_train_state  # noqa: E402
from memr1_jax.rl.update import make_batch, make_update_fn, update_flops  # noqa: E402


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load(name: str, payload, remat=False):
    """(cfg, params, gguf path): through the model registry when it exists, else GGUF."""
    path = assets.fetch_payload(payload)
    try:
        from memr1_jax.models.registry import load_model  # written by another engineer
        cfg, params = load_model(name)[:2]
    except Exception:
        from memr1_jax.weights.gguf_loader import load_gguf
        cfg, params = load_gguf(path)
    return cfg.replace(remat=remat), params, path


def matmul_peak(reps=5) -> float:
    best = 0.0
    for m, k, n in [(2048, 576, 1536), (2048, 2048, 2048)]:
        a = jnp.ones((m, k), jnp.float32)
        b = jnp.ones((k, n), jnp.float32)
        f = jax.jit(lambda x, y: x @ y)
        f(a, b).block_until_ready()
        for _ in range(reps):
            t = time.perf_counter()
            f(a, b).block_until_ready()
            best = max(best, 2 * m * k * n / (time.perf_counter() - t))
    return best


def make_inputs(vocab, b, t, seed=0):
    rng = np.random.default_rng(seed)
    prompt = t // 2
    tokens = rng.integers(3, vocab, (b, t)).astype(np.int32)
    valid = np.ones((b, t), bool)
    resp = np.zeros((b, t), bool)
    resp[:, prompt:] = True
    old = np.where(resp, -rng.random((b, t)) * 3 - 8, 0).astype(np.float32)  # ~ random-model log-probs
    ref = old + np.where(resp, rng.normal(0, 0.01, (b, t)), 0).astype(np.float32)
    rewards = rng.integers(0, 2, b).astype(np.float32)
    return tokens, valid, resp, old, ref, rewards


def jax_update(cfg, params, rl, inputs, reps=1, execute=True):
    """AOT-compiles the update (timed separately), then times ``reps`` executions.
    Returns (compile_s, best_step_s or None, metrics, memory_analysis)."""
    tokens, valid, resp, old, ref, rewards = inputs
    batch = make_batch(tokens, valid, resp, rewards, old_logprobs=old, ref_logprobs=ref)
    state = init_train_state(cfg, rl, params, jax.random.PRNGKey(0))
    up = make_update_fn(cfg, rl)
    t0 = time.perf_counter()
    compiled = up.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    try:
        mem = compiled.memory_analysis()
    except Exception:  # not every backend reports it
        mem = None
    times, m = [], {}
    for _ in range(reps if execute else 0):
        t0 = time.perf_counter()
        state, m = compiled(state, batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    return compile_s, (min(times) if times else None), {k: float(v) for k, v in m.items()}, mem


def describe_memory(mem) -> str:
    if mem is None:
        return "n/a"
    g = lambda n: n / 2**30
    return (f"arguments {g(mem.argument_size_in_bytes):.2f} GiB, outputs {g(mem.output_size_in_bytes):.2f} GiB "
            f"(aliased {g(mem.alias_size_in_bytes):.2f}), temporaries {g(mem.temp_size_in_bytes):.2f} GiB")


def torch_update(gguf_path, inputs, micro, beta=0.04, lr=1e-6):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(THREADS)
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path),
                                                 torch_dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    tokens, valid, resp, old, ref, rewards = (torch.from_numpy(np.asarray(x)) for x in inputs)
    adv = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
    mask = resp[:, 1:].float()
    n_tok = mask.sum()

    def step(rows):
        opt.zero_grad(set_to_none=True)
        for i in range(0, len(rows), micro):
            r = rows[i:i + micro]
            logits = model(input_ids=tokens[r].long(), attention_mask=valid[r].long()).logits[:, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, tokens[r, 1:].long()[..., None])[..., 0]
            ratio = torch.exp(logp - old[r, 1:])
            a = adv[r][:, None]
            pg = torch.maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2))
            d = ref[r, 1:] - logp
            kl = torch.exp(d) - d - 1
            loss = ((pg + beta * kl) * mask[r]).sum() / n_tok
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    rows = torch.arange(tokens.shape[0])
    t0 = time.perf_counter()
    step(rows[:micro])  # warm-up (allocator, oneDNN kernels)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    step(rows)
    return warm, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2,
                    help="timed executions, best kept (the first pays page faults of fresh buffers, "
                         "as the torch warm-up step does)")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--qwen-lora-memory", action="store_true")
    ap.add_argument("--no-execute", action="store_true", help="memory mode: compile and analyse only")
    args = ap.parse_args()
    print(f"jax {jax.__version__}, devices {jax.devices()}, threads {THREADS}")

    if args.qwen_lora_memory:
        cfg, params, _ = load("qwen2.5-coder-0.5b-instruct", assets.QWEN25_CODER_05B_GGUF, remat=True)
        print(f"loaded {cfg.num_params() / 1e6:.0f}M params, peak RSS so far {peak_rss_gib():.2f} GiB")
        rl = RLConfig(algorithm="grpo", micro_batch_size=args.micro, lora=LoraConfig(rank=8, alpha=16),
                      logprob_chunk=128, group_size=4)
        inputs = make_inputs(cfg.vocab_size, args.batch, args.seq)
        compile_s, step_s, m, mem = jax_update(cfg, params, rl, inputs, reps=1, execute=not args.no_execute)
        rss = peak_rss_gib()
        print(f"XLA memory analysis of the compiled update: {describe_memory(mem)}")
        print("| model | rows x tokens | micro | LoRA rank | compile s | update s | peak RSS GiB |")
        print(f"| qwen2.5-coder-0.5b | {args.batch} x {args.seq} | {args.micro} | 8 | {compile_s:.1f} | "
              f"{'not run' if step_s is None else f'{step_s:.1f}'} | {rss:.2f} |")
        if m:
            print(f"pg_loss {m['pg_loss']:.4f}, grad_norm {m['grad_norm']:.4g}")
        if step_s is None and mem is not None:  # compile-only: RSS so far + the update's own buffers
            rss = rss + (mem.argument_size_in_bytes + mem.temp_size_in_bytes) / 2**30
            print(f"estimated peak memory (not executed): {rss:.2f} GiB")
        print(f"peak memory: {rss:.2f} GiB (limit 24 GiB): {'fits' if rss < 24 else 'DOES NOT FIT'}")
        return

    cfg, params, path = load("smollm2-135m-instruct", assets.SMOLLM2_135M_GGUF)
    peak = matmul_peak()
    rl = RLConfig(algorithm="grpo", micro_batch_size=args.micro, logprob_chunk=128, group_size=4,
                  learning_rate=1e-6, beta=0.04)
    inputs = make_inputs(cfg.vocab_size, args.batch, args.seq)
    tokens = args.batch * args.seq
    flops = update_flops(cfg, rl, args.batch, args.seq)
    first, jt, m, mem = jax_update(cfg, params, rl, inputs, reps=args.reps)
    del params
    rows = [("matmul peak (XLA f32)", None, None, peak / 1e9, None)]
    rows.append(("memr1-jax GRPO update", jt, tokens / jt, flops / jt / 1e9, flops / jt / peak))
    if not args.skip_torch:
        warm, tt = torch_update(path, inputs, args.micro)
        rows.append(("torch fwd+bwd+AdamW", tt, tokens / tt, flops / tt / 1e9, flops / tt / peak))
    print(f"\nSmolLM2-135M, {args.batch} x {args.seq} tokens, micro-batch {args.micro}, f32, {THREADS} threads; "
          f"model FLOPs/update {flops / 1e12:.2f} TFLOP; jax compile {first:.1f}s; "
          f"XLA memory: {describe_memory(mem)}")
    print("| what | step s | tokens/s | GFLOP/s | MFU |")
    print("|---|---|---|---|---|")
    for name, s, tps, gf, mfu in rows:
        print(f"| {name} | {'' if s is None else f'{s:.1f}'} | {'' if tps is None else f'{tps:.1f}'} | "
              f"{gf:.1f} | {'' if mfu is None else f'{mfu:.2f}'} |")
    print(f"peak RSS: {peak_rss_gib():.2f} GiB")
    speedup = (tt / jt) if not args.skip_torch else float("nan")
    print(f"update speedup vs torch: {speedup:.2f}, MFU: {flops / jt / peak:.2f}")


if __name__ == "__main__":
    main()
