"""LLM-as-a-judge (the Mem0 / Memory-R1 J metric).

Two back ends: a local model from the registry, or any OpenAI-compatible
chat-completions endpoint configured by environment variables. With neither,
J is reported as n/a; it is never estimated.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import json
import os
import random
import time
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


RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def redact(url: str) -> str:
    """``url`` without credentials (user:password@) or a query string, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class JudgeError(RuntimeError):
    """Some prompts of a batch got no label: ``failed`` holds their indices, ``labels`` every
    label (None at those), so the caller keeps what was judged."""

    def __init__(self, message: str, labels: list | None = None, failed: set[int] | None = None):
        super().__init__(message)
        self.labels, self.failed = labels or [], failed or set()


class OpenAIJudge:
    """POSTs each judge prompt to ``{base_url}/chat/completions`` (temperature 0, JSON mode),
    up to ``concurrency`` at a time. A 408 / 429 / 5xx answer or a failed connection is retried
    up to ``retries`` times, waiting what ``Retry-After`` asks (at most ``max_wait`` s) or an
    exponential backoff with jitter; then the error names the URL without credentials."""

    def __init__(self, base_url: str, api_key: str, model: str, timeout: float = 60.0, concurrency: int = 8,
                 retries: int = 6, backoff: float = 1.0, max_wait: float = 60.0):
        check_endpoint(base_url)
        if urllib.parse.urlsplit(base_url).password or urllib.parse.urlsplit(base_url).username:
            raise ValueError(f"${ENV_URL}={redact(base_url)}: credentials go in ${ENV_KEY}, not in the URL")
        u = urllib.parse.urlsplit(base_url)   # a query (an API version) stays after the path
        self.url = urllib.parse.urlunsplit(u._replace(path=u.path.rstrip("/") + "/chat/completions"))
        self.api_key, self.model, self.timeout, self.concurrency = api_key, model, timeout, concurrency
        self.retries, self.backoff, self.max_wait = retries, backoff, max_wait
        self.name = f"openai:{model}"

    def _post(self, body: bytes) -> dict:
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode())

    def _one(self, prompt: str) -> int | None:
        body = json.dumps({"model": self.model, "temperature": 0,
                           "response_format": {"type": "json_object"},
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        for attempt in range(self.retries + 1):
            try:
                data = self._post(body)
                return parse_judge_label(data["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as e:
                error, wait = f"HTTP {e.code}", retry_after(e.headers.get("Retry-After") if e.headers else None)
                if e.code not in RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:   # refused, reset, timed out
                error, wait = str(getattr(e, "reason", e)), None
            except (KeyError, IndexError, ValueError) as e:   # a 200 that is not a chat completion
                error = f"unreadable response ({e.__class__.__name__}: {e})"
                break
            if attempt < self.retries:
                time.sleep(min(self.max_wait, wait if wait is not None
                               else self.backoff * 2 ** attempt * (0.5 + random.random() / 2)))
        tries = f" after {attempt + 1} attempt{'s' if attempt else ''}"
        raise JudgeError(f"judge endpoint {redact(self.url)} failed{tries}: {error}")

    def __call__(self, questions, golds, answers) -> list[int | None]:
        # Requests of a batch go out together (a bounded pool), answers keep their order; a
        # prompt that fails leaves the others' labels to the caller (JudgeError.labels).
        prompts = [render_judge_prompt(q, g, a) for q, g, a in zip(questions, golds, answers)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._one, p) for p in prompts]
            labels, errors = [], {}
            for i, f in enumerate(futures):
                try:
                    labels.append(f.result())
                except JudgeError as e:
                    labels.append(None)
                    errors[i] = e
        if errors:
            raise JudgeError(f"{next(iter(errors.values()))} ({len(errors)} of {len(prompts)} prompts of the batch "
                             "unlabelled; rerun the same command to judge only those)", labels, set(errors))
        return labels


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
