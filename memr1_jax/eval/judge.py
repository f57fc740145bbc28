"""LLM-as-a-judge (the Mem0 / Memory-R1 J metric).

Two back ends: a local model from the registry, or any OpenAI-compatible
chat-completions endpoint configured by environment variables. With neither,
J is reported as n/a; it is never estimated.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Sequence

from memr1_jax.agents.prompts import parse_judge_label, render_judge_prompt

ENV_URL = "MEMR1_JUDGE_BASE_URL"     # e.g. https://host/v1
ENV_KEY = "MEMR1_JUDGE_API_KEY"
ENV_MODEL = "MEMR1_JUDGE_MODEL"


class LocalJudge:
    """A registry model, greedy, as the paper's judge runs at temperature 0. ``llm`` is the
    ChatLLM or a function that loads it (called on the first batch: a run with nothing left
    to judge loads nothing); the batch goes to the model as one batched generation."""

    def __init__(self, llm, max_new_tokens: int = 64, name: str = "local"):
        self._llm = llm
        self.max_new_tokens = max_new_tokens
        self.name = name

    @property
    def llm(self):
        if callable(self._llm) and not hasattr(self._llm, "complete"):
            self._llm = self._llm()
        return self._llm

    def __call__(self, questions: Sequence[str], golds: Sequence[str],
                 answers: Sequence[str]) -> list[int | None]:
        prompts = [render_judge_prompt(q, g, a) for q, g, a in zip(questions, golds, answers)]
        return [parse_judge_label(t) for t in self.llm.complete(prompts, max_new_tokens=self.max_new_tokens)]


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def check_endpoint(base_url: str) -> None:
    """The API key travels in a header: only over https, or plain http to this machine."""
    url = urllib.parse.urlsplit(base_url)
    if url.scheme == "https" and url.hostname:
        return
    if url.scheme == "http" and (url.hostname in _LOOPBACK or (url.hostname or "").startswith("127.")):
        return
    raise ValueError(f"${ENV_URL}={base_url!r}: the judge endpoint must be https:// (or http:// to localhost); "
                     "the API key would otherwise cross the network in clear text")


class OpenAIJudge:
    """POSTs each judge prompt to ``{base_url}/chat/completions`` (temperature 0, JSON mode),
    up to ``concurrency`` at a time."""

    def __init__(self, base_url: str, api_key: str, model: str, timeout: float = 60.0, concurrency: int = 8):
        check_endpoint(base_url)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key, self.model, self.timeout, self.concurrency = api_key, model, timeout, concurrency
        self.name = f"openai:{model}"

    def _one(self, prompt: str) -> int | None:
        body = json.dumps({"model": self.model, "temperature": 0,
                           "response_format": {"type": "json_object"},
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read().decode())
            return parse_judge_label(data["choices"][0]["message"]["content"])
        except (urllib.error.URLError, KeyError, IndexError, ValueError, TimeoutError) as e:
            raise RuntimeError(f"judge endpoint {self.url} failed: {e}") from e

    def __call__(self, questions, golds, answers) -> list[int | None]:
        # Requests of a batch go out together (a bounded pool), answers keep their order.
        prompts = [render_judge_prompt(q, g, a) for q, g, a in zip(questions, golds, answers)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, prompts))


def make_judge(spec: str | None, llm_factory=None):
    """``None``/"none": no judge. "openai": endpoint from $MEMR1_JUDGE_BASE_URL,
    $MEMR1_JUDGE_API_KEY, $MEMR1_JUDGE_MODEL. Anything else: a registry model name
    (``llm_factory(name)`` builds the ChatLLM)."""
    if spec in (None, "", "none"):
        return None
    if spec == "openai":
        missing = [v for v in (ENV_URL, ENV_KEY, ENV_MODEL) if not os.environ.get(v)]
        if missing:
            raise ValueError(f"--judge openai needs the environment variables {', '.join(missing)}")
        return OpenAIJudge(os.environ[ENV_URL], os.environ[ENV_KEY], os.environ[ENV_MODEL])
    if llm_factory is None:
        raise ValueError(f"--judge {spec!r}: no model loader given")
    return LocalJudge(lambda: llm_factory(spec), name=spec)
