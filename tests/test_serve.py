"""python -m memr1_jax.serve as a user runs it: auth, bad requests, load, kill -9, /v1 endpoints.

Every server is a subprocess on a free 127.0.0.1 port with the hashing encoder and the tiny
random Qwen2 (so no weights are fetched); clients run for a bounded number of requests and time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

KEY = "test-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(tmp_path, key: str | None = KEY, args=(), store="m.db"):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MEMR1_API_KEY"}
    if key:
        env["MEMR1_API_KEY"] = key
    log = open(tmp_path / f"server-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "memr1_jax.serve", "--port", str(port), "--store",
                             str(tmp_path / store), "--encoder", "hashing", "--model", "tiny-qwen2",
                             "--log-level", "warning", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {(tmp_path / f'server-{port}.log').read_text()[-2000:]}")
        time.sleep(0.2)
    proc.url, proc.log_path = url, tmp_path / f"server-{port}.log"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def client(url, key=KEY) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": key} if key else {}, timeout=60)


def _count(c, user="u") -> list[dict]:
    r = c.get("/memories", params={"user_id": user, "limit": 10000})
    assert r.status_code == 200
    return r.json()["results"]


def test_key_is_required_and_accepted_in_both_forms(tmp_path):
    with server(tmp_path) as s:
        body = {"messages": [{"role": "user", "content": "secret"}], "user_id": "u", "infer": False}
        assert httpx.get(s.url + "/health").json()["auth"] is True        # health needs no key
        assert httpx.post(s.url + "/memories", json=body).status_code == 401
        assert httpx.post(s.url + "/memories", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert httpx.get(s.url + "/memories", params={"user_id": "u"},
                         headers={"Authorization": "Bearer nope"}).status_code == 401
        with client(s.url) as c:
            assert _count(c) == []                                          # the refused add wrote nothing
        r = httpx.post(s.url + "/memories", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.json()["results"][0]["memory"] == "secret"


def test_without_a_key_it_serves_loopback_only_and_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MEMR1_API_KEY"}
    r = subprocess.run([sys.executable, "-m", "memr1_jax.serve", "--host", "0.0.0.0", "--port", "1",
                        "--store", str(tmp_path / "x.db")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "without MEMR1_API_KEY" in r.stderr
    assert not (tmp_path / "x.db").exists()
    with server(tmp_path, key=None) as s:
        with client(s.url, key=None) as c:
            assert c.post("/memories", json={"messages": "hi", "user_id": "u", "infer": False}).status_code == 200
        assert "127.0.0.1 only" in s.log_path.read_text()


def test_bad_requests_get_4xx_and_change_nothing(tmp_path):
    with server(tmp_path, args=("--max-body-bytes", "65536")) as s, client(s.url) as c:
        kept = c.post("/memories", json={"messages": [{"role": "user", "content": "kept"}], "user_id": "u",
                                         "infer": False}).json()["results"][0]
        bad = [
            c.post("/memories", content=b'{"messages": [', headers={"content-type": "application/json"}),
            c.post("/memories", json={"messages": 5, "user_id": "u"}),
            c.post("/memories", json={"messages": [{"role": "robot", "content": "x"}], "user_id": "u"}),
            c.post("/memories", json={"messages": [{"role": "user", "content": "x"}], "infer": False}),
            c.post("/memories", json={"messages": [{"role": "user", "content": "x" * 100_000}], "user_id": "u"}),
            c.post("/memories", content=b"[" + b"1," * 50_000 + b"1]", headers={"content-type": "application/json"}),
            c.post("/search", json={"query": "kept", "filters": {"user_id": "u", "n": {"near": 1}}}),
            c.post("/search", json={"query": "", "user_id": "u"}),
            c.post("/search", json={"query": "kept", "user_id": "u", "top_k": 0}),
            c.get(f"/memories/{kept['id']}x"),
            c.put("/memories/nope", json={"text": "new"}),
            c.put(f"/memories/{kept['id']}", json={}),
            c.delete("/memories/nope"),
            c.get("/memories/nope/history"),
            c.delete("/memories"),
            c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "stream": True}),
            c.post("/v1/embeddings", json={"input": "x", "dimensions": 7}),
        ]
        codes = [r.status_code for r in bad]
        assert codes == [422, 422, 422, 400, 413, 413, 400, 422, 422, 404, 404, 400, 404, 404, 400, 400, 400]
        assert all(isinstance(r.json()["detail"], (str, list)) for r in bad)
        assert "near" in bad[6].json()["detail"] and "Memory with id nope not found" in bad[10].json()["detail"]
        assert [(m["id"], m["memory"]) for m in _count(c)] == [(kept["id"], "kept")]
        assert len(c.get(f"/memories/{kept['id']}/history").json()) == 1


def test_concurrent_clients_adding_and_searching_lose_nothing(tmp_path):
    with server(tmp_path) as s:
        acked, failures = [], []
        stop = time.monotonic() + 6

        def run(k):
            with client(s.url) as c:
                for i in range(200):
                    if time.monotonic() > stop:
                        return
                    r = c.post("/memories", json={"messages": [{"role": "user", "content": f"fact {k}-{i}"}],
                                                  "user_id": f"user{k % 4}", "infer": False})
                    if r.status_code != 200:
                        failures.append(r.status_code)
                        continue
                    acked.append((f"user{k % 4}", r.json()["results"][0]["id"]))
                    q = c.post("/search", json={"query": f"fact {k}-{i}", "user_id": f"user{k % 4}", "top_k": 5})
                    if q.status_code != 200 or not q.json()["results"]:
                        failures.append(("search", q.status_code))
        threads = [threading.Thread(target=run, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures and len(acked) > 50
        with client(s.url) as c:
            stored = {(f"user{u}", m["id"]) for u in range(4) for m in _count(c, f"user{u}")}
        assert stored == set(acked)


def test_kill_9_mid_write_loses_no_acknowledged_write(tmp_path):
    acked, stop = [], threading.Event()
    with server(tmp_path) as s:
        def writer(k):
            with client(s.url) as c:
                i = 0
                while not stop.is_set():
                    try:
                        r = c.post("/memories", json={"messages": [{"role": "user", "content": f"w{k}-{i}"}],
                                                      "user_id": "u", "metadata": {"i": i}, "infer": False})
                    except httpx.HTTPError:
                        return           # the server died under this request: not acknowledged
                    if r.status_code == 200:
                        acked.append(r.json()["results"][0]["id"])
                    i += 1
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        time.sleep(3)
        os.kill(s.pid, signal.SIGKILL)
        s.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join()
    assert len(acked) > 20
    db = sqlite3.connect(tmp_path / "m.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    with server(tmp_path) as s, client(s.url) as c:
        stored = {m["id"] for m in _count(c)}
        assert set(acked) <= stored
        assert len(stored) - len(acked) <= 8     # at most the in-flight writes of the 8 writers
        for mid in list(stored)[:5]:
            assert [h["event"] for h in c.get(f"/memories/{mid}/history").json()] == ["ADD"]


def test_openai_compatible_endpoints_serve_the_engine_and_encoder(tmp_path):
    openai = pytest.importorskip("openai")
    from memr1_jax.memory.encoder import HashingTestEncoder
    with server(tmp_path, args=("--batch-window-ms", "300")) as s:
        oa = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY)
        emb = oa.embeddings.create(model="hashing", input=["I like tea", "Paris"])   # base64 on the wire
        np.testing.assert_allclose(np.array([d.embedding for d in emb.data]),
                                   HashingTestEncoder()(["I like tea", "Paris"]), atol=1e-6)
        out = [None] * 4

        def ask(i):
            out[i] = oa.chat.completions.create(model="tiny-qwen2", max_tokens=4, temperature=0,
                                                messages=[{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": f"question {i}"}])
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(o.choices[0].finish_reason in ("stop", "length") for o in out)
        assert all(0 < o.usage.completion_tokens <= 4 for o in out)
        health = httpx.get(s.url + "/health").json()
        assert health["largest_batch"] > 1                  # concurrent requests shared a batch
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="wrong").embeddings.create(model="m", input="x")
