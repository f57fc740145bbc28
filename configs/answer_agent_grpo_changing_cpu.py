"""Answer Agent, GRPO, stage 2 of the paper on the changing-facts generator (SmolLM2-135M-Instruct, CPU):
the shipped Answer Agent trained further on banks a trained Memory Manager builds from the training
conversations, so that it learns to read managed banks (one current value, "moved from A to B"
memories) rather than add-all piles. The manager's settings are the shipped pipeline's evaluation
settings (line format under its automaton, 8 facts and 48 new tokens per step), so the agent trains
on banks built as they will be when it is evaluated.
    python -m memr1_jax.train --config configs/answer_agent_grpo_changing_cpu.py \\
        --config.task.bank_manager_model=$HOME/runs/mm-sft/adapter --config.run_dir=$HOME/runs/aa-changing
"""

from memr1_jax.agents.answer_agent import AnswerConfig
from memr1_jax.agents.memory_manager import ManagerConfig
from memr1_jax.config import default_config, override

SHIPPED_ANSWER_AGENT = "memr1_jax/trained/smollm2-135m-instruct/answer_agent"


def get_config():
    return override(default_config(), {
        "name": "answer_agent_grpo_changing_cpu",
        "model.name": SHIPPED_ANSWER_AGENT,
        "data.path": "changing",
        "data.train_pool": 0,
        "data.val_limit": 48,
        "steps": 20,
        "eval_every": 5,
        "rl.learning_rate": 5e-4,
        "eval.after_training": False,      # the test comparison runs through memr1_jax.evaluate
        "task.bank": "llm",
        "task.answer": AnswerConfig(k_per_speaker=5, max_new_tokens=24, prompt="compact", f1_weight=1.0),
        "task.manager": ManagerConfig(retrieve_k=5, max_facts_per_step=8, max_new_tokens=48,
                                      output="lines", constrained=True)})
