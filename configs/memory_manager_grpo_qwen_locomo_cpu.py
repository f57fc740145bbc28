"""Memory Manager, GRPO, on LoCoMo with Qwen2.5-Coder-0.5B-Instruct on CPU. SmolLM2-135M
cannot act as manager: it emits no usable operation list with any prompt tried (README), so
the smallest model that writes the JSON operations is used. Training keeps the episodes whose
frozen-agent reward depends on the bank (``manager.sensitive_only``; 32 of a random 64 of the
149): on the others every completion earns the same reward. One question x G=8 per step: with
2 x G=4 (README, run 2) the policy drifted to all-NONE. This is the measured run of the README.

Episodes come from conversation 26 (the evidence session of each training question over an
add-all snapshot of the sessions before it); the frozen Answer Agent is the untrained
backbone with the paper's distillation prompt, exactly as ``python -m memr1_jax.evaluate``
runs it. Training steps hold 2 facts (the chunk with the evidence fact) and 96 new tokens:
rows of 1,120 tokens instead of 1,696 with the evaluation's 8-fact steps (an 8 x 1696-token
update took 490 s here). The validation conversation 30 selects the checkpoint, exported to ``hf/``; compare it with the
untrained (Mem0-style) manager by building the test banks with each:

    python -m memr1_jax.train --config configs/memory_manager_grpo_qwen_locomo_cpu.py \\
        --config.data=../shared/data/locomo10
    python -m memr1_jax.evaluate --data ../shared/data/locomo10 --split test --limit 200 \\
        --model qwen2.5-coder-0.5b-instruct --manager-model runs/train/<run>/hf
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import memory_manager_grpo_cpu  # noqa: E402


def get_config():
    c = memory_manager_grpo_cpu.get_config()
    c.name = "memory_manager_grpo_qwen_locomo_cpu"
    c.data = "locomo"              # override with the LoCoMo path
    c.model = "qwen2.5-coder-0.5b-instruct"
    c.questions_per_step = 1
    c.group = 8
    c.temperature = 1.0
    c.steps = 20
    c.eval_every = 10
    c.val_limit = 16
    c.test_limit = 0               # the test comparison runs through memr1_jax.evaluate (above)
    c.max_prompt_tokens = 1024
    c.remat = True                 # without it the update of 8 x 1440 tokens needs > 21 GiB (OOM-killed)
    c.rl.micro_batch_size = 2
    c.rl.learning_rate = 3e-4
    c.rl.lora_top_layers = 8
    c.manager.max_facts_per_step = 2
    c.manager.max_new_tokens = 96
    c.manager.answer_k_per_speaker = 10
    c.manager.answer_max_new_tokens = 64
    c.manager.format_penalty = 0.1
    c.manager.sensitive_only = True
    c.manager.sensitive_pool = 64  # two greedy answers per examined episode: 64 take ~12 min here
    return c
