"""Memory Manager, PPO, CPU-small: memory_manager_grpo_cpu with a critic (a copy of the
backbone with a zero value head) and GAE instead of group-relative advantages."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import memory_manager_grpo_cpu  # noqa: E402


def get_config():
    c = memory_manager_grpo_cpu.get_config()
    c.name = "memory_manager_ppo_cpu"
    c.rl.algorithm = "ppo"
    c.rl.critic_learning_rate = 1e-4
    return c
