"""Paper-scale: answer agent trained with PPO on llama3.1-8b-instruct (see configs/_paper_common.py)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _paper_common import paper_config  # noqa: E402


def get_config():
    return paper_config("answer_agent_ppo_llama_paper", "answer", "ppo", "llama3.1-8b-instruct")
