"""The run configuration: one schema for ``python -m memr1_jax.train``, ``python -m
memr1_jax.evaluate`` and every file in ``configs/``.

A ``RunConfig`` is a tree of frozen dataclasses. The lower layers' own configs sit in it
whole, so every field they have is settable: ``rl`` is ``rl.train_state.RLConfig``,
``task.answer`` is ``AnswerConfig``, ``task.manager`` is ``ManagerConfig``. Configs are
data: a config file's ``get_config()`` returns a RunConfig, usually a preset with
``override(...)`` applied, and the command line applies the same ``override`` to it:

    --config.rl.learning_rate=3e-4 --config.task.answer.k_per_speaker=10 --config.run_dir=D

Values are parsed to the field's type (``none`` for an optional field); an unknown key fails
with the closest valid key. ``to_dict`` / ``from_dict`` round-trip a config through the JSON
that a run folder keeps (``config.json``), which is what resuming compares against.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import json
import math
import pathlib
import types
import typing
from typing import Any, Mapping

from memr1_jax.agents.answer_agent import AnswerConfig
from memr1_jax.agents.memory_manager import KINDS as MANAGER_KINDS, ManagerConfig
from memr1_jax.agents.rollout import MANAGER_REWARDS
from memr1_jax.data import FORMATS as DATA_FORMATS
from memr1_jax.parallel.mesh import MeshConfig
from memr1_jax.rl.lora import DEFAULT_TARGETS, LoraConfig
from memr1_jax.rl.train_state import RLConfig

AGENTS = ("answer", "manager")
DTYPES = ("float32", "bfloat16")
SYSTEMS = ("memory-r1", "base", "mem0", "mem0-oss", "rag", "fullctx")
MAIN_JOB_SYSTEMS = "memory-r1,memory-r1@add-all,base,rag"   # what python -m memr1_jax.evaluate compares by default
SPLITS = ("train", "validation", "test", "all")


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class ModelSection:
    name: str = "smollm2-135m-instruct"   # registry preset or model folder (e.g. a run's hf/)
    encoder: str = "minilm"               # retrieval encoder: "minilm" | "hashing" (tests only)
    remat: bool = False                   # rematerialise each decoder layer in the update
    # Mixed precision: activations and the KV cache in `dtype`, weights stored in `param_dtype`
    # (float32 master weights keep the optimiser state float32); log-softmax, losses and the
    # optimiser always run in float32.
    dtype: str = "float32"
    param_dtype: str = "float32"
    # "blockwise": flash-style attention over key blocks (never [T, S] logits) in prefill
    # and the update; "dense" materialises them (faster for short rows on CPU).
    attention: str = "dense"
    attention_block: int = 512

    def __post_init__(self):
        if self.attention not in ("dense", "blockwise"):
            raise ConfigError(f"model.attention={self.attention!r}: expected 'dense' or 'blockwise'")
        if self.encoder not in ("minilm", "hashing"):
            raise ConfigError(f"model.encoder={self.encoder!r}: expected 'minilm' or 'hashing'")
        for key in ("dtype", "param_dtype"):
            if getattr(self, key) not in DTYPES:
                raise ConfigError(f"model.{key}={getattr(self, key)!r}: expected one of {DTYPES}")


@dataclasses.dataclass(frozen=True)
class DataSection:
    path: str = "embedded"   # "embedded", a LoCoMo path (folder or JSON), a LongMemEval JSON, an MSC JSONL
    format: str = "auto"     # auto (from the file's content) | locomo | longmemeval | msc
    train_ids: str = ""      # comma-separated conversation ids ("": the paper split for LoCoMo ids,
    validation_ids: str = ""  # the embedded set's own, otherwise every conversation is test)
    facts: str = "observations"  # what the Memory Manager reads: the data's observations | "extract"
    extract_model: str = ""      # facts="extract": the extracting model ("": the answer model)
    facts_cache: str = "runs/facts"  # extracted facts, one file per conversation and extractor
    train_pool: int = 8      # train on the first N (shuffled) training questions only (0: all)
    val_limit: int = 16      # validation questions scored (greedy) per validation

    def __post_init__(self):
        if self.format not in DATA_FORMATS:
            raise ConfigError(f"data.format={self.format!r}: expected one of {DATA_FORMATS}")
        if self.facts not in ("observations", "extract"):
            raise ConfigError(f"data.facts={self.facts!r}: expected 'observations' or 'extract'")


@dataclasses.dataclass(frozen=True)
class RolloutSection:
    questions_per_step: int = 4        # GRPO groups (prompts) per update; G is rl.group_size
    gen_batch_size: int = 8            # prompts per sampler call (also evaluation's batch)
    max_prompt_tokens: int = 1024      # longer prompts keep their tail (0: max_seq_len - max_new_tokens)
    # The sampler's tempered log-probs are the behaviour policy's, so the update can use them
    # as old log-probs and skip a re-scoring forward (a third of the update on CPU).
    old_logprobs_from_sampler: bool = True
    samples_logged: int = 4            # rollouts per step written to samples.jsonl
    # Greedy calls (evaluation, validation, bank building) draft this many tokens by prompt
    # lookup and verify them in one pass: the greedy tokens in fewer passes (0: plain decoding).
    speculative_tokens: int = 4

    def __post_init__(self):
        if self.speculative_tokens < 0:
            raise ConfigError(f"rollout.speculative_tokens={self.speculative_tokens}: must be >= 0 (0: off)")


@dataclasses.dataclass(frozen=True)
class LoraSection:
    rank: int = 16          # 0: full fine-tuning
    alpha: float = 32.0
    top_layers: int = 8     # adapters on the top N blocks only (0: all): backprop stops below them


@dataclasses.dataclass(frozen=True)
class TaskSection:
    agent: str = "answer"              # "answer" | "manager": the agent trained
    # The Answer Agent: the trained policy (agent="answer"), or the frozen agent whose
    # answers reward the manager (agent="manager"); also the agent of every evaluation.
    answer: AnswerConfig = AnswerConfig(k_per_speaker=4, max_new_tokens=24, f1_weight=1.0, prompt="compact")
    # The Memory Manager: the trained policy (agent="manager"), or what builds the answer
    # agent's banks when bank="llm"; also the manager of base / mem0 evaluations.
    manager: ManagerConfig = ManagerConfig(retrieve_k=5, max_facts_per_step=4, max_new_tokens=64, f1_weight=1.0)
    bank: str = "add-all"              # answer task's banks: "add-all" | "llm" (built by a manager model)
    bank_manager_model: str = ""       # bank="llm": the model that builds them (stage 2 of the paper:
                                       # a trained manager's hf/); "": the backbone
    frozen_answer_model: str = ""      # manager task: the frozen Answer Agent (registry name or model
                                       # folder); "": the backbone's untrained weights
    # Manager task: train only on episodes whose frozen-agent reward differs between "ADD every
    # new fact" and "change nothing" (on the others a GRPO group carries no signal) ...
    sensitive_only: bool = False
    sensitive_pool: int = 0            # ... examining a random subset of this many (0: all)
    # Manager task reward: "answer" (the paper's: EM + task.manager.f1_weight * F1 of the frozen
    # Answer Agent answering from the bank) | "gold" (the fraction of the step's facts decided as
    # the changing-facts generator's gold operations: dense, no answer to generate; data.path
    # "changing" only). Validation reports the frozen agent's F1 and the gold agreement either way.
    manager_reward: str = "answer"
    # Manager task: supervised warm start. Each item's rollout is its gold completion (one row,
    # advantage 1; on the update's first pass the ratio is 1, so the policy-gradient loss has the
    # cross-entropy's gradient). Needs rl.group_size=1, rl.algorithm="grpo", rl.beta=0.
    manager_sft: bool = False
    # Manager task's training items: "questions" (the paper's: one step per training question, its
    # evidence chunk) | "steps" (every step of the training conversations: each fact's gold
    # operation is the target, so gold-scored runs only). Validation keeps the question items.
    manager_items: str = "questions"
    # manager_items="steps": also every step once more over a sparse snapshot, each earlier fact
    # kept with this probability (small banks, as a service's first adds see); 0: none.
    manager_sparse_keep: float = 0.0
    # manager_items="steps": also every step once more over a snapshot where each speaker's bank holds
    # the other speaker's memories too (another person's slot is not the one to change).
    manager_crowd: bool = False
    # manager_items="steps": also every step that changes, ends or retracts a slot said before, once more
    # over a snapshot without that person's memories of the slot (its gold turns to ADD / NONE), so the
    # two items differ only in whether the slot's memory is shown (generated data only).
    manager_counterfactual: bool = False

    @property
    def gold_scored(self) -> bool:
        """The manager run optimises the gold agreement (its reward or its warm start), so its
        validation keeps the best checkpoint by that rather than by the reader's F1."""
        return self.agent == "manager" and (self.manager_sft or self.manager_reward == "gold")

    def __post_init__(self):
        if self.agent not in AGENTS:
            raise ConfigError(f"task.agent={self.agent!r}: expected one of {AGENTS}")
        if self.bank not in ("add-all", "llm"):
            raise ConfigError(f"task.bank={self.bank!r}: expected 'add-all' or 'llm'")
        if self.manager_reward not in MANAGER_REWARDS:
            raise ConfigError(f"task.manager_reward={self.manager_reward!r}: expected one of {MANAGER_REWARDS}")
        if self.manager_items not in ("questions", "steps"):
            raise ConfigError(f"task.manager_items={self.manager_items!r}: expected 'questions' or 'steps'")
        if not 0.0 <= self.manager_sparse_keep < 1.0 or (self.manager_sparse_keep and self.manager_items != "steps"):
            raise ConfigError(f"task.manager_sparse_keep={self.manager_sparse_keep}: a probability in [0, 1), "
                              "with task.manager_items='steps'")
        for name in ("manager_crowd", "manager_counterfactual"):
            if getattr(self, name) and self.manager_items != "steps":
                raise ConfigError(f"task.{name}=true needs task.manager_items='steps'")
        if self.manager_items == "steps" and not self.gold_scored:
            raise ConfigError("task.manager_items='steps' has no question to answer: it needs gold-scored training "
                              "(task.agent='manager' with task.manager_sft=true or task.manager_reward='gold')")


