"""Paper-scale: the Memory Manager trained with GRPO on Qwen2.5-7B-Instruct (memr1_jax.config.paper_config), planned for v5p-16."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("memory_manager_grpo_qwen_paper", "manager", "grpo", "qwen2.5-7b-instruct", "v5p-16")
