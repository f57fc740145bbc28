"""Memory Manager, PPO, CPU-small (see memory_manager_grpo_cpu)."""

from memr1_jax.train import default_config


def get_config():
    c = default_config()
    c.name = "memory_manager_ppo_cpu"
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
    c.rl.algorithm = "ppo"
    c.rl.critic_learning_rate = 1e-4
    return c
