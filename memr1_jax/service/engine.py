"""One JAX model serving many threads: concurrent requests are generated as one batch.

Requests queue up; a worker thread takes the first, waits ``window_s`` for others (up to
``max_batch``), and generates those with the same sampling settings in one
``ChatLLM.generate_ids`` call (the sampler pads them into one compiled bucket). A request that
asked for fewer new tokens than the batch's largest is cut to its own limit, so a result does
not depend on what it was batched with beyond the padding (greedy outputs are the same tokens).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import threading
import time
from typing import Sequence

import jax

from memr1_jax.agents.llm import ChatLLM, Generation
from memr1_jax.sampling.sampler import SamplingConfig
from memr1_jax.text.chat_templates import render_chat


@dataclasses.dataclass
class _Request:
    ids: list[int]
    max_new_tokens: int
    sampling: SamplingConfig
    future: concurrent.futures.Future
    constraint: object = None      # a TokenAutomaton, or None


class Engine:
    """Thread-safe, batching front of a ChatLLM, with ChatLLM's ``generate`` interface."""

    thread_safe = True

    def __init__(self, llm: ChatLLM, max_batch: int | None = None, window_s: float = 0.01, seed: int = 0):
        self.llm = llm
        self.cfg, self.tokenizer = llm.cfg, llm.tokenizer
        self.max_batch = max_batch or llm.batch_size
        self.window_s = window_s
        self._rng = jax.random.PRNGKey(seed)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self.batches: list[int] = []          # sizes of the batches run (for tests and benchmarks)
        self._worker = threading.Thread(target=self._run, name="memr1-engine", daemon=True)
        self._worker.start()

    @property
    def max_context(self) -> int:
        return int(self.llm.cfg.max_seq_len)

    # ---------------------------------------------------------------- clients
    def submit(self, ids: Sequence[int], max_new_tokens: int, sampling: SamplingConfig = SamplingConfig(),
               constraint=None) -> concurrent.futures.Future:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 1")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Request(list(ids), int(max_new_tokens), sampling, fut, constraint))
        return fut

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int = 64,
                     sampling: SamplingConfig = SamplingConfig(), constraints=None) -> list[Generation]:
        per = list(constraints) if isinstance(constraints, (list, tuple)) else [constraints] * len(prompt_ids)
        futs = [self.submit(p, max_new_tokens, sampling, c) for p, c in zip(prompt_ids, per)]
        return [f.result() for f in futs]

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64, system: str | None = None,
                 raw: bool = False, sampling: SamplingConfig = SamplingConfig(), constraints=None) -> list[Generation]:
        return self.generate_ids([self.llm.chat_ids(p, system=system, raw=raw) for p in prompts],
                                 max_new_tokens, sampling, constraints)

    def chat_ids(self, messages: Sequence[dict]) -> list[int]:
        """A multi-turn chat (OpenAI messages) rendered by the model's chat template; message
        texts stay plain text (no control tokens from user content)."""
        plain = self.tokenizer.as_plain_text
        msgs = [{"role": m["role"], "content": plain(m["content"])} for m in messages]
        return self.tokenizer.encode(render_chat(msgs, self.tokenizer, add_generation_prompt=True))

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    # ----------------------------------------------------------------- worker
    def _take(self) -> list[_Request] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=max(left, 0)) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)
                break
            batch.append(nxt)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            groups: dict[SamplingConfig, list[_Request]] = {}
            for r in batch:
                groups.setdefault(r.sampling, []).append(r)
            for sampling, reqs in groups.items():
                try:
                    self._rng, key = jax.random.split(self._rng)
                    cons = [r.constraint for r in reqs]
                    gens = self.llm.generate_ids([r.ids for r in reqs], max(r.max_new_tokens for r in reqs),
                                                 sampling=sampling, rng=key,
                                                 constraints=None if all(c is None for c in cons) else cons)
                    self.batches.append(len(reqs))
                    for r, g in zip(reqs, gens):
                        r.future.set_result(self._cut(g, r.max_new_tokens))
                except Exception as e:   # the clients see the error; the worker keeps serving
                    for r in reqs:
                        if not r.future.done():
                            r.future.set_exception(e)

    def _cut(self, g: Generation, limit: int) -> Generation:
        if len(g.completion_ids) <= limit:
            return g
        ids = g.completion_ids[:limit]
        return dataclasses.replace(
            g, completion_ids=ids, logprobs=g.logprobs[:limit], stopped=False,
            text=self.tokenizer.decode(ids, skip_special=True),
            scaled_logprobs=None if g.scaled_logprobs is None else g.scaled_logprobs[:limit])
