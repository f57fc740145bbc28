"""Memory Manager, GRPO, CPU-small. Episodes: the evidence session of a training question
(the snapshot bank built add-all from the preceding sessions, that session's facts of the
evidence speaker); reward = EM (+ 1.0 * F1 shaping) of the frozen base Answer Agent
(``task.answer``: the full distillation prompt, 3 memories per speaker) answering from the
bank the sampled operations produce."""

from memr1_jax.agents.answer_agent import AnswerConfig
from memr1_jax.config import default_config, override


def get_config():
    return override(default_config(), {
        "name": "memory_manager_grpo_cpu",
        "task.agent": "manager",
        "task.answer": AnswerConfig(k_per_speaker=3, max_new_tokens=24, prompt="full"),
        "task.manager.max_new_tokens": 64,
        "rollout.questions_per_step": 2,   # manager rollouts also run the frozen Answer Agent per sample
        "rl.group_size": 4,
        "rl.mini_batch_size": None,        # one optimiser step per update
        "rl.micro_batch_size": 4,
        "rl.learning_rate": 3e-4,
        "data.train_pool": 0,
        "data.val_limit": 8,
        "steps": 6,
        "eval_every": 3,
        "eval.limit": 8})
