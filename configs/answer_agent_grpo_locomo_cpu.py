"""Answer Agent, GRPO, on LoCoMo with SmolLM2-135M-Instruct on CPU (the #6 measurement).

Trains on conversation 26 (the paper's 152 training questions), selects the checkpoint on
the validation conversation 30, then evaluates the selected weights and the untrained
model on the first ``test_limit`` test questions with the same banks (add-all: every
LoCoMo observation is a memory) and the same compact distillation prompt. Needs the
LoCoMo files:

    python -m memr1_jax.train --config configs/answer_agent_grpo_locomo_cpu.py \\
        --config.data=../shared/data/locomo10
"""

from memr1_jax.train import default_config


def get_config():
    c = default_config()
    c.name = "answer_agent_grpo_locomo_cpu"
    c.data = "locomo"              # override with the LoCoMo path
    c.train_pool = 0               # all 152 training questions
    c.steps = 10
    c.eval_every = 5
    c.val_limit = 24
    c.test_limit = 300
    c.answer.k_per_speaker = 5
    return c
