"""The staged Memory-R1 pipeline on LoCoMo with SmolLM2-135M-Instruct on CPU
(``python -m memr1_jax.pipeline``): stage 1 the Memory Manager in the line format
(``memory_manager_grpo_smollm2_lines_locomo_cpu.py``, 12 steps), stage 2 the Answer Agent with
GRPO and KL beta 0.04 (``answer_agent_grpo_locomo_cpu.py``) on the banks the stage-1 manager
builds over conversation 26, then the trained pipeline against base, mem0, rag and fullctx on
the first 300 test questions. About 2-3 hours on 2 cores; needs the LoCoMo files:

    python -m memr1_jax.pipeline --config configs/pipelines/smollm2_locomo_cpu.py --config.data.path=../shared/data/locomo10
"""

import pathlib

from memr1_jax.config import evaluation_defaults, load_config_file, override

CONFIGS = pathlib.Path(__file__).parents[1]


def get_stages():
    manager = override(load_config_file(CONFIGS / "memory_manager_grpo_smollm2_lines_locomo_cpu.py"), {
        "steps": 12, "eval_every": 6, "task.sensitive_pool": 32})
    answer = override(load_config_file(CONFIGS / "answer_agent_grpo_locomo_cpu.py"), {
        "name": "answer_agent_grpo_kl_on_manager_banks", "rl.beta": 0.04})
    evaluation = override(evaluation_defaults(), {
        "data.path": "locomo",   # override with the LoCoMo path
        "eval.system": "memory-r1,base,mem0,rag,fullctx", "eval.limit": 300})
    return {"manager": manager, "answer": answer, "evaluation": evaluation}
