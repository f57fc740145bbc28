"""Paper-scale: memory manager trained with GRPO on llama3.1-8b-instruct (see memr1_jax.config.paper_config)."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("memory_manager_grpo_llama_paper", "manager", "grpo", "llama3.1-8b-instruct")
