"""Paper-scale: memory manager trained with GRPO on qwen2.5-7b-instruct (see configs/_paper_common.py)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _paper_common import paper_config  # noqa: E402


def get_config():
    return paper_config("memory_manager_grpo_qwen_paper", "manager", "grpo", "qwen2.5-7b-instruct")
