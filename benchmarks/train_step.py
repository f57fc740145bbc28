"""The default GRPO training step, phase by phase, in memr1-jax and in TRL's GRPOTrainer.

The work is the built-in default of ``python -m memr1_jax.train`` (configs/answer_agent_grpo_cpu.py):
SmolLM2-135M-Instruct, 4 LoCoMo training questions x G=8 samples, 24 new tokens at temperature
0.7, LoRA r=16 (alpha 32) on every projection of the top 8 of 30 blocks, lr 1e-3, KL off, two
optimiser steps of 16 completions per step. Measured, in this order and in one process:

* the machine's ceilings: float32 matmul GFLOP/s under XLA (2048^3) and memory GB/s (numpy copy);
* memr1-jax: retrieval + prompt rendering, prefill, decode, reward + packing, update, with the
  update's response path (``rl.shared_prompt=True``, the default: each group's prompt once, the
  head on response positions only) and with the plain path (``rl.shared_prompt=False``: the full
  sequence on every row, the update as it was);
* TRL ``GRPOTrainer`` (PyTorch, peft LoRA with the same targets and layers) on the same weights
  exported to a Hugging Face folder, the same chat-templated prompts (token ids checked equal), the
  same reward function, G, lengths, temperature and sampling; 16 completions per optimiser step, one
  generation of 32 per two steps (``steps_per_generation=2``), gradient checkpointing off as in the
  JAX default. Phases: generate (``model.generate``), reward, rest (TRL's old-log-prob scoring and
  the update).

Each path runs one warm-up step (compilation) and then ``--steps`` measured steps; the table shows
their mean, the fraction of this machine's limit for each phase (prefill and update: FLOPs of the
useful work / matmul ceiling; decode: bytes read / memory bandwidth), and peak memory.
Last line: ``train step speedup vs TRL: X`` (TRL step time / memr1-jax step time).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from memr1_jax import compile_cache  # noqa: E402
from memr1_jax.agents.answer_agent import answer_reward  # noqa: E402
from memr1_jax.agents.rollout import Episode, item_answer_prompts, pack_episodes  # noqa: E402
from memr1_jax.config import default_config  # noqa: E402
from memr1_jax.rl.train_state import init_train_state  # noqa: E402
from memr1_jax.rl.update import effective_params, make_update_fn  # noqa: E402
from memr1_jax.tasks import load_backbone, make_task  # noqa: E402

PHASES = ("retrieval", "prefill", "decode", "reward", "update")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_ceiling(reps: int = 5) -> float:
    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = min(_timed(lambda: f(a, a).block_until_ready()) for _ in range(reps))
    return 2 * 2048 ** 3 / best / 1e9


def bandwidth_ceiling(reps: int = 5) -> float:
    src = np.ones(64 << 20, np.float32)     # 256 MiB read + 256 MiB written per copy
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(reps))
    return 2 * src.nbytes / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ memr1-jax
class JaxStep:
    """One training step of memr1-jax on fixed items: phase timings and the work done."""

    def __init__(self, cfg, backbone, task, shared_prompt: bool):
        self.cfg, self.b, self.task = cfg, backbone, task
        self.rl = cfg.update_config(backbone.llm.cfg.num_layers).replace(shared_prompt=shared_prompt)
        self.state = init_train_state(backbone.llm.cfg, self.rl, backbone.llm.params, jax.random.PRNGKey(cfg.seed))
        self.updater = make_update_fn(backbone.llm.cfg, self.rl)
        self.items = task.train_items[: cfg.rollout.questions_per_step]
        tok = backbone.llm.tokenizer
        self.pad_id = tok.pad_id if tok.pad_id is not None else 0

    def run(self, step: int) -> dict:
        b, rl, t = self.b, self.rl, {}
        t0 = time.perf_counter()
        prompts = item_answer_prompts(self.items, self.task.banks, b.encoder, b.retriever, self.task.cfg)
        ids = [b.llm.chat_ids(p) for p in prompts]
        t["retrieval"] = time.perf_counter() - t0
        gen_t: dict = {}
        gens = b.llm.generate_ids(ids, max_new_tokens=self.task.cfg.max_new_tokens, sampling=b.sampling(rl.temperature),
                                  rng=jax.random.PRNGKey(100 + step), num_samples=rl.group_size,
                                  params=effective_params(rl, self.state), timings=gen_t)
        t["prefill"], t["decode"] = gen_t["prefill_s"], gen_t["decode_s"]
        t0 = time.perf_counter()
        eps = []
        for i, it in enumerate(self.items):
            for g in range(rl.group_size):
                gen = gens[i * rl.group_size + g]
                r = answer_reward(gen.text, it.qa.answer, self.task.cfg)[0]
                eps.append(Episode(tuple(gen.prompt_ids), tuple(gen.completion_ids),
                                   tuple(float(x) for x in gen.scaled_logprobs), r, {}))
        batch = pack_episodes(eps, self.pad_id, response_len=self.task.response_len)
        batch = batch.replace(old_logprobs=batch.sampler_logprobs, sampler_logprobs=None)
        t["reward"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.state, metrics = self.updater(self.state, batch)
        jax.block_until_ready(metrics)
        t["update"] = time.perf_counter() - t0
        t["step"] = sum(t[p] for p in PHASES)
        t["prompt_tokens"] = [len(x) for x in ids]
        t["completion_len"] = float(np.mean([len(g.completion_ids) for g in gens]))
        t["T"], t["P"] = batch.tokens.shape[1], batch.prompt_len
        t["reward_mean"] = float(metrics["reward_mean"])
        return t


def work(model_cfg, rl, prompt_tokens, completion_len, max_new, top_layers) -> dict:
    """Useful FLOPs (prefill, update) and decode bytes of one step."""
    n, g = len(prompt_tokens), rl.group_size
    head = 2.0 * model_cfg.embed_dim * model_cfg.vocab_size
    layer = (model_cfg.flops_per_token() - head) / model_cfg.num_layers
    p_real = float(sum(prompt_tokens))
    # The update: the unique tokens (each prompt once, every response) forward through every
    # layer, backward (activation + LoRA gradients, ~2x forward) through the adapted layers,
    # the head forward and its input gradient on the response tokens.
    uniq = p_real + n * g * completion_len
    update = uniq * layer * (model_cfg.num_layers + 2 * top_layers) + 2 * head * n * g * completion_len
    kv_slot = 2 * model_cfg.num_layers * model_cfg.num_kv_heads * model_cfg.head_dim * 4
    weights = 4.0 * model_cfg.num_params()
    # Each decode step reads the weights, each prompt's keys once (its G samples share them,
    # sampler.prefill's share_prompt) and every sample's own generated keys.
    decode_bytes = max_new * (weights + (p_real + n * g * max_new / 2) * kv_slot)
    return {"prefill": p_real * (layer * model_cfg.num_layers) + n * head, "update": update, "decode": decode_bytes}


# ------------------------------------------------------------------ TRL
def run_trl(cfg, backbone, task, prompts_ids, steps: int, threads: int) -> tuple[list[dict], dict]:
    import datasets
    import peft
    import torch
    import transformers
    import trl

    from memr1_jax.config import lora_targets
    from memr1_jax.weights.safetensors_loader import save_hf_checkpoint

    torch.set_num_threads(threads)
    transformers.utils.logging.set_verbosity_error()
    rl = cfg.update_config(backbone.llm.cfg.num_layers)
    tmp = tempfile.mkdtemp(prefix="memr1-trl-")
    hf_dir = os.path.join(tmp, "hf")
    save_hf_checkpoint(backbone.llm.cfg, backbone.llm.params, hf_dir)
    tok = _hf_tokenizer(backbone)
    texts = [backbone.llm.tokenizer.decode(ids) for ids in prompts_ids]
    same = sum(tok(t, add_special_tokens=False)["input_ids"] == list(ids) for t, ids in zip(texts, prompts_ids))
    golds = [it.qa.answer for it in task.train_items[: len(texts)]]
    n_rows = len(texts) * (steps + 1)
    data = datasets.Dataset.from_dict({"prompt": texts * (steps + 1), "gold": golds * (steps + 1)})
    reward_s = []

    def reward(completions, gold, **_):
        t0 = time.perf_counter()
        out = [answer_reward(c, g, task.cfg)[0] for c, g in zip(completions, gold)]
        reward_s.append(time.perf_counter() - t0)
        return out

    top = cfg.lora.top_layers
    layers = list(range(backbone.llm.cfg.num_layers - top, backbone.llm.cfg.num_layers))
    assert lora_targets(backbone.llm.cfg.num_layers, top)  # the JAX side adapts the same blocks
    lora = peft.LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=0.0,
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                           layers_to_transform=layers, task_type="CAUSAL_LM")
    per_step = rl.mini_batch_size                 # completions per optimiser step
    opt_steps = (len(texts) * rl.group_size) // per_step
    args = trl.GRPOConfig(
        output_dir=os.path.join(tmp, "out"), per_device_train_batch_size=per_step, gradient_accumulation_steps=1,
        num_generations=rl.group_size, steps_per_generation=opt_steps, max_completion_length=task.cfg.max_new_tokens,
        temperature=rl.temperature, top_k=0, top_p=1.0, beta=0.0, learning_rate=rl.learning_rate,
        max_steps=opt_steps * (steps + 1), num_iterations=1, epsilon=rl.clip_eps, max_grad_norm=rl.max_grad_norm,
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, shuffle_dataset=False,
        logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True, seed=cfg.seed,
        lr_scheduler_type="constant", warmup_steps=0, adam_beta1=rl.adam_b1, adam_beta2=rl.adam_b2,
        adam_epsilon=rl.adam_eps, weight_decay=rl.weight_decay, dataloader_num_workers=0)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.generation_config.eos_token_id = sorted(backbone.llm.tokenizer.stop_ids)
    model.generation_config.pad_token_id = tok.pad_token_id
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                              processing_class=tok, peft_config=lora)
    gen_s, lengths = [], []
    inner = trainer.model.generate

    def timed_generate(*a, **kw):
        t0 = time.perf_counter()
        out = inner(*a, **kw)
        gen_s.append(time.perf_counter() - t0)
        ids = kw.get("input_ids", a[0] if a else None)
        if ids is not None:
            lengths.append(out.shape[1] - ids.shape[1])
        return out
    trainer.model.generate = timed_generate
    marks = []

    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k):
            marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            marks[-1] = time.perf_counter() - marks[-1]
    trainer.add_callback(Clock())
    trainer.train()
    rows = []
    for s in range(steps + 1):   # one memr1 step = opt_steps trainer steps = one generation
        total = sum(marks[s * opt_steps:(s + 1) * opt_steps])
        gs, rs = gen_s[s], reward_s[s]
        rows.append({"generate": gs, "reward": rs, "rest": total - gs - rs, "step": total})
    info = {"prompts_equal": f"{same}/{len(texts)}", "rows": n_rows, "trl": trl.__version__,
            "torch": torch.__version__, "peft": peft.__version__,
            "completion_len_max": float(np.mean(lengths)) if lengths else float("nan"),
            "trainable": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}
    return rows, info


def _hf_tokenizer(backbone):
    """The model's tokenizer for transformers: from the GGUF file the weights came from."""
    import transformers
    from memr1_jax import assets
    from memr1_jax.models.registry import PRESETS
    path = str(assets.fetch_payload(PRESETS[backbone.cfg.model.name].payload))
    tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# ------------------------------------------------------------------ main
