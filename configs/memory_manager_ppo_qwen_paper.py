"""Paper-scale: memory manager trained with PPO on qwen2.5-7b-instruct (see memr1_jax.config.paper_config)."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("memory_manager_ppo_qwen_paper", "manager", "ppo", "qwen2.5-7b-instruct")
