"""Paper-scale: the Answer Agent trained with PPO (a 7B critic) on Qwen2.5-7B-Instruct (memr1_jax.config.paper_config), planned for v4-32."""

from memr1_jax.config import paper_config


def get_config():
    return paper_config("answer_agent_ppo_qwen_paper", "answer", "ppo", "qwen2.5-7b-instruct", "v4-32")