@dataclasses.dataclass(frozen=True)
class EvalSection:
    # memory-r1 | memory-r1:PATH | base | mem0 | mem0-oss | rag | fullctx | checkpoint:PATH, or several joined by
    # commas (python -m memr1_jax.evaluate runs each and compares them with the first)
    system: str = "base"
    split: str = "test"
    limit: int = 16             # first N questions of the split (0: all)
    judge: str = ""             # "": no J | "openai" | a registry model name
    manager: str = "llm"        # base / mem0 bank construction: "llm" (task.manager) | "add-all" | "gold"
                                # (gold: the changing-facts generator's operations, the oracle bank)
    manager_model: str = ""     # base / mem0: the model that builds the banks ("": the answer model)
    rag_chunk_tokens: int = 256
    rag_num_chunks: int = 2
    fullctx_tokens: int = 2048
    mem0_messages_per_add: int = 2  # mem0-oss: messages per Mem0 add call (Mem0's LoCoMo evaluation: 2)
    run_dir: str = ""           # evaluation output folder ("": runs/evaluate/<derived from the config>)
    after_training: bool = True  # train: evaluate the selected weights on `split` at the end
    base_too: bool = True        # ... and the untrained model on the same questions

    @property
    def systems(self) -> list[str]:
        return [s.strip() for s in self.system.split(",")]

    def __post_init__(self):
        for entry in self.systems:
            system, _, kind = entry.partition("@")   # SYSTEM@MANAGER: eval.manager=MANAGER for that one
            if system not in SYSTEMS and not system.startswith(("checkpoint:", "memory-r1:")):
                raise ConfigError(f"eval.system={self.system!r}: {system!r} is not one of {SYSTEMS}, "
                                  f"checkpoint:PATH or memory-r1:PATH")
            if kind and kind not in MANAGER_KINDS:
                raise ConfigError(f"eval.system={self.system!r}: {entry!r} names manager {kind!r}, not one of "
                                  f"{MANAGER_KINDS}")
        if len(set(self.systems)) != len(self.systems):
            raise ConfigError(f"eval.system={self.system!r}: a system is named twice")
        if self.split not in SPLITS:
            raise ConfigError(f"eval.split={self.split!r}: expected one of {SPLITS}")
        if self.manager not in MANAGER_KINDS:
            raise ConfigError(f"eval.manager={self.manager!r}: expected one of {MANAGER_KINDS}")
        if self.limit < 0:
            raise ConfigError(f"eval.limit={self.limit}: must be >= 0 (0: all questions)")
        if self.mem0_messages_per_add < 1:
            raise ConfigError(f"eval.mem0_messages_per_add={self.mem0_messages_per_add}: must be >= 1")


