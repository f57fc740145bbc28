"""Memory Manager, GRPO on the changing-facts generator (SmolLM2-135M-Instruct, CPU), from the
untrained model or after the supervised warm start (``memory_manager_sft_changing_cpu.py``: pass
its adapter as the model, as below).

Reward ``task.manager_reward``: "gold" (default here), the fraction of the step's facts decided as
the generator's gold operations, dense and free of the reader; "answer" is the paper's, EM + F1
of the frozen Answer Agent (here the shipped one) answering the episode's question from the bank.
G=8 at T=1.0, 4 questions per step, line format under its automaton (the update re-scores the
old policy itself, as the config checks).

    python -m memr1_jax.train --config configs/memory_manager_grpo_changing_cpu.py --config.run_dir=~/runs/mm-grpo-scratch
    python -m memr1_jax.train --config configs/memory_manager_grpo_changing_cpu.py \\
        --config.model.name=~/runs/mm-sft/adapter --config.steps=30 --config.run_dir=~/runs/mm-grpo-sft
"""

import pathlib

from memr1_jax.config import load_config_file, override


def get_config():
    sft = load_config_file(pathlib.Path(__file__).with_name("memory_manager_sft_changing_cpu.py"))
    return override(sft, {
        "name": "memory_manager_grpo_changing_cpu",
        "task.manager_sft": False,
        "task.manager_reward": "gold",
        "rollout.questions_per_step": 4,
        "rl.group_size": 8,
        "rl.learning_rate": 1e-4,
        "steps": 40,
        "eval_every": 10})
