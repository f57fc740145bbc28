"""Answer Agent, PPO, CPU-small: as answer_agent_grpo_cpu with a critic (a copy of the
backbone with a zero value head), GAE (gamma 1, lambda 0.95) and whitened advantages.
G=8 samples per question are still drawn (a larger batch per prompt), but advantages
come from the critic, not the group."""

from memr1_jax.config import default_config, override


def get_config():
    return override(default_config(), {"name": "answer_agent_ppo_cpu", "rl.algorithm": "ppo",
                                       "rl.critic_learning_rate": 1e-4})
