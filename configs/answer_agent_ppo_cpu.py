"""Answer Agent, PPO, CPU-small: as answer_agent_grpo_cpu with a critic (a copy of the
backbone with a zero value head), GAE (gamma 1, lambda 0.95) and whitened advantages.
G=4 samples per question are still drawn (a larger batch per prompt), but advantages
come from the critic, not the group."""

from memr1_jax.train import default_config


def get_config():
    c = default_config()
    c.name = "answer_agent_ppo_cpu"
    c.rl.algorithm = "ppo"
    c.rl.critic_learning_rate = 1e-4
    return c
