"""Shared paper-scale settings (Memory-R1, arXiv 2508.19828): batch 128, actor lr 1e-6,
critic lr 1e-5, max prompt 4096 / response 2048, temperature 1.0 for rollouts, greedy
evaluation, 30 memories per speaker, full fine-tuning with a KL-regularised update.
Needs accelerators and the HF weights (MEMR1_MODEL_<PRESET> or huggingface_hub)."""

from memr1_jax.train import default_config


def paper_config(name: str, agent: str, algorithm: str, model: str):
    c = default_config()
    c.name = name
    c.agent = agent
    c.model = model
    c.data = "locomo"            # override: --config.data=/path/to/locomo10.json
    c.steps = 200
    c.train_pool = 0             # every training question
    c.group = 8 if algorithm == "grpo" else 1
    c.questions_per_step = 128 // c.group   # 128 rollouts per update
    c.temperature = 1.0
    c.gen_batch_size = 64
    c.max_prompt_tokens = 4096
    c.eval_every = 20
    c.val_limit = 200
    c.test_limit = 0
    c.final_eval_base = True
    c.save_every = 20
    c.answer.k_per_speaker = 30
    c.answer.max_new_tokens = 2048
    c.answer.f1_weight = 0.0     # the paper's pure EM reward
    c.answer.prompt = "full"     # the paper's Answer Agent prompt
    c.manager.max_new_tokens = 2048
    c.manager.max_facts_per_step = 8
    c.manager.f1_weight = 0.0
    c.manager.answer_k_per_speaker = 30
    c.manager.answer_max_new_tokens = 256
    c.rl.algorithm = algorithm
    c.rl.learning_rate = 1e-6
    c.rl.critic_learning_rate = 1e-5
    c.rl.beta = 0.001 if algorithm == "grpo" else 0.0
    c.rl.lora_rank = 0           # full fine-tuning
    c.rl.mini_batch_size = 32
    c.rl.micro_batch_size = 4
    c.rl.warmup_steps = 0
    c.rl.old_logprobs_from_sampler = False
    return c
