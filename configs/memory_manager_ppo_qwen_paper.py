"""Paper-scale: the Memory Manager trained with PPO (a 7B critic) on Qwen2.5-7B-Instruct (memr1_jax.config.paper_config), planned for v4-32."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("memory_manager_ppo_qwen_paper", "manager", "ppo", "qwen2.5-7b-instruct", "v4-32")
