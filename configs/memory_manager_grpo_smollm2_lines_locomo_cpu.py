"""Memory Manager, GRPO, on LoCoMo with SmolLM2-135M-Instruct on CPU, in the compact line format
(``task.manager.output="lines"``: one ``<n>: ADD | UPDATE <id> | DELETE <id> | NONE`` line per
fact) sampled under its regex automaton (``task.manager.constrained``), so every rollout is a
valid decision for every fact: the JSON format gave this model no usable operation (README).

Episodes and reward as ``memory_manager_grpo_qwen_locomo_cpu.py``: the evidence session of a
conversation-26 question over an add-all snapshot of the sessions before it, reward EM + F1 of the
frozen untrained backbone answering with the paper's distillation prompt (10 memories per
speaker), only the episodes whose reward depends on the bank (``task.sensitive_only``, a random
64 examined). Steps hold the 4-fact chunk with the evidence fact; G=8 at T=1.0, 2 questions per
step. Constrained sampling trains the unmasked log-probs of the sampled tokens, so the update
scores the old policy itself (``rollout.old_logprobs_from_sampler=false``, checked by the config).

    python -m memr1_jax.train --config configs/memory_manager_grpo_smollm2_lines_locomo_cpu.py \\
        --config.data.path=../shared/data/locomo10
    python -m memr1_jax.evaluate --data ../shared/data/locomo10 --limit 40 \\
        --config.task.manager.output=lines --config.task.manager.constrained=true \\
        --manager-max-new-tokens 48 --manager-model runs/train/<run>/hf
"""

import pathlib

from memr1_jax.agents.answer_agent import AnswerConfig
from memr1_jax.agents.memory_manager import ManagerConfig
from memr1_jax.config import load_config_file, override


def get_config():
    base = load_config_file(pathlib.Path(__file__).with_name("memory_manager_grpo_cpu.py"))
    return override(base, {
        "name": "memory_manager_grpo_smollm2_lines_locomo_cpu",
        "data.path": "locomo",             # override with the LoCoMo path
        "data.val_limit": 16,
        "model.name": "smollm2-135m-instruct",
        "rollout.questions_per_step": 2,
        "rollout.max_prompt_tokens": 1024,
        "rollout.old_logprobs_from_sampler": False,
        "rl.group_size": 8,
        "rl.temperature": 1.0,
        "rl.micro_batch_size": 8,
        "rl.learning_rate": 3e-4,
        "lora.top_layers": 8,
        "steps": 20,
        "eval_every": 5,
        "eval.after_training": False,      # the test comparison runs through memr1_jax.evaluate (above)
        "task.answer": AnswerConfig(k_per_speaker=10, max_new_tokens=64, prompt="full"),
        "task.manager": ManagerConfig(retrieve_k=5, max_facts_per_step=4, max_new_tokens=32, f1_weight=1.0,
                                      output="lines", constrained=True),
        "task.sensitive_only": True,
        "task.sensitive_pool": 64})