@dataclasses.dataclass(frozen=True)
class DistributedSection:
    """Several processes (hosts): detected on Cloud TPU pod slices, Slurm and Open MPI, or
    set here. Every process runs the same program over the global mesh; process 0 writes
    the logs and exports."""
    coordinator: str = ""       # HOST:PORT of process 0 ("": auto-detect / one process)
    num_processes: int = 1
    process_id: int = 0
    cpu_collectives: str = "gloo"   # cross-process collectives of the CPU backend


@dataclasses.dataclass(frozen=True)
class GuardSection:
    """The divergence guard: a step whose update crosses one of these limits stops the run
    (exit 3; the last good checkpoint stays, nothing is exported). 0 turns a limit off.
    Non-finite rewards, losses, gradients or parameters always stop it."""
    max_update_ratio: float = 1.0   # ||trainable after - before|| / ||before|| in one step
    max_grad_norm: float = 1e4      # pre-clip gradient norm (largest optimiser step of the update)
    max_kl: float = 5.0             # ppo_kl: KL(rollout policy || updated policy) per token


@dataclasses.dataclass(frozen=True)
class LoggingSection:
    """Where a run's curves go besides metrics.jsonl: TensorBoard events in the run folder
    (``tensorboard --logdir <run_dir>``) and, optionally, Weights & Biases."""
    tensorboard: bool = True
    wandb: str = ""                 # "": off; "offline": files in <run_dir>/wandb (wandb sync later); "online"
    wandb_project: str = "memr1-jax"


