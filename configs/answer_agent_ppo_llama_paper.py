"""Paper-scale: the Answer Agent trained with PPO (an 8B critic) on Llama-3.1-8B-Instruct (memr1_jax.config.paper_config), planned for 8xH100-80GB."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("answer_agent_ppo_llama_paper", "answer", "ppo", "llama3.1-8b-instruct", "8xH100-80GB")
