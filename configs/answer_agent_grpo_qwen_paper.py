"""Paper-scale: answer agent trained with GRPO on qwen2.5-7b-instruct (see memr1_jax.config.paper_config)."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("answer_agent_grpo_qwen_paper", "answer", "grpo", "qwen2.5-7b-instruct")