# The update's settings for the CPU default; group_size is G and temperature the rollout
# temperature (the update's log-probs describe the same tempered policy).
_CPU_RL = RLConfig(algorithm="grpo", learning_rate=1e-3, critic_learning_rate=1e-4, beta=0.0, clip_eps=0.2,
                   mini_batch_size=16, micro_batch_size=8, group_size=8, temperature=0.7)


# Bounds of the numeric keys, checked when a config is resolved (before any model loads or a run
# folder exists). A key listed in neither table must be >= 0; mesh.* has its own (-1 or >= 1).
POSITIVE_KEYS = (
    "steps", "eval_every", "save_every", "model.attention_block", "rollout.questions_per_step",
    "rollout.gen_batch_size", "rl.learning_rate", "rl.critic_learning_rate", "rl.total_steps", "rl.adam_eps",
    "rl.epochs", "rl.logprob_chunk", "rl.temperature", "rl.group_size", "rl.clip_eps", "rl.clip_eps_high",
    "rl.clip_ratio_c", "rl.max_grad_norm", "lora.alpha", "task.answer.k_per_speaker", "task.answer.max_new_tokens",
    "task.manager.retrieve_k", "task.manager.max_facts_per_step", "task.manager.max_new_tokens",
    "eval.rag_chunk_tokens", "eval.rag_num_chunks", "eval.fullctx_tokens", "eval.mem0_messages_per_add",
    "distributed.num_processes")
