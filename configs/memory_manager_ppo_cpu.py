"""Memory Manager, PPO, CPU-small (see memory_manager_grpo_cpu)."""

from memr1_jax.train import default_config


def get_config():
    c = default_config()
    c.name = "memory_manager_ppo_cpu"
    c.agent = "manager"
    c.steps = 6
    c.eval_every = 3
    c.test_limit = 8
    c.rl.algorithm = "ppo"
    c.rl.critic_learning_rate = 1e-4
    return c
