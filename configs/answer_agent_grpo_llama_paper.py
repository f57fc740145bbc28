"""Paper-scale: answer agent trained with GRPO on llama3.1-8b-instruct (see memr1_jax.config.paper_config)."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("answer_agent_grpo_llama_paper", "answer", "grpo", "llama3.1-8b-instruct")