UNIT_KEYS = {"rl.min_lr_ratio": "[0, 1]", "rl.gamma": "[0, 1]", "rl.lam": "[0, 1]", "rl.adam_b1": "[0, 1)",
             "rl.adam_b2": "[0, 1)", "task.manager_sparse_keep": "[0, 1)"}


def _out_of_bounds(key: str, value: float) -> str | None:
    """Why ``value`` is not allowed for ``key`` (None: it is)."""
    if key.startswith("mesh.") or key == "distributed.process_id":
        return None
    if key in POSITIVE_KEYS:
        return None if value > 0 else "must be > 0"
    if key in UNIT_KEYS:
        interval = UNIT_KEYS[key]
        return None if 0 <= value < 1 or (value == 1 and interval.endswith("]")) else f"must be in {interval}"
    return None if value >= 0 else "must be >= 0"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    name: str = "answer_agent_grpo_cpu"
    seed: int = 0
    steps: int = 10
    eval_every: int = 5           # validation every N steps (and at step 0 and the last step)
    save_every: int = 1           # checkpoint every N steps (resume restarts from the latest)
    run_root: str = "runs/train"
    run_dir: str = ""             # the run folder ("": run_root/<name>-<time>); rerun with it to resume
    checkpoint_dir: str = ""      # "": <run_dir>; a gs:// URL or shared folder (multi-host runs, pre-emptible VMs)
    export_hf: bool = True        # write the selected weights as an HF folder <run>/hf
    target: str = ""              # the hardware this config is planned for (parallel.targets; memory_plan.py)
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    rollout: RolloutSection = RolloutSection()
    rl: RLConfig = _CPU_RL
    lora: LoraSection = LoraSection()
    task: TaskSection = TaskSection()
    eval: EvalSection = EvalSection()
    # (data, fsdp, tensor) device mesh, -1 = the remaining devices; 1 x 1 x 1 runs on one device.
    # rules: the logical-axis rule table (parallel.rules.DEFAULT_RULES), set in config files.
    mesh: MeshConfig = MeshConfig(data=1, fsdp=1, tensor=1)
    distributed: DistributedSection = DistributedSection()
    guard: GuardSection = GuardSection()
    logging: LoggingSection = LoggingSection()

    def validate(self) -> "RunConfig":
        """Checks across fields (``override`` and ``from_dict`` call it once all keys are set,
        so a config may pass through inconsistent states while it is being written)."""
        if self.rl.lora is not None:
            raise ConfigError("rl.lora: set LoRA through lora.rank / lora.alpha / lora.top_layers")
        for key in all_keys(self):
            value = functools.reduce(getattr, key.split("."), self)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                problem = _out_of_bounds(key, value)
                if problem:
                    raise ConfigError(f"{key}={value}: {problem}")
        if self.logging.wandb not in ("", "offline", "online"):
            raise ConfigError(f"logging.wandb={self.logging.wandb!r}: expected '' (off), 'offline' or 'online'")
        d = self.distributed
        if not 0 <= d.process_id < d.num_processes:
            raise ConfigError(f"distributed.process_id={d.process_id}: expected 0 .. {d.num_processes - 1} "
                              f"(distributed.num_processes={d.num_processes})")
        rows = self.rollout.questions_per_step * self.rl.group_size
        mini, micro = self.rl.mini_batch_size or rows, self.rl.micro_batch_size
        if rows % mini:
            raise ConfigError(f"rl.mini_batch_size={mini} does not divide the {rows} rows of a step "
                              f"(rollout.questions_per_step x rl.group_size)")
        if micro and mini % min(micro, mini):
            raise ConfigError(f"rl.micro_batch_size={micro} does not divide rl.mini_batch_size={mini}")
        group, score = self.rl.group_size, self.rl.logprob_micro_batch
        if (self.task.agent == "answer" and self.rl.shared_prompt and group > 1
                and (min(micro or mini, mini) % group or (score and score % group))):
            # Answer groups share their prompt; the update computes it once per group, so a
            # micro-batch must hold whole groups (found here, not after the first rollout).
            raise ConfigError(f"rl.micro_batch_size={micro} / rl.logprob_micro_batch={score}: with rl.shared_prompt "
                              f"they must be multiples of rl.group_size={group}, or set rl.shared_prompt=false")
        if self.task.agent == "manager" and self.task.manager.constrained and self.rollout.old_logprobs_from_sampler:
            # The sampler reports the masked policy's log-probs; the update scores the model's own
            # (unmasked) ones, so the ratio must start from the update's scoring of the same tokens.
            raise ConfigError("task.manager.constrained=true trains on the unmasked log-probs of the constrained "
                              "samples: set rollout.old_logprobs_from_sampler=false")
        if self.task.manager_sft:
            wrong = {k: v for k, v in (("task.agent", self.task.agent), ("rl.group_size", self.rl.group_size),
                                       ("rl.algorithm", self.rl.algorithm), ("rl.beta", self.rl.beta),
                                       ("rollout.old_logprobs_from_sampler", self.rollout.old_logprobs_from_sampler))
                     if v != {"task.agent": "manager", "rl.group_size": 1, "rl.algorithm": "grpo", "rl.beta": 0,
                              "rollout.old_logprobs_from_sampler": False}[k]}
            if wrong:
                raise ConfigError(f"task.manager_sft=true trains gold completions as one-row groups scored by the "
                                  f"update: it needs task.agent='manager', rl.group_size=1, rl.algorithm='grpo', "
                                  f"rl.beta=0, rollout.old_logprobs_from_sampler=false (got {wrong})")
        return self

    def update_config(self, num_layers: int) -> RLConfig:
        """The RLConfig the update runs with: LoRA from the lora section, batch sizes clamped
        to the rows of a step."""
        rows = self.rollout.questions_per_step * self.rl.group_size
        mini = self.rl.mini_batch_size or rows
        lora = None
        if self.lora.rank:
            lora = LoraConfig(rank=self.lora.rank, alpha=self.lora.alpha,
                              targets=lora_targets(num_layers, self.lora.top_layers))
        return self.rl.replace(mini_batch_size=mini, micro_batch_size=min(self.rl.micro_batch_size or mini, mini),
                               lora=lora)