def check_trl_installed() -> None:
    """Fail before the JAX paths run (minutes) rather than after them."""
    import importlib
    for name in ("datasets", "peft", "torch", "transformers", "trl"):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise SystemExit(f"train_step.py: the TRL peer needs {name}: pip install -e '.[bench]' "
                             f"(or run with --skip-trl): {e}") from e


def mean_rows(rows: list[dict], keys) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2, help="measured steps per path (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch threads")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--skip-plain", action="store_true")
    args = ap.parse_args()
    if not args.skip_trl:
        check_trl_installed()

    t_all = time.perf_counter()
    flops_ceiling, bw_ceiling = matmul_ceiling(), bandwidth_ceiling()
    cfg = default_config()
    backbone = load_backbone(cfg)
    task = make_task(backbone, lambda msg: None)
    mcfg = backbone.llm.cfg
    print(f"model {cfg.model.name} ({mcfg.num_params() / 1e6:.1f} M params); jax {jax.__version__} on "
          f"{jax.devices()[0].platform}, {os.cpu_count()} cores; ceilings: f32 matmul {flops_ceiling:.0f} GFLOP/s, "
          f"memory {bw_ceiling:.1f} GB/s")

    results = {}
    paths = [("memr1-jax", True)] + ([] if args.skip_plain else [("memr1-jax plain", False)])
    for name, shared in paths:
        runner = JaxStep(cfg, backbone, task, shared)
        with compile_cache.counting() as warm_compiles:
            warm = runner.run(0)
        with compile_cache.counting() as step_compiles:   # a bounded set of shapes: expect 0
            rows = [runner.run(s) for s in range(1, args.steps + 1)]
        results[name] = {"warm": warm, "rows": rows, "mean": mean_rows(rows, PHASES + ("step",)),
                         "last": rows[-1], "compiles": (warm_compiles, step_compiles)}
        print(f"  {name}: warm-up step {warm['step']:.1f}s, measured {[round(r['step'], 1) for r in rows]}", flush=True)
    last = results["memr1-jax"]["last"]
    rl = runner.rl
    w = work(mcfg, rl, last["prompt_tokens"], last["completion_len"], task.cfg.max_new_tokens, cfg.lora.top_layers)

    trl_rows = trl_info = None
    if not args.skip_trl:
        ids = [backbone.llm.chat_ids(p) for p in item_answer_prompts(
            runner.items, task.banks, backbone.encoder, backbone.retriever, task.cfg)]
        trl_rows, trl_info = run_trl(cfg, backbone, task, ids, args.steps, args.threads)
        print(f"  TRL: warm-up step {trl_rows[0]['step']:.1f}s, measured {[round(r['step'], 1) for r in trl_rows[1:]]}",
              flush=True)

    print()
    print(f"step: {len(runner.items)} questions x G={rl.group_size}, prompts {last['prompt_tokens']} tokens "
          f"(bucket {last['P']}), T={last['T']}, mean completion {last['completion_len']:.1f} tokens, "
          f"LoRA r={cfg.lora.rank} on the top {cfg.lora.top_layers} blocks; mean of {args.steps} steps after a warm-up")
    hdr = f"| {'phase':<10} | " + " | ".join(f"{n:>16}" for n in results) + (" | TRL GRPOTrainer |" if trl_rows else " |") \
        + " limit (work / ceiling) | fraction of limit |"
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    limits = {"prefill": w["prefill"] / (flops_ceiling * 1e9), "decode": w["decode"] / (bw_ceiling * 1e9),
              "update": w["update"] / (flops_ceiling * 1e9)}
    trl_mean = mean_rows(trl_rows[1:], ("generate", "reward", "rest", "step")) if trl_rows else None
    trl_cells = {"retrieval": "-", "prefill": "", "decode": "", "reward": "", "update": ""}
    if trl_mean:
        trl_cells = {"retrieval": "-", "prefill": "(in generate)", "decode": f"{trl_mean['generate']:.2f} s generate",
                     "reward": f"{trl_mean['reward']:.2f} s", "update": f"{trl_mean['rest']:.2f} s (+scoring)"}
    for ph in PHASES + ("step",):
        cells = [f"{r['mean'][ph]:>14.2f} s" for r in results.values()]
        trl_cell = (f"{trl_mean['step']:.2f} s" if ph == "step" else trl_cells[ph]) if trl_mean else ""
        lim = limits.get(ph)
        lim_s = f"{lim:.2f} s" if lim is not None else "-"
        frac = f"{100 * lim / results['memr1-jax']['mean'][ph]:.0f}%" if lim is not None else "-"
        if ph == "step":
            lim_s = f"{sum(limits.values()):.2f} s"
            frac = f"{100 * sum(limits.values()) / results['memr1-jax']['mean']['step']:.0f}%"
        print(f"| {ph:<10} | " + " | ".join(cells) + (f" | {trl_cell:>15} |" if trl_mean else " |")
              + f" {lim_s:>22} | {frac:>17} |")
    for name, r in results.items():
        warm_c, step_c = r["compiles"]
        print(f"{name}: warm-up (compile) step {r['warm']['step']:.1f} s ({warm_c.compiled} programs compiled in "
              f"{warm_c.seconds:.1f} s); programs compiled during the {args.steps} measured steps: {step_c.compiled}; "
              f"reward mean of the last step {r['last']['reward_mean']:.3f}")
    if trl_info:
        print(f"TRL {trl_info['trl']} / torch {trl_info['torch']} / peft {trl_info['peft']}: prompt token ids equal to "
              f"memr1-jax's: {trl_info['prompts_equal']}; mean generated length (padded) {trl_info['completion_len_max']:.1f}; "
              f"trainable parameters {trl_info['trainable']:,}; warm-up step {trl_rows[0]['step']:.1f} s")
    print(f"work per step: prefill {w['prefill'] / 1e12:.2f} TFLOP, decode {w['decode'] / 1e9:.1f} GB read, "
          f"update {w['update'] / 1e12:.2f} TFLOP (useful work; the plain path computes each prompt G times "
          "and the head on every position)")
    print(f"peak memory (maxrss): {peak_rss_gib():.2f} GiB; total time {time.perf_counter() - t_all:.0f} s")
    ours = results["memr1-jax"]["mean"]["step"]
    if "memr1-jax plain" in results:
        print(f"step speedup vs the plain path (rl.shared_prompt=False): {results['memr1-jax plain']['mean']['step'] / ours:.2f}")
    if trl_mean:
        print(f"train step speedup vs TRL: {trl_mean['step'] / ours:.2f}")


if __name__ == "__main__":
    main()
