"""Memory Manager, PPO on the changing-facts generator (SmolLM2-135M-Instruct, CPU): the GRPO config
(``memory_manager_grpo_changing_cpu.py``: gold reward, 4 questions x 8 samples at T=1.0, lr 1e-4,
40 steps) with a critic (a copy of the backbone with a zero value head, LoRA as the policy) and GAE
advantages instead of group-relative ones, so the two algorithms' curves compare on the same data.
    python -m memr1_jax.train --config configs/memory_manager_ppo_changing_cpu.py --config.run_dir=~/runs/mm-ppo-scratch
"""

import pathlib

from memr1_jax.config import load_config_file, override


def get_config():
    grpo = load_config_file(pathlib.Path(__file__).with_name("memory_manager_grpo_changing_cpu.py"))
    return override(grpo, {"name": "memory_manager_ppo_changing_cpu", "rl.algorithm": "ppo",
                           "rl.critic_learning_rate": 1e-4})