def lora_targets(num_layers: int, top_layers: int) -> tuple[tuple[str, int], ...]:
    """The default LoRA targets restricted to the top ``top_layers`` blocks (0: all). The base
    is frozen, so backpropagation stops at the lowest adapted block: on CPU this cuts the
    backward pass roughly in proportion."""
    if not top_layers or top_layers >= num_layers:
        return DEFAULT_TARGETS
    layers = "|".join(str(i) for i in range(num_layers - top_layers, num_layers))
    return tuple((rf"(^|.*/)layers_({layers})/" + regex.split("(^|.*/)", 1)[1], n) for regex, n in DEFAULT_TARGETS)


# ------------------------------------------------------------------ presets
def default_config() -> RunConfig:
    """The embedded CPU default of ``python -m memr1_jax.train``: answer agent, GRPO,
    SmolLM2-135M-Instruct with LoRA, the compact distillation prompt."""
    return RunConfig()


def evaluation_defaults() -> RunConfig:
    """The defaults of ``python -m memr1_jax.evaluate``: the shipped trained pipeline against its
    Answer Agent on add-all banks, the untrained pipeline and rag (``MAIN_JOB_SYSTEMS``), the
    paper's full distillation prompt, 10 memories per speaker (30 in the paper: 10 keeps CPU prompts near 1k tokens), 64 answer
    tokens, the manager with 8 facts and 160 new tokens per step, the first 40 questions."""
    return override(RunConfig(name="evaluate"), {
        "eval.system": MAIN_JOB_SYSTEMS,
        "task.answer": AnswerConfig(k_per_speaker=10, max_new_tokens=64, prompt="full"),
        "task.manager": ManagerConfig(retrieve_k=5, max_facts_per_step=8, max_new_tokens=160),
        "rollout.max_prompt_tokens": 0,
        "eval.limit": 40})


