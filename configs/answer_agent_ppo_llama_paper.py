"""Paper-scale: answer agent trained with PPO on llama3.1-8b-instruct (see memr1_jax.config.paper_config)."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("answer_agent_ppo_llama_paper", "answer", "ppo", "llama3.1-8b-instruct")
