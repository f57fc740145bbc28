"""Answer Agent, GRPO, CPU-small (the built-in default of ``python -m memr1_jax.train``).

SmolLM2-135M-Instruct with LoRA (r=16, alpha 32, lr 1e-3) on the top 8 of 30 blocks (the
frozen base stops backpropagation there, which roughly halves the update on CPU);
4 questions x G=8 samples per step, two optimiser steps per update (mini-batches of 16);
the compact distillation prompt with 4 memories per speaker (~350 prompt tokens), 24 new
tokens, rollouts at temperature 0.7 (at 1.0 the 135M model's samples are mostly gibberish
and every reward in a group is 0, so GRPO gets no signal). The sampler's tempered
log-probs serve as the old log-probs, so the update is one forward + backward.
Training draws from a fixed pool of 8 training questions (``data.train_pool``): each comes
back every other step, so within the CPU budget the reward curve shows learning rather than
which questions a step happened to draw (``--config.data.train_pool=0`` uses all of them).
Reward = EM + 1.0 * token-F1 (pure EM is almost always 0 for a 135M model; F1 shaping
gives a signal that can rise within the CPU budget). KL is off (rl.beta=0) to skip the
reference pass on CPU (the paper-scale configs keep it)."""

from memr1_jax.config import default_config


def get_config():
    return default_config()
