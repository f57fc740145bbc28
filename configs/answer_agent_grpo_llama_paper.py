"""Paper-scale: the Answer Agent trained with GRPO on Llama-3.1-8B-Instruct (memr1_jax.config.paper_config), planned for 8xH100-80GB."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("answer_agent_grpo_llama_paper", "answer", "grpo", "llama3.1-8b-instruct", "8xH100-80GB")
