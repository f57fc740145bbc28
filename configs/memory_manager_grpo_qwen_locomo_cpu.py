"""Memory Manager, GRPO, on LoCoMo with Qwen2.5-Coder-0.5B-Instruct on CPU. SmolLM2-135M
cannot act as manager: it emits no usable operation list with any prompt tried (README), so
the smallest model that writes the JSON operations is used. Training keeps the episodes whose
frozen-agent reward depends on the bank (``task.sensitive_only``; 32 of a random 64 of the
149): on the others every completion earns the same reward. One question x G=8 per step: with
2 x G=4 (README, run 2) the policy drifted to all-NONE. This is the measured run of the README.

Episodes come from conversation 26 (the evidence session of each training question over an
add-all snapshot of the sessions before it); the frozen Answer Agent is the untrained
backbone with the paper's distillation prompt and 10 memories per speaker, exactly as
``python -m memr1_jax.evaluate`` runs it. Training steps hold 2 facts (the chunk with the
evidence fact) and 96 new tokens: rows of 1,120 tokens instead of 1,696 with the evaluation's
8-fact steps (an 8 x 1696-token update took 490 s here). The validation conversation 30
selects the checkpoint, exported to ``hf/``; compare it with the untrained (Mem0-style)
manager by building the test banks with each:

    python -m memr1_jax.train --config configs/memory_manager_grpo_qwen_locomo_cpu.py \\
        --config.data.path=../shared/data/locomo10
    python -m memr1_jax.evaluate --data ../shared/data/locomo10 --split test --limit 200 \\
        --model qwen2.5-coder-0.5b-instruct --manager-model runs/train/<run>/hf
"""

import pathlib

from memr1_jax.agents.answer_agent import AnswerConfig
from memr1_jax.agents.memory_manager import ManagerConfig
from memr1_jax.config import load_config_file, override


def get_config():
    base = load_config_file(pathlib.Path(__file__).with_name("memory_manager_grpo_cpu.py"))
    return override(base, {
        "name": "memory_manager_grpo_qwen_locomo_cpu",
        "data.path": "locomo",             # override with the LoCoMo path
        "data.val_limit": 16,
        "model.name": "qwen2.5-coder-0.5b-instruct",
        "model.remat": True,               # without it the update of 8 x 1440 tokens needs > 21 GiB (OOM-killed)
        "rollout.questions_per_step": 1,
        "rollout.max_prompt_tokens": 1024,
        "rl.group_size": 8,
        "rl.temperature": 1.0,
        "rl.micro_batch_size": 2,
        "rl.learning_rate": 3e-4,
        "lora.top_layers": 8,
        "steps": 20,
        "eval_every": 10,
        "eval.after_training": False,      # the test comparison runs through memr1_jax.evaluate (above)
        "task.answer": AnswerConfig(k_per_speaker=10, max_new_tokens=64, prompt="full"),
        "task.manager": ManagerConfig(retrieve_k=5, max_facts_per_step=2, max_new_tokens=96, f1_weight=1.0,
                                      format_penalty=0.1),
        "task.sensitive_only": True,
        "task.sensitive_pool": 64})        # two greedy answers per examined episode: 64 take ~12 min here