def paper_config(name: str, agent: str, algorithm: str, model: str, target: str,
                 gen_batch_size: int = 64) -> RunConfig:
    """Paper-scale settings (Memory-R1, arXiv 2508.19828): 128 rollouts per update, actor lr
    1e-6, critic lr 1e-5, prompts up to 4096 tokens and responses up to 2048, temperature 1.0
    for rollouts, greedy evaluation, 30 memories per speaker, pure EM reward, full fine-tuning
    with a KL-regularised update. Needs accelerators and the HF weights (MEMR1_MODEL_<PRESET>).

    Placed for ``target`` (``parallel.targets``): an FSDP mesh over its devices, bfloat16
    activations and KV cache over float32 master weights, per-layer remat, blockwise attention,
    micro-batches of one sequence per device; ``benchmarks/memory_plan.py`` checks the fit."""
    from memr1_jax.parallel.targets import TARGETS
    if target not in TARGETS:
        raise ConfigError(f"paper_config target={target!r}: expected one of {sorted(TARGETS)}")
    devices = TARGETS[target].devices
    group = 8 if algorithm == "grpo" else 1
    return override(RunConfig(name=name, target=target), {
        "mesh": MeshConfig(data=1, fsdp=devices, tensor=1),
        "model.dtype": "bfloat16", "model.param_dtype": "float32", "model.remat": True,
        "model.attention": "blockwise",
        "model.name": model, "data.path": "locomo", "data.train_pool": 0, "data.val_limit": 200,
        "steps": 200, "eval_every": 20, "save_every": 20,
        "rollout.questions_per_step": 128 // group, "rollout.gen_batch_size": gen_batch_size,
        "rollout.max_prompt_tokens": 4096,
        "rollout.old_logprobs_from_sampler": False,
        "rl": RLConfig(algorithm=algorithm, learning_rate=1e-6, critic_learning_rate=1e-5,
                       beta=0.001 if algorithm == "grpo" else 0.0, mini_batch_size=32, micro_batch_size=devices,
                       group_size=group, temperature=1.0),
        "lora.rank": 0,
        "task.agent": agent,
        # For the manager task this is the frozen Answer Agent, whose answers need fewer tokens.
        "task.answer": AnswerConfig(k_per_speaker=30, max_new_tokens=2048 if agent == "answer" else 256,
                                    prompt="full"),
        "task.manager": ManagerConfig(retrieve_k=5, max_facts_per_step=8, max_new_tokens=2048),
        "eval.after_training": False})


