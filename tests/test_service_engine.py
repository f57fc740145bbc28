"""/v1/chat/completions against an independent greedy decoder (the model's full forward, argmax,
no KV cache, no batching) with exact usage counts; a batch that raises reaches each of its callers
and the engine serves the next request."""

from __future__ import annotations

import threading

import jax.numpy as jnp
import numpy as np
import pytest
from fastapi.testclient import TestClient

from memr1_jax import Memory
from memr1_jax.agents.llm import ChatLLM
from memr1_jax.models import decoder as dec
from memr1_jax.service.app import create_app
from memr1_jax.service.engine import Engine
from memr1_jax.text.chat_templates import render_chat

KEY = "engine-key"
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def llm():
    return ChatLLM.from_registry("tiny-qwen2")


def _greedy(llm, ids, n):
    """Argmax decoding over the whole sequence each step (the reference)."""
    out = []
    for _ in range(n):
        toks = jnp.asarray([ids + out], jnp.int32)
        valid = toks >= 0
        logits, _ = dec.Decoder(llm.cfg).apply({"params": llm.params}, toks, dec.positions_from_valid(valid),
                                                dec.causal_mask(valid))
        nxt = int(np.argmax(np.asarray(logits[0, -1])))
        out.append(nxt)
        if nxt in llm.tokenizer.stop_ids:
            break
    return out


@pytest.fixture
def served(tmp_path, llm):
    engine = Engine(llm, window_s=0.2)
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "agents": "untrained", "manager": "add-all",
                "extraction": "sentences"}, llm=engine)
    yield engine, TestClient(create_app(m, api_key=KEY), raise_server_exceptions=False)
    m.close()
    engine.close()


def test_chat_completion_at_temperature_0_is_the_models_greedy_decoding_with_exact_usage(served, llm):
    engine, c = served
    chats = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"question {i}"}]
             for i in range(3)]
    out = [None] * 3

    def ask(i):
        out[i] = c.post("/v1/chat/completions", headers=H, json={
            "model": "tiny-qwen2", "messages": chats[i], "max_tokens": 6, "temperature": 0})
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(engine.batches) > 1                          # they were generated as one batch
    for chat, r in zip(chats, out):
        assert r.status_code == 200, r.text
        body = r.json()
        prompt = llm.tokenizer.encode(render_chat(chat, llm.tokenizer, add_generation_prompt=True))
        ref = _greedy(llm, prompt, 6)
        stopped = ref[-1] in llm.tokenizer.stop_ids
        assert body["choices"][0]["message"]["content"] == llm.tokenizer.decode(ref, skip_special=True)
        assert body["choices"][0]["finish_reason"] == ("stop" if stopped else "length")
        assert body["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": len(ref),
                                 "total_tokens": len(prompt) + len(ref)}


def test_a_batch_that_raises_reaches_each_caller_and_the_engine_serves_on(served, llm, monkeypatch):
    engine, c = served
    real, calls = llm.generate_ids, []

    def flaky(*a, **kw):
        calls.append(len(a[0]))
        if len(calls) == 1:
            raise RuntimeError("device out of memory\nsecond line")
        return real(*a, **kw)
    monkeypatch.setattr(llm, "generate_ids", flaky)
    futs = [engine.submit([1, 2, 3 + i], 2) for i in range(3)]   # one window: one batch
    for f in futs:
        with pytest.raises(RuntimeError, match="device out of memory"):
            f.result(timeout=60)
    assert calls == [3]
    r = c.post("/v1/chat/completions", headers=H, json={"model": "m", "max_tokens": 2,
                                                         "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1     # the worker lives
    monkeypatch.setattr(llm, "generate_ids", lambda *a, **kw: (_ for _ in ()).throw(ValueError("bad batch")))
    r = c.post("/v1/chat/completions", headers=H, json={"model": "m", "max_tokens": 2,
                                                         "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.json()["detail"] == "generation failed: ValueError: bad batch"
