"""The tiny run: a random-init 2-layer model (``tiny-llama``), the hashing test encoder and
the embedded data; 4 GRPO steps of the Answer Agent in well under a minute on 2 CPU cores.
It exercises every part of the trainer (rollouts, update, validation, checkpoints, resume,
export) and is what the tests start from; its rewards mean nothing."""

from memr1_jax.agents.answer_agent import AnswerConfig
from memr1_jax.agents.memory_manager import ManagerConfig
from memr1_jax.config import default_config, override


def get_config():
    return override(default_config(), {
        "name": "tiny_cpu",
        "model.name": "tiny-llama",
        "model.encoder": "hashing",
        "data.val_limit": 2,
        "rollout.max_prompt_tokens": 96,
        "rollout.questions_per_step": 2,
        "rl.group_size": 4,
        "rl.mini_batch_size": 4,
        "rl.micro_batch_size": 4,
        # The random model's answers score 0, so GRPO's advantages are 0: the entropy bonus keeps
        # a gradient flowing, so the weights (and the logged metrics) change at every step.
        "rl.entropy_coef": 0.01,
        "task.answer": AnswerConfig(k_per_speaker=2, max_new_tokens=6, f1_weight=1.0, prompt="compact"),
        "task.manager": ManagerConfig(retrieve_k=3, max_facts_per_step=4, max_new_tokens=8, f1_weight=1.0),
        "steps": 4,
        "eval_every": 2,
        "eval.limit": 2,
        "eval.after_training": False})
