"""Text in, text out: chat-formatted batched generation on top of the sampler.

Everything the agents, baselines and the judge need from an LLM: render a
chat prompt, tokenize, generate in length-sorted batches (so prompts of
similar length share a compiled bucket), decode. Params stay explicit so an
RL loop can pass updated weights without rebuilding anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from memr1_jax.models.config import ModelConfig
from memr1_jax.sampling.sampler import SampleOutput, SamplingConfig, generate
from memr1_jax.text.chat_templates import render_chat


@dataclasses.dataclass(frozen=True)
class Generation:
    """One completion with the token-level data RL needs."""
    text: str
    prompt_ids: list[int]
    completion_ids: list[int]       # includes the stop token when the row stopped
    logprobs: np.ndarray            # float32 [len(completion_ids)], under the unscaled model
    stopped: bool
    # Under the distribution actually sampled, softmax(logits / T), when the sampling config
    # asks for them (SamplingConfig.scaled_logprobs): the behaviour policy's log-probs for RL.
    scaled_logprobs: np.ndarray | None = None


@dataclasses.dataclass
class ChatLLM:
    cfg: ModelConfig
    params: Any
    tokenizer: Any
    batch_size: int = 8
    max_prompt_tokens: int | None = None   # None: cfg.max_seq_len - max_new_tokens
    cache_dtype: str | None = None
    mesh: Any = None                       # a jax Mesh: params placed by ``rules``, batches split
    rules: Any = None
    speculative_tokens: int = 0            # greedy single-sample calls: prompt-lookup draft length

    @classmethod
    def from_registry(cls, name: str, mesh=None, rules=None, dtype: str | None = None, **kw) -> "ChatLLM":
        """Loads a registry preset or model folder; with a mesh its params are sharded by ``rules``;
        ``dtype`` sets the compute and parameter dtype (e.g. "bfloat16")."""
        from memr1_jax.models.registry import load_model
        m = load_model(name, dtype=dtype)
        cfg, params = m.cfg, m.params
        if dtype is not None:
            cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
        if mesh is not None:
            from memr1_jax.parallel.mesh import shard_params
            from memr1_jax.parallel.rules import DEFAULT_RULES
            rules = DEFAULT_RULES if rules is None else rules
            params = shard_params(cfg, params, mesh, rules)
        return cls(cfg=cfg, params=params, tokenizer=m.tokenizer, mesh=mesh, rules=rules, **kw)

    # ------------------------------------------------------------------ prompts
    def chat_ids(self, user: str, system: str | None = None, raw: bool = False) -> list[int]:
        """Token ids of a one-turn chat prompt (or of the raw text with raw=True). The texts
        hold data and memories, so special-token spellings in them stay plain text
        (``Tokenizer.as_plain_text``): only the chat template makes control tokens."""
        plain = self.tokenizer.as_plain_text
        if raw:
            return self.tokenizer.encode(plain(user), add_bos=self.tokenizer.family == "gemma")
        messages = ([{"role": "system", "content": plain(system)}] if system else []) + [
            {"role": "user", "content": plain(user)}]
        text = render_chat(messages, self.tokenizer, add_generation_prompt=True)
        return self.tokenizer.encode(text)

    # --------------------------------------------------------------- generation
    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int = 64,
                     sampling: SamplingConfig = SamplingConfig(), rng=None, num_samples: int = 1,
                     params=None, progress: Callable[[int], None] | None = None,
                     constraints=None, timings: dict | None = None) -> list[Generation]:
        """Generate for token-id prompts; returns prompt-major generations
        (index i * num_samples + g). Prompts longer than the budget keep their tail.
        ``constraints``: one TokenAutomaton for all prompts or one (or None) per prompt;
        ``timings``: see ``sampler.generate``."""
        params = self.params if params is None else params
        limit = self.max_prompt_tokens or (self.cfg.max_seq_len - max_new_tokens)
        prompts = [list(p)[-limit:] for p in prompt_ids]
        rng = jax.random.PRNGKey(0) if rng is None else rng
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Generation | None] = [None] * (len(prompts) * num_samples)
        stop = sorted(self.tokenizer.stop_ids)
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        spec = self.speculative_tokens if sampling.greedy and num_samples == 1 else 0
        per = (list(constraints) if isinstance(constraints, (list, tuple)) else [constraints] * len(prompts))
        if len(per) != len(prompts):
            raise ValueError(f"generate_ids: expected one constraint per prompt ({len(prompts)}), got {len(per)}")
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            rng, key = jax.random.split(rng)
            res: SampleOutput = generate(
                self.cfg, params, [prompts[i] for i in idx], sampling, key, stop_ids=stop,
                max_new_tokens=max_new_tokens, num_samples=num_samples, pad_id=pad,
                cache_dtype=self.cache_dtype, mesh=self.mesh, rules=self.rules,
                constraints=None if constraints is None else [per[i] for i in idx], timings=timings,
                speculative=spec)
            for j, i in enumerate(idx):
                for g in range(num_samples):
                    r = j * num_samples + g
                    n = int(res.lengths[r])
                    ids = res.tokens[r, :n].tolist()
                    body = ids[:-1] if res.stopped[r] else ids
                    out[i * num_samples + g] = Generation(
                        text=self.tokenizer.decode(body, skip_special=True),
                        prompt_ids=prompts[i], completion_ids=ids,
                        logprobs=np.asarray(res.logprobs[r, :n]), stopped=bool(res.stopped[r]),
                        scaled_logprobs=(None if res.scaled_logprobs is None
                                         else np.asarray(res.scaled_logprobs[r, :n])))
            if progress:
                progress(len(idx))
        return out  # type: ignore[return-value]

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64, system: str | None = None,
                 raw: bool = False, **kw) -> list[Generation]:
        ids = [self.chat_ids(p, system=system, raw=raw) for p in prompts]
        return self.generate_ids(ids, max_new_tokens=max_new_tokens, **kw)

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 64, **kw) -> list[str]:
        return [g.text for g in self.generate(prompts, max_new_tokens=max_new_tokens, **kw)]
