"""Per-token log-probabilities and entropies of a policy, always computed in float32.

`token_logprobs` works on full `[B, T, V]` logits. `chunked_token_logprobs` takes the final
hidden states `[B, T, D]` and the LM head as a function, and projects `chunk_size` positions
at a time inside a `lax.scan` whose body is rematerialised, so neither the forward nor the
backward pass ever holds more than one `[B, chunk, V]` logits block (the tunix
`compute_chunked_logps` recipe). Alignment (logits at t score the token at t+1) is the
caller's job: pass the hidden states/logits that predict `targets`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


def _scaled_f32(logits: jax.Array, temperature: float) -> jax.Array:
  logits = jnp.asarray(logits).astype(jnp.float32)
  if isinstance(temperature, (int, float)) and temperature == 1.0:
    return logits
  return logits / temperature


def _logp_and_entropy(logits32: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  log_probs = jax.nn.log_softmax(logits32, axis=-1)
  logp = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
  return logp, entropy


def _check_targets(logits_shape, targets: jax.Array) -> jax.Array:
  targets = jnp.asarray(targets)
  if targets.shape != tuple(logits_shape[:-1]):
    raise ValueError(f"targets have shape {targets.shape}, expected {tuple(logits_shape[:-1])}")
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise ValueError(f"targets must be integer token ids, got dtype {targets.dtype}")
  return targets


def entropy_from_logits(logits: jax.Array, *, temperature: float = 1.0) -> jax.Array:
  """Entropy (nats) of softmax(logits / temperature) over the last axis, in float32."""
  log_probs = jax.nn.log_softmax(_scaled_f32(logits, temperature), axis=-1)
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def token_logprobs(
    logits: jax.Array,
    targets: jax.Array,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """log softmax(logits / temperature)[targets] in float32, shape `logits.shape[:-1]`.

  `temperature` should be the sampling temperature so old/new/ref log-probs describe the
  distribution the tokens were drawn from. With `return_entropy` also returns the per-token
  entropy of that distribution.
  """
  targets = _check_targets(jnp.shape(logits), targets)
  logp, entropy = _logp_and_entropy(_scaled_f32(logits, temperature), targets)
  return (logp, entropy) if return_entropy else logp


def chunked_token_logprobs(
    hidden: jax.Array,
    targets: jax.Array,
    head_fn: Callable[[jax.Array], jax.Array],
    *,
    chunk_size: int,
    temperature: float = 1.0,
    return_entropy: bool = False,
    remat: bool = True,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """`token_logprobs(head_fn(hidden), targets)` without materialising `[B, T, V]` logits.

  hidden: `[B, T, D]` final hidden states; targets: `[B, T]` token ids;
  head_fn: `[B, C, D] -> [B, C, V]` (closing over its parameters is fine: gradients flow to
  them through the scan). T need not divide by `chunk_size`: the tail is zero-padded and the
  padded positions are sliced off (they get zero gradient). `chunk_size` and `head_fn` must
  be static under `jit`. With `remat` (default) each chunk's logits are recomputed in the
  backward pass instead of being stored.
  """
  hidden = jnp.asarray(hidden)
  targets = jnp.asarray(targets)
  if hidden.ndim != 3:
    raise ValueError(f"hidden must be [B, T, D], got shape {hidden.shape}")
  targets = _check_targets(hidden.shape, targets)
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
  b, t, d = hidden.shape
  c = min(chunk_size, t) if t > 0 else 1
  n_chunks = -(-t // c)
  pad = n_chunks * c - t
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  # Time-major chunks: [n_chunks, B, C, ...].
  h_chunks = hidden.reshape(b, n_chunks, c, d).swapaxes(0, 1)
  t_chunks = targets.reshape(b, n_chunks, c).swapaxes(0, 1)

  def body(carry, xs):
    h, tgt = xs
    logits32 = _scaled_f32(head_fn(h), temperature)
    if return_entropy:
      return carry, _logp_and_entropy(logits32, tgt)
    logp = jnp.take_along_axis(logits32, tgt[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return carry, logp - jax.nn.logsumexp(logits32, axis=-1)

  if remat:
    body = jax.checkpoint(body)
  _, out = lax.scan(body, None, (h_chunks, t_chunks))
  unchunk = lambda x: x.swapaxes(0, 1).reshape(b, n_chunks * c)[:, :t]
  if not return_entropy:
    return unchunk(out)
  return unchunk(out[0]), unchunk(out[1])