# ------------------------------------------------------------------ overrides
def _fields(cls) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def all_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every settable dotted key under ``cfg`` (sections and their leaves)."""
    out = []
    for name, (_, _) in _fields(type(cfg)).items():
        key = prefix + name
        out.append(key)
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            out.extend(all_keys(value, key + "."))
    return out


def _unknown(key: str, root: Any) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys(root), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _optional_of(tp) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _check_type(key: str, value: Any, tp) -> Any:
    base, optional = _optional_of(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: None is not allowed (expected {getattr(base, '__name__', base)})")
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value!r}: must be a finite number")
    if base in (int, float, str, bool):
        if type(value) is not base:
            raise ConfigError(f"{key}={value!r}: expected {base.__name__}, got {type(value).__name__}")
        return value
    if isinstance(base, type) and not isinstance(value, base):
        raise ConfigError(f"{key}={value!r}: expected {base.__name__}")
    return value


def parse_value(key: str, raw: str, tp) -> Any:
    """A command-line string as a value of the field type ``tp``."""
    base, optional = _optional_of(tp)
    text = raw.strip()
    if optional and text.lower() in ("none", "null"):
        return None
    if base is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ConfigError(f"--config.{key}={raw!r}: expected true or false")
    if base is str:
        return raw
    if base in (int, float):
        try:
            value = int(text) if base is int else float(text)
        except ValueError:
            raise ConfigError(f"--config.{key}={raw!r}: expected {base.__name__}") from None
        return value
    if dataclasses.is_dataclass(base):
        first = dataclasses.fields(base)[0].name
        raise ConfigError(f"--config.{key} is a section: set its keys, e.g. --config.{key}.{first}=...")
    raise ConfigError(f"--config.{key}: a {getattr(base, '__name__', base)} is set in a config file, "
                      "not on the command line")


def _set(node: Any, parts: list[str], value: Any, key: str, root: Any, from_string: bool) -> Any:
    if not dataclasses.is_dataclass(node):
        raise _unknown(key, root)
    fields = _fields(type(node))
    if parts[0] not in fields:
        raise _unknown(key, root)
    name = parts[0]
    _, tp = fields[name]
    if len(parts) > 1:
        new = _set(getattr(node, name), parts[1:], value, key, root, from_string)
    else:
        new = _check_type(key, parse_value(key, value, tp) if from_string else value, tp)
    try:
        return dataclasses.replace(node, **{name: new})
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:   # a lower layer's own validation
        raise ConfigError(f"{key}={value!r}: {e}") from None


def override(cfg: RunConfig, values: Mapping[str, Any], *, from_strings: bool = False) -> RunConfig:
    """A copy of ``cfg`` with each dotted key set (``{"rl.beta": 0.04}``); with
    ``from_strings`` the values are command-line strings parsed to the field types."""
    for key, value in values.items():
        cfg = _set(cfg, key.split("."), value, key, cfg, from_strings)
    return cfg.validate()


# ------------------------------------------------------------------ files, JSON, command line
def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _build(cls, data: Mapping, prefix: str, root_cls) -> Any:
    fields = _fields(cls)
    kw = {}
    for name, value in data.items():
        key = prefix + name
        if name not in fields:
            raise _unknown(key, root_cls())
        _, tp = fields[name]
        base, _ = _optional_of(tp)
        if dataclasses.is_dataclass(base) and isinstance(value, Mapping):
            value = _build(base, value, key + ".", root_cls)
        elif isinstance(value, list):   # JSON has no tuples
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kw[name] = value if dataclasses.is_dataclass(value) else _check_type(key, value, tp)
    try:
        return cls(**kw)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


def from_dict(data: Mapping) -> RunConfig:
    """The inverse of ``to_dict``; missing keys take their defaults, unknown keys fail."""
    return _build(RunConfig, data, "", RunConfig).validate()


def to_json(cfg: RunConfig) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def call_config_function(path: str | pathlib.Path, name: str, what: str = ""):
    """Runs ``name()`` of a config file (Python, imported as a module of its own); errors name
    the file (``what``: how the message calls such a file, e.g. "a pipeline config")."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"_memr1_config_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise ConfigError(f"--config {path}: the file defines no {name}()" + (f" ({what})" if what else ""))
    return getattr(module, name)()


def load_config_file(path: str | pathlib.Path) -> RunConfig:
    """Runs ``get_config()`` of a config file (Python, imported as a module of its own)."""
    cfg = call_config_function(path, "get_config")
    if not isinstance(cfg, RunConfig):
        raise ConfigError(f"--config {path}: get_config() returned {type(cfg).__name__}, expected RunConfig")
    return cfg.validate()


def split_config_args(argv: list[str]) -> tuple[str | None, list[tuple[str, str]], bool, list[str]]:
    """(config file, dotted overrides, --print_config, remaining arguments) of a command line."""
    path, overrides, show, rest = None, [], False, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
            i += 2
            continue
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a.startswith("--config.") and "=" in a:
            key, value = a[len("--config."):].split("=", 1)
            overrides.append((key, value))
        elif a.startswith("--config."):
            raise ConfigError(f"{a}: expected --config.KEY=VALUE")
        elif a in ("--print_config", "--print-config"):
            show = True
        else:
            rest.append(a)
        i += 1
    return path, overrides, show, rest


def resolve(path: str | None, overrides: list[tuple[str, str]], default: RunConfig) -> RunConfig:
    cfg = load_config_file(path) if path else default
    return override(cfg, dict(overrides), from_strings=True)
