"""RL math for memr1-jax: advantages, policy/value losses, KL estimators, log-probs.

Pure jittable functions over `[B, T]` arrays plus a response-token mask; losses come back as
`Weighted(sum, count)` so micro-batches accumulate exactly. See the module docstrings.
"""

from memr1_jax.rl.advantages import (
    GROUP_ESTIMATORS,
    broadcast_sequence_advantages,
    gae_advantages,
    group_advantages,
    last_valid_index,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    place_outcome_reward,
)
from memr1_jax.rl.logprobs import chunked_token_logprobs, entropy_from_logits, token_logprobs
from memr1_jax.rl.losses import (
    AGG_MODES,
    KL_KINDS,
    Weighted,
    accumulate,
    aggregate,
    finalize,
    grpo_loss,
    kl_penalty,
    mean_entropy,
    policy_loss,
    ppo_clip_per_token,
    ppo_policy_loss,
    token_mean,
    value_loss,
    value_loss_per_token,
)

__all__ = [
    "AGG_MODES",
    "GROUP_ESTIMATORS",
    "KL_KINDS",
    "Weighted",
    "accumulate",
    "aggregate",
    "broadcast_sequence_advantages",
    "chunked_token_logprobs",
    "entropy_from_logits",
    "finalize",
    "gae_advantages",
    "group_advantages",
    "grpo_loss",
    "kl_penalty",
    "last_valid_index",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "mean_entropy",
    "place_outcome_reward",
    "policy_loss",
    "ppo_clip_per_token",
    "ppo_policy_loss",
    "token_logprobs",
    "token_mean",
    "value_loss",
    "value_loss_per_token",
]
