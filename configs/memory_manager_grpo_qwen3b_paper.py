"""Paper-scale: the Memory Manager trained with GRPO on Qwen2.5-3B-Instruct (memr1_jax.config.paper_config), planned for v5e-8."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("memory_manager_grpo_qwen3b_paper", "manager", "grpo", "qwen2.5-3b-instruct", "v5e-8", gen_batch_size=16)
