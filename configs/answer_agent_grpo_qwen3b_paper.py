"""Paper-scale: the Answer Agent trained with GRPO on Qwen2.5-3B-Instruct (memr1_jax.config.paper_config), planned for v5e-8."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("answer_agent_grpo_qwen3b_paper", "answer", "grpo", "qwen2.5-3b-instruct", "v5e-8", gen_batch_size=16)
