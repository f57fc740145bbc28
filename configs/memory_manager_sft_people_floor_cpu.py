"""Memory Manager, supervised warm start on the people variant one fact at a time behind a
relatedness floor: the shipped manager's run (SmolLM2-135M-Instruct, CPU, line format under its
automaton).

Each manager step holds one fact (``task.manager.max_facts_per_step=1``) and shows only the
memories whose MiniLM cosine to it is at least 0.5 (``task.manager.min_score``); a step that shows
nothing is ADDed by rule and left out of training. What is left is the decision a memory layer has
to make: is the memory shown the fact's own slot (UPDATE it, DELETE it on "forget"), or a near
one (a namesake, another slot; ADD)? 972 such steps, 45% ADD. With four facts a step and no floor
(``memory_manager_sft_people_cpu.py``) the same 135M model learnt label frequencies instead.
Inference uses a floor of 0.65 (the pipeline's setting), chosen on the validation conversations.
The shipped manager was trained on the generator of 970ffeb, whose changes alone carried a month,
and learnt that cue; on the varied phrasing since (968 steps) this recipe learns no comparison
(experiments/manager-phrasing-2026-12-07).

    python -m memr1_jax.train --config configs/memory_manager_sft_people_floor_cpu.py --config.run_dir=~/runs/mm-people-one
    python -m memr1_jax.evaluate --data changing --split test --system memory-r1 --limit 0 \\
        --manager-model ~/runs/mm-people-one/adapter --config.task.manager.min_score=0.65 \\
        --config.task.manager.max_facts_per_step=1
"""

import dataclasses
import pathlib

from memr1_jax.config import load_config_file, override


def get_config():
    base = load_config_file(pathlib.Path(__file__).with_name("memory_manager_sft_people_cpu.py"))
    return override(base, {
        "name": "memory_manager_sft_people_floor_cpu",
        "task.manager": dataclasses.replace(base.task.manager, max_facts_per_step=1, min_score=0.5)})
