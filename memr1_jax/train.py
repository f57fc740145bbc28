"""``python -m memr1_jax.train``: RL training (GRPO or PPO) of a Memory-R1 agent.

    python -m memr1_jax.train                                   # embedded default (CPU, ~10 min on 2 cores)
    python -m memr1_jax.train --config configs/memory_manager_grpo_cpu.py --config.steps=4
    python -m memr1_jax.train --export runs/train/<run> [--step N]  # checkpoint -> <run>/hf

``--config PATH`` names a Python file with ``get_config() -> ml_collections.ConfigDict``;
``--config.a.b=value`` overrides a field (the value is parsed to the field's type).
Without ``--config`` the built-in ``default_config()`` is used (answer agent, GRPO,
SmolLM2-135M-Instruct, embedded data, CPU-small settings).

Each step: rollouts of the current policy (G sampled completions per training
question; see ``memr1_jax.agents.rollout``) -> RLBatch -> one ``rl.update`` call.
Every ``eval_every`` steps (and before the first) the greedy policy is scored on the
validation conversation; the best score selects the checkpoint that is exported (HF
folder) and evaluated on the test split with ``memr1_jax.evaluate``.

Run directory runs/train/<name>-<time>/: config.json, metrics.jsonl + TensorBoard
events (rl.metrics_writer), validation.jsonl, samples.jsonl (rollouts), checkpoints/
(orbax, rl.checkpoint), curves.png, hf/ (exported weights), eval_trained/ and
eval_base/ (evaluate run folders), final_eval.md.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import importlib.util
import json
import pathlib
import random
import sys
import time
from typing import Any, Sequence

import jax
import numpy as np
from ml_collections import ConfigDict

from memr1_jax.agents.answer_agent import AnswerConfig
from memr1_jax.agents.llm import ChatLLM
from memr1_jax.agents.memory_manager import ManagerConfig, build_banks
from memr1_jax.agents.prompts import answer_template
from memr1_jax.agents.rollout import (AnswerItem, answer_rollouts, greedy_answers, item_answer_prompts,
                                      manager_episode_specs, manager_rollouts, manager_sensitive_specs,
                                      pack_episodes)
from memr1_jax.data import default_split, load_conversations
from memr1_jax.eval.metrics import exact_match, token_f1
from memr1_jax.memory import Retriever
from memr1_jax.rl.lora import DEFAULT_TARGETS, LoraConfig
from memr1_jax.rl.train_state import RLConfig, init_train_state
from memr1_jax.rl.update import compute_logprobs, effective_params, make_update_fn
from memr1_jax.sampling.sampler import SamplingConfig

AGENTS = ("answer", "manager")


# ------------------------------------------------------------------ config
def default_config() -> ConfigDict:
    """The embedded CPU default: answer agent, GRPO, LoRA, short prompts and completions."""
    c = ConfigDict()
    c.name = "answer_agent_grpo_cpu"
    c.agent = "answer"                 # "answer" | "manager"
    c.data = "embedded"                # "embedded" or a LoCoMo path
    c.model = "smollm2-135m-instruct"
    c.encoder = "minilm"               # "minilm" | "hashing" (tests only)
    c.seed = 0
    c.steps = 10
    c.questions_per_step = 4           # GRPO groups per update
    c.group = 8                        # samples per question (G)
    c.train_pool = 8                   # train on the first N (shuffled) training questions only (0: all)
    c.temperature = 0.7                # rollout temperature (the policy is softmax(logits / T))
    c.gen_batch_size = 8               # prompts per sampler call
    c.max_prompt_tokens = 1024
    c.remat = False                    # rematerialise each decoder layer in the update (memory for time)
    c.bank = "add-all"                 # answer-agent training banks: "add-all" | "llm" (a manager model)
    c.bank_manager_model = ""          # bank="llm": registry name or hf/ folder of the manager that builds
                                       # them (stage 2 of the paper: the trained manager); "": the backbone
    c.eval_every = 5
    c.val_limit = 16                   # validation questions (greedy) per evaluation
    c.test_limit = 16                  # final evaluation on the test split (0: skip)
    c.final_eval_base = True           # also evaluate the untrained model on the same questions
    c.run_root = "runs/train"
    c.run_dir = ""                     # explicit run folder ("" : run_root/<name>-<time>)
    c.save_every = 1000                # periodic checkpoints (the best one is always saved)
    c.export_hf = True
    c.samples_per_step = 4             # rollouts logged to samples.jsonl per step
    c.answer = ConfigDict(dict(k_per_speaker=4, max_new_tokens=24, f1_weight=1.0, format_penalty=0.0,
                               distill=True, prompt="compact"))
    c.manager = ConfigDict(dict(retrieve_k=5, max_facts_per_step=4, max_new_tokens=64, format_penalty=0.0,
                                f1_weight=1.0, answer_k_per_speaker=3, answer_max_new_tokens=24,
                                # train only on episodes whose frozen-agent reward differs between
                                # "ADD every new fact" and "change nothing" (rollout.manager_sensitive_specs)
                                sensitive_only=False,
                                # > 0: the filter examines a random subset of this many training
                                # episodes (it costs two greedy answers per episode)
                                sensitive_pool=0))
    c.rl = ConfigDict(dict(
        algorithm="grpo", learning_rate=1e-3, critic_learning_rate=1e-4, beta=0.0, kl_kind="k3",
        clip_eps=0.2, epochs=1, mini_batch_size=16, micro_batch_size=8, logprob_chunk=256,
        warmup_steps=0, max_grad_norm=1.0, lora_rank=16, lora_alpha=32.0, lora_top_layers=8, entropy_coef=0.0,
        old_logprobs_from_sampler=True))
    return c


def load_config(path: str | None) -> ConfigDict:
    if not path:
        return default_config()
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"_memr1_cfg_{p.stem}", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "get_config"):
        raise ValueError(f"--config {path}: the file defines no get_config()")
    return mod.get_config()


def _parse_value(raw: str, current: Any, key: str) -> Any:
    if isinstance(current, bool):
        low = raw.strip().lower()
        if low in ("1", "true", "yes"):
            return True
        if low in ("0", "false", "no"):
            return False
        raise ValueError(f"--config.{key}={raw!r}: expected true/false")
    if isinstance(current, str):
        return raw
    try:
        val = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"--config.{key}={raw!r}: not a Python literal") from None
    if isinstance(current, float) and isinstance(val, int):
        val = float(val)
    if current is not None and not isinstance(val, type(current)):
        raise ValueError(f"--config.{key}={raw!r}: expected {type(current).__name__}")
    return val


def parse_args(argv: Sequence[str] | None) -> ConfigDict:
    argv = list(sys.argv[1:] if argv is None else argv)
    path, overrides = None, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--config" and i + 1 < len(argv):
            path, i = argv[i + 1], i + 2
            continue
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a.startswith("--config.") and "=" in a:
            overrides.append(a[len("--config."):].split("=", 1))
        elif a in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        else:
            raise ValueError(f"unknown argument {a!r} (expected --config PATH or --config.key=value)")
        i += 1
    cfg = load_config(path)
    for key, raw in overrides:
        node, parts = cfg, key.split(".")
        for p in parts[:-1]:
            if p not in node:
                raise ValueError(f"--config.{key}: unknown field {p!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"--config.{key}: unknown field {parts[-1]!r} (fields: {sorted(node.keys())})")
        node[parts[-1]] = _parse_value(raw, node[parts[-1]], key)
    if cfg.agent not in AGENTS:
        raise ValueError(f"config.agent={cfg.agent!r}: expected one of {AGENTS}")
    return cfg


def lora_targets(num_layers: int, top_layers: int) -> tuple[tuple[str, int], ...]:
    """LoRA targets of the default kind restricted to the top ``top_layers`` blocks (0: all).
    The base is frozen, so backpropagation stops at the lowest adapted block: on CPU this
    cuts the backward pass roughly in proportion."""
    if not top_layers or top_layers >= num_layers:
        return DEFAULT_TARGETS
    layers = "|".join(str(i) for i in range(num_layers - top_layers, num_layers))
    return tuple((rf"(^|.*/)layers_({layers})/" + regex.split("(^|.*/)", 1)[1], n) for regex, n in DEFAULT_TARGETS)


def rl_config(c: ConfigDict, num_layers: int = 0) -> RLConfig:
    r = c.rl
    lora = (LoraConfig(rank=r.lora_rank, alpha=r.lora_alpha, targets=lora_targets(num_layers, r.lora_top_layers))
            if r.lora_rank else None)
    rows = c.questions_per_step * c.group
    return RLConfig(algorithm=r.algorithm, learning_rate=r.learning_rate,
                    critic_learning_rate=r.critic_learning_rate, beta=r.beta, kl_kind=r.kl_kind,
                    clip_eps=r.clip_eps, epochs=r.epochs, mini_batch_size=r.mini_batch_size or rows,
                    micro_batch_size=min(r.micro_batch_size or rows, r.mini_batch_size or rows),
                    logprob_chunk=r.logprob_chunk, warmup_steps=r.warmup_steps, max_grad_norm=r.max_grad_norm,
                    temperature=c.temperature, group_size=c.group, entropy_coef=r.entropy_coef, lora=lora)


def answer_config(c: ConfigDict) -> AnswerConfig:
    a = c.answer
    template = answer_template(a.get("prompt", "full")) if a.distill else None
    return AnswerConfig(k_per_speaker=a.k_per_speaker, distill=a.distill, max_new_tokens=a.max_new_tokens,
                        f1_weight=a.f1_weight, format_penalty=a.format_penalty, template=template)


def manager_configs(c: ConfigDict) -> tuple[ManagerConfig, AnswerConfig]:
    m = c.manager
    return (ManagerConfig(kind="llm", retrieve_k=m.retrieve_k, max_facts_per_step=m.max_facts_per_step,
                          max_new_tokens=m.max_new_tokens),
            AnswerConfig(k_per_speaker=m.answer_k_per_speaker, max_new_tokens=m.answer_max_new_tokens))


# ------------------------------------------------------------------ helpers
def make_encoder(name: str):
    if name == "hashing":
        from memr1_jax.memory.encoder import HashingTestEncoder
        return HashingTestEncoder()
    if name == "minilm":
        from memr1_jax.memory.encoder import load_minilm
        return load_minilm()
    raise ValueError(f"config.encoder={name!r}: expected 'minilm' or 'hashing'")


def _host(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def plot_curves(metrics: list[dict], val: list[dict], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [m["step"] for m in metrics]
    kl_key = next((k for k in ("kl_old_ref", "kl", "ppo_kl") if metrics and k in metrics[-1]), None)
    panels = [("reward_mean", "train reward (mean)"), (kl_key, f"KL ({kl_key})"),
              ("response_length", "response length (tokens)")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
    for ax, (key, title) in zip(axes, panels):
        if key:
            ax.plot(steps, [m.get(key, np.nan) for m in metrics], marker="o")
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[3].plot([v["step"] for v in val], [v["score"] for v in val], marker="o", color="C2")
    axes[3].set_title("validation score")
    axes[3].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@dataclasses.dataclass
class Context:
    """What the loop needs besides the train state (built once)."""
    cfg: ConfigDict
    llm: ChatLLM
    base_params: Any
    encoder: Any
    retriever: Retriever
    train_items: list
    val_items: list
    banks: dict


def _build_context(c: ConfigDict, log, run_dir: pathlib.Path | None = None) -> Context:
    from memr1_jax.models.registry import load_model
    m = load_model(c.model)
    model_cfg = dataclasses.replace(m.cfg, remat=bool(c.remat))
    llm = ChatLLM(cfg=model_cfg, params=m.params, tokenizer=m.tokenizer, batch_size=c.gen_batch_size,
                  max_prompt_tokens=c.max_prompt_tokens)
    encoder = make_encoder(c.encoder)
    retriever = Retriever()
    split = default_split(load_conversations(c.data))
    if not split.train or not split.validation:
        raise ValueError(f"config.data={c.data!r}: the split needs train and validation conversations")
    from memr1_jax.data import question_records
    conv_of = {cv.id: cv for cv in split.train + split.validation}
    train_recs = question_records(split.train)
    val_recs = question_records(split.validation)[: c.val_limit]
    banks: dict = {}
    if c.agent == "answer":
        mcfg = ManagerConfig(kind=c.bank, max_new_tokens=c.manager.max_new_tokens)
        builder = None
        if c.bank == "llm":
            builder = (ChatLLM.from_registry(c.bank_manager_model, batch_size=c.gen_batch_size,
                                             max_prompt_tokens=c.max_prompt_tokens)
                       if c.bank_manager_model else llm)
        banks, stats = build_banks(list(split.train + split.validation), encoder, mcfg,
                                   llm=builder, retriever=retriever)
        log(f"answer-agent banks ({c.bank}{', ' + c.bank_manager_model if c.bank_manager_model else ''}): "
            + ", ".join(f"{k}: {b.size}" for k, b in banks.items()))
        train_items = [AnswerItem(conv_of[r.conversation_id], r.qa) for r in train_recs]
        val_items = [AnswerItem(conv_of[r.conversation_id], r.qa) for r in val_recs]
    else:
        mcfg, acfg = manager_configs(c)
        cache: dict = {}
        train_items, val_items = [], []
        for recs, out in ((train_recs, train_items), (val_recs, val_items)):
            for cid in dict.fromkeys(r.conversation_id for r in recs):
                out.extend(manager_episode_specs(conv_of[cid], [r.qa for r in recs if r.conversation_id == cid],
                                                 encoder, retriever, mcfg, cache))
        log(f"manager episodes: {len(train_items)} train, {len(val_items)} validation "
            f"({len(cache)} snapshot banks)")
        if c.manager.get("sensitive_only", False):
            pool = int(c.manager.get("sensitive_pool", 0))
            if 0 < pool < len(train_items):
                pick = np.sort(np.random.default_rng(c.seed).choice(len(train_items), pool, replace=False))
                train_items = [train_items[i] for i in pick]
            train_items, stats = manager_sensitive_specs(llm, m.params, train_items, encoder, retriever, mcfg, acfg,
                                                         c.manager.f1_weight)
            if run_dir is not None:   # which episodes were kept and why, for the record
                with open(run_dir / "sensitive_episodes.jsonl", "w") as f:
                    f.writelines(json.dumps(x) + "\n" for x in stats)
            if not train_items:
                raise ValueError(f"manager.sensitive_only: none of the {len(stats)} training episodes examined "
                                 "changes the frozen agent's reward between ADD-all and unchanged banks; "
                                 "raise manager.sensitive_pool or turn the filter off")
            log(f"manager episodes whose reward depends on the bank: {len(train_items)} of {len(stats)} "
                f"(mean reward ADD-all {np.mean([x['reward_add_all'] for x in stats]):.3f}, "
                f"unchanged {np.mean([x['reward_unchanged'] for x in stats]):.3f})")
    if not train_items:
        raise ValueError(f"config.data={c.data!r}: no usable training questions for agent {c.agent!r}")
    return Context(c, llm, m.params, encoder, retriever, train_items, val_items, banks)


def rollouts(ctx: Context, params, items, rng, group: int, temperature: float):
    c = ctx.cfg
    # scaled_logprobs: the sampler reports log softmax(logits / T), i.e. the behaviour policy's
    # log-probs, so the update can use them as old log-probs at any temperature.
    sampling = SamplingConfig(temperature=temperature, scaled_logprobs=temperature > 0)
    if c.agent == "answer":
        return answer_rollouts(ctx.llm, params, items, ctx.banks, ctx.encoder, ctx.retriever, answer_config(c),
                               group, sampling, rng)
    mcfg, acfg = manager_configs(c)
    return manager_rollouts(ctx.llm, params, ctx.base_params, items, ctx.encoder, ctx.retriever, mcfg, acfg,
                            group, sampling, rng, format_penalty=c.manager.format_penalty,
                            f1_weight=c.manager.f1_weight)


def validate(ctx: Context, params) -> dict:
    """Greedy policy on the validation questions: mean EM/F1 of the final answers; the
    score that selects the checkpoint is F1 (finer-grained than EM on few questions)."""
    c = ctx.cfg
    if not ctx.val_items:
        return {"score": 0.0, "em": 0.0, "f1": 0.0, "n": 0}
    if c.agent == "answer":
        acfg = answer_config(c)
        preds = item_answer_prompts(ctx.val_items, ctx.banks, ctx.encoder, ctx.retriever, acfg)
        answers = greedy_answers(ctx.llm, params, preds, acfg.max_new_tokens)
        golds = [it.qa.answer for it in ctx.val_items]
        ems = [float(exact_match(a, g)) for a, g in zip(answers, golds)]
        f1s = [float(token_f1(a, g)) for a, g in zip(answers, golds)]
        extra = {}
    else:
        eps = rollouts(ctx, params, ctx.val_items, jax.random.PRNGKey(0), 1, 0.0)
        ems = [e.info["em"] for e in eps]
        f1s = [e.info["f1"] for e in eps]
        # Operations applied per episode: a manager that collapses to NONE shows here
        # long before a few answers' F1 moves.
        extra = {"parsed": float(np.mean([e.info["parsed"] for e in eps])),
                 "applied": float(np.mean([len(e.info["applied"]) - e.info["applied"].count("NONE")
                                           for e in eps])),
                 "adds": float(np.mean([e.info["applied"].count("ADD") for e in eps]))}
    em, f1 = float(np.mean(ems)), float(np.mean(f1s))
    return {"score": f1, "em": em, "f1": f1, "n": len(ems), **extra}


def final_evaluation(ctx: Context, params, run_dir: pathlib.Path, log) -> dict:
    from memr1_jax.evaluate import EvalConfig, evaluate
    c = ctx.cfg
    k = c.answer.k_per_speaker if c.agent == "answer" else c.manager.answer_k_per_speaker
    new_tok = c.answer.max_new_tokens if c.agent == "answer" else c.manager.answer_max_new_tokens
    # The answer agent is evaluated on add-all banks (as it was trained); the manager on its own banks.
    manager = c.bank if c.agent == "answer" else "llm"
    tables = {}
    systems = [("trained", params)] + ([("base", ctx.base_params)] if c.final_eval_base else [])
    for tag, p in systems:
        ecfg = EvalConfig(data=c.data, split="test", model=c.model, system="base", limit=c.test_limit,
                          k_per_speaker=k, manager=manager, manager_k=c.manager.retrieve_k,
                          manager_max_new_tokens=c.manager.max_new_tokens, answer_max_new_tokens=new_tok,
                          answer_prompt=c.answer.get("prompt", "full") if c.agent == "answer" else "full",
                          batch_size=c.gen_batch_size, run_dir=str(run_dir / f"eval_{tag}"),
                          manager_model=(c.bank_manager_model or None) if c.agent == "answer" else None)
        llm = dataclasses.replace(ctx.llm, params=p)
        if c.agent == "answer":
            tables[tag] = evaluate(ecfg, progress=False, llm=llm, encoder=ctx.encoder)
        else:   # trained manager builds the banks, the frozen base answers
            tables[tag] = evaluate(ecfg, progress=False, llm=dataclasses.replace(ctx.llm, params=ctx.base_params),
                                   manager_llm=llm, encoder=ctx.encoder)
    lines = [f"# final evaluation: {c.data} test, first {c.test_limit} questions", "",
             "| system | type | n | F1 | B1 | EM |", "|---|---|---|---|---|---|"]
    for tag, agg in tables.items():
        for label, row in agg.items():
            lines.append(f"| {tag} | {label} | {row['count']} | {100 * row['f1']:.2f} | {100 * row['b1']:.2f} | "
                         f"{100 * row['em']:.2f} |")
    (run_dir / "final_eval.md").write_text("\n".join(lines) + "\n")
    log("\n".join(lines))
    return tables


# ------------------------------------------------------------------ main loop
def train(c: ConfigDict, progress: bool = False) -> dict:
    """Runs the whole training; returns a summary dict (also written to summary.json)."""
    from memr1_jax.rl.checkpoint import RLCheckpointer
    from memr1_jax.rl.metrics_writer import MetricsWriter

    t_start = time.time()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = pathlib.Path(c.run_dir) if c.run_dir else pathlib.Path(c.run_root) / f"{c.name}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(c.to_json_best_effort(indent=2, sort_keys=True))
    log_f = open(run_dir / "train.log", "a")

    def log(msg: str):
        line = f"[{time.time() - t_start:7.1f}s] {msg}"
        print(line, flush=True)
        log_f.write(line + "\n")
        log_f.flush()

    ctx = _build_context(c, log, run_dir)
    rl = rl_config(c, ctx.llm.cfg.num_layers)
    mcfg = ctx.llm.cfg
    log(f"model {c.model} loaded; agent {c.agent}, {rl.algorithm}, "
        f"{'LoRA r=%d' % rl.lora.rank if rl.lora else 'full fine-tuning'}; {len(ctx.train_items)} training items")
    state = init_train_state(mcfg, rl, ctx.base_params, jax.random.PRNGKey(c.seed))
    updater = make_update_fn(mcfg, rl)
    writer = MetricsWriter(run_dir, total_steps=c.steps, progress=progress)
    ckpt = RLCheckpointer(run_dir / "checkpoints", save_every=c.save_every, max_to_keep=2, async_save=False)
    samples_f = open(run_dir / "samples.jsonl", "a")
    val_f = open(run_dir / "validation.jsonl", "a")
    order = list(range(len(ctx.train_items)))
    random.Random(c.seed).shuffle(order)
    if c.get("train_pool", 0):
        # A small fixed pool: every question comes back every few steps, so on a CPU budget the
        # reward curve measures learning rather than which questions a step happened to draw.
        order = order[: c.train_pool]
    cursor = 0
    rng = jax.random.PRNGKey(c.seed + 1)
    history, val_hist = [], []
    best = {"score": -1.0, "step": -1}
    best_params = None

    def run_validation(step: int, params):
        nonlocal best, best_params
        t0 = time.time()
        v = validate(ctx, params)
        v.update(step=step, seconds=time.time() - t0)
        val_hist.append(v)
        val_f.write(json.dumps(v) + "\n")
        val_f.flush()
        writer.events.scalars(step, {f"val/{k}": x for k, x in v.items() if k not in ("step",)})
        improved = v["score"] > best["score"]
        if improved:
            best = {"score": v["score"], "step": step}
            best_params = _host(params)
            if step > 0 and step not in ckpt.all_steps():
                ckpt.save_now(step, state, data_cursor=cursor, model_cfg=mcfg, rl_cfg=rl,
                              extra={"validation": v, "best": True})
        ops = f", {v['applied']:.2f} ops ({v['adds']:.2f} ADD) per step" if "applied" in v else ""
        log(f"validation @ step {step}: F1 {100 * v['f1']:.1f} EM {100 * v['em']:.1f} (n={v['n']}){ops}"
            f"{' *best*' if improved else ''} [{v['seconds']:.0f}s]")

    run_validation(0, ctx.base_params)
    for step in range(1, c.steps + 1):
        t0 = time.time()
        params = effective_params(rl, state)
        items = []
        for _ in range(c.questions_per_step):
            items.append(ctx.train_items[order[cursor % len(order)]])
            cursor += 1
        rng, key = jax.random.split(rng)
        eps = rollouts(ctx, params, items, key, c.group, c.temperature)
        t_roll = time.time() - t0
        max_new = c.answer.max_new_tokens if c.agent == "answer" else c.manager.max_new_tokens
        batch = pack_episodes(eps, ctx.llm.tokenizer.pad_id if ctx.llm.tokenizer.pad_id is not None else 0,
                              response_len=max_new)
        if c.rl.old_logprobs_from_sampler:
            # The sampler's log-probs are the behaviour policy's (softmax(logits / T), see
            # rollouts); using them skips a re-scoring forward over the whole batch, which is
            # a third of the update on CPU. With the option off the update re-scores them
            # and reports the sampler-vs-trainer gap.
            batch = batch.replace(old_logprobs=batch.sampler_logprobs, sampler_logprobs=None)
        if rl.beta and rl.lora is None:
            batch = batch.replace(ref_logprobs=compute_logprobs(
                ctx.base_params, batch, rl.micro_batch_size or batch.tokens.shape[0], model_cfg=mcfg,
                chunk_size=rl.logprob_chunk, temperature=rl.temperature))
        state, metrics = updater(state, batch)
        metrics = {k: float(np.asarray(v)) for k, v in metrics.items() if np.ndim(v) == 0}
        infos = [e.info for e in eps]
        metrics.update({
            "em_mean": float(np.mean([i["em"] for i in infos])), "f1_mean": float(np.mean([i["f1"] for i in infos])),
            "rollout_s": t_roll, "step_s": time.time() - t0, "seq_len": int(batch.tokens.shape[1])})
        if c.agent == "answer":
            metrics["marker_rate"] = float(np.mean([i["marker"] for i in infos]))
        else:
            metrics["parse_rate"] = float(np.mean([i["parsed"] for i in infos]))
        writer.write(step, metrics)
        history.append({"step": step, **metrics})
        for e in eps[: c.samples_per_step]:
            samples_f.write(json.dumps({"step": step, "reward": e.reward, **e.info}, ensure_ascii=False) + "\n")
        samples_f.flush()
        log(f"step {step}/{c.steps}: reward {metrics['reward_mean']:.3f} (EM {metrics['em_mean']:.2f}, "
            f"F1 {metrics['f1_mean']:.2f}) len {metrics['response_length']:.1f} T={metrics['seq_len']} "
            f"kl {metrics.get('kl_old_ref', metrics.get('kl', 0.0)):.4f} "
            f"[{t_roll:.0f}s rollout, {metrics['step_s']:.0f}s step]")
        ckpt.maybe_save(step, state, data_cursor=cursor, model_cfg=mcfg, rl_cfg=rl)
        if step % c.eval_every == 0 or step == c.steps:
            run_validation(step, effective_params(rl, state))
    ckpt.close(c.steps, state, data_cursor=cursor, model_cfg=mcfg, rl_cfg=rl)
    writer.close()
    samples_f.close()
    val_f.close()
    plot_curves(history, val_hist, run_dir / "curves.png")
    log(f"best validation F1 {100 * best['score']:.1f} at step {best['step']} (step 0 = untrained)")

    summary = {"run_dir": str(run_dir), "rewards": [h["reward_mean"] for h in history],
               "validation": val_hist, "best": best}
    if c.export_hf:
        from memr1_jax.weights.safetensors_loader import save_hf_checkpoint
        hf = run_dir / "hf"
        save_hf_checkpoint(mcfg, best_params, hf)
        ctx.llm.tokenizer.save(hf)
        summary["hf"] = str(hf)
        how = f"--system checkpoint:{hf}" if c.agent == "answer" else f"--manager-model {hf}"
        log(f"exported best weights to {hf} (evaluate with {how})")
    if c.test_limit:
        tables = final_evaluation(ctx, jax.tree.map(np.asarray, best_params), run_dir, log)
        summary["final_eval"] = {tag: {k: {m: v.get(m) for m in ("count", "f1", "em", "b1")} for k, v in t.items()}
                                 for tag, t in tables.items()}
    summary["wall_s"] = time.time() - t_start
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"done in {summary['wall_s']:.0f}s; run dir {run_dir}")
    log_f.close()
    return summary


def export_checkpoint(run_dir: str | pathlib.Path, step: int | None = None) -> pathlib.Path:
    """Write the weights of one saved checkpoint of a run as an HF folder ``<run>/hf``.

    For runs stopped before their end (the export at the end never happened). ``step``
    defaults to the best validated step on disk (validation.jsonl), else the latest."""
    from memr1_jax.models.registry import load_model
    from memr1_jax.rl.checkpoint import RLCheckpointer
    from memr1_jax.weights.safetensors_loader import save_hf_checkpoint
    run = pathlib.Path(run_dir)
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: not a training run folder (no config.json)")
    c = ConfigDict(json.loads(cfg_path.read_text()))
    ckpt = RLCheckpointer(run / "checkpoints", async_save=False)
    on_disk = ckpt.all_steps()
    if not on_disk:
        raise FileNotFoundError(f"{run / 'checkpoints'}: no checkpoint saved")
    if step is None:
        val = run / "validation.jsonl"
        scored = [json.loads(x) for x in val.read_text().splitlines() if x.strip()] if val.exists() else []
        scored = [v for v in scored if v["step"] in on_disk]
        step = max(scored, key=lambda v: v["score"])["step"] if scored else max(on_disk)
    if step not in on_disk:
        raise ValueError(f"--step {step}: no checkpoint of that step in {run / 'checkpoints'} (have {on_disk})")
    m = load_model(c.model)
    model_cfg = dataclasses.replace(m.cfg, remat=bool(c.get("remat", False)))
    rl = rl_config(c, model_cfg.num_layers)
    target = init_train_state(model_cfg, rl, m.params, jax.random.PRNGKey(c.seed))
    restored = ckpt.restore(target, step)
    ckpt.close()
    hf = run / "hf"
    save_hf_checkpoint(model_cfg, _host(effective_params(rl, restored.state)), hf)
    m.tokenizer.save(hf)
    print(f"exported step {step} of {run} to {hf}")
    return hf


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--export":
        try:
            if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--step"):
                raise ValueError("usage: python -m memr1_jax.train --export RUN_DIR [--step N]")
            export_checkpoint(argv[1], int(argv[3]) if len(argv) == 4 else None)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        cfg = parse_args(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
