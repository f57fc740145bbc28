"""Memory Manager, PPO, CPU-small: memory_manager_grpo_cpu with a critic (a copy of the
backbone with a zero value head) and GAE instead of group-relative advantages."""

import pathlib

from memr1_jax.config import load_config_file, override


def get_config():
    base = load_config_file(pathlib.Path(__file__).with_name("memory_manager_grpo_cpu.py"))
    return override(base, {"name": "memory_manager_ppo_cpu", "rl.algorithm": "ppo", "rl.critic_learning_rate": 1e-4})
