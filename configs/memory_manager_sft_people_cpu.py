"""Memory Manager, supervised warm start on every step of the changing-facts generator's people
variant (``data.path="changing-people"``: slots said one or two at a time, relatives who move,
near-namesakes who are two people, "forget my code"), SmolLM2-135M-Instruct on CPU, in the shipped
pipeline's line format under its automaton.

The variant is what a memory service meets: early steps see a memory or two and an unrelated
memory is not the one to UPDATE, which the plain generator never shows (every step after its
first session shows the speaker's four slots). Each step trains 8 gold completions of manager
steps over add-all snapshots (``task.manager_items="steps"``); validation reports the gold
agreement (which keeps the best checkpoint) and the shipped Answer Agent's F1 on the banks left.

    python -m memr1_jax.train --config configs/memory_manager_sft_people_cpu.py --config.run_dir=~/runs/mm-people
    python -m memr1_jax.evaluate --data changing-people --split test --system memory-r1 --limit 0 \\
        --manager-model ~/runs/mm-people/adapter
"""

import pathlib

from memr1_jax.config import load_config_file, override


def get_config():
    base = load_config_file(pathlib.Path(__file__).with_name("memory_manager_sft_changing_cpu.py"))
    return override(base, {
        "name": "memory_manager_sft_people_cpu",
        "data.path": "changing-people",
        "task.manager_items": "steps",
        "steps": 120,
        "eval_every": 40})
