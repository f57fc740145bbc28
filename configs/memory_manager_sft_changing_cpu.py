"""Memory Manager, supervised warm start on the changing-facts generator's gold operations
(SmolLM2-135M-Instruct, CPU), in the shipped pipeline's line format under its automaton.

Each step trains the gold completions of 8 manager episodes (a training question's evidence
session over an add-all snapshot of the sessions before it; ``task.manager_sft``): one row per
episode with advantage 1, so the policy-gradient loss has the cross-entropy's gradient.
Validation runs the greedy manager on 64 validation episodes and reports both the fraction of
facts decided as the gold operations (the score that keeps the best checkpoint) and the paper's
measure: the F1 of the shipped Answer Agent answering from the bank it left.

    python -m memr1_jax.train --config configs/memory_manager_sft_changing_cpu.py --config.run_dir=~/runs/mm-sft
    python -m memr1_jax.evaluate --data changing --split test --system memory-r1 --limit 0 \\
        --manager-model ~/runs/mm-sft/adapter
"""

import pathlib

from memr1_jax.agents.answer_agent import AnswerConfig
from memr1_jax.agents.memory_manager import ManagerConfig
from memr1_jax.config import load_config_file, override

SHIPPED_ANSWER_AGENT = "memr1_jax/trained/smollm2-135m-instruct/answer_agent"


def get_config():
    base = load_config_file(pathlib.Path(__file__).with_name("memory_manager_grpo_cpu.py"))
    return override(base, {
        "name": "memory_manager_sft_changing_cpu",
        "data.path": "changing",
        "data.train_pool": 0,
        "data.val_limit": 64,
        "model.name": "smollm2-135m-instruct",
        "rollout.questions_per_step": 8,
        "rollout.max_prompt_tokens": 1024,
        "rollout.old_logprobs_from_sampler": False,
        "rl.group_size": 1,
        "rl.beta": 0.0,
        "rl.temperature": 1.0,
        "rl.micro_batch_size": 8,
        "rl.learning_rate": 3e-4,
        "lora.top_layers": 8,
        "steps": 60,
        "eval_every": 20,
        "eval.after_training": False,      # the test comparison runs through memr1_jax.evaluate (above)
        # The reader of validation: the shipped Answer Agent in its own settings.
        "task.frozen_answer_model": SHIPPED_ANSWER_AGENT,
        "task.answer": AnswerConfig(k_per_speaker=5, max_new_tokens=24, prompt="compact", f1_weight=1.0),
        "task.manager": ManagerConfig(retrieve_k=5, max_facts_per_step=4, max_new_tokens=32, f1_weight=1.0,
                                      output="lines", constrained=True),
        "task.manager_sft": True})
