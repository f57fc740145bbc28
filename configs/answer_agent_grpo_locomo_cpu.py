"""Answer Agent, GRPO, on LoCoMo with SmolLM2-135M-Instruct on CPU (the #6 measurement).

Trains on conversation 26 (the paper's 152 training questions), selects the checkpoint on
the validation conversation 30, then evaluates the selected weights and the untrained
model on the first ``eval.limit`` test questions with the same banks (add-all: every
LoCoMo observation is a memory) and the same compact distillation prompt. Needs the
LoCoMo files:

    python -m memr1_jax.train --config configs/answer_agent_grpo_locomo_cpu.py \\
        --config.data.path=../shared/data/locomo10
"""

from memr1_jax.config import default_config, override


def get_config():
    return override(default_config(), {
        "name": "answer_agent_grpo_locomo_cpu",
        "data.path": "locomo",          # override with the LoCoMo path
        "data.train_pool": 0,           # all 152 training questions
        "data.val_limit": 24,
        "steps": 10,
        "eval_every": 5,
        "eval.limit": 300,
        "task.answer.k_per_speaker": 5})
