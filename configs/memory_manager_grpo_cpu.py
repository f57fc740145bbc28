"""Memory Manager, GRPO, CPU-small. Episodes: the evidence session of a training question
(the snapshot bank built add-all from the preceding sessions, that session's facts of the
evidence speaker); reward = EM (+ 1.0 * F1 shaping) of the frozen base Answer Agent
answering from the bank the sampled operations produce."""

from memr1_jax.train import default_config


def get_config():
    c = default_config()
    c.name = "memory_manager_grpo_cpu"
    c.agent = "manager"
    c.questions_per_step = 2     # manager rollouts also run the frozen Answer Agent per sample
    c.group = 4
    c.train_pool = 0
    c.val_limit = 8
    c.rl.mini_batch_size = 0
    c.rl.micro_batch_size = 4
    c.rl.learning_rate = 3e-4
    c.steps = 6
    c.eval_every = 3
    c.test_limit = 8
    c.manager.max_new_tokens = 64
    c.manager.format_penalty = 0.0
    return c
