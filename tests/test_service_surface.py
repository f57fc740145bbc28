"""The service's whole surface: every route behind the key (taken from the app, not a list),
delete_all and reset against other scopes, search ranking / threshold / top_k against a numpy
cosine oracle."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from memr1_jax import Memory
from memr1_jax.memory.encoder import HashingTestEncoder
from memr1_jax.service.app import create_app
from memr1_jax.service.memory import DONT_KNOW

KEY = "surface-key"


@pytest.fixture
def svc(tmp_path):
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "agents": "untrained", "manager": "add-all",
                "extraction": "sentences"})
    app = create_app(m, api_key=KEY)
    yield m, app, TestClient(app, raise_server_exceptions=False)
    m.close()


def _calls(app):
    for r in app.routes:
        for method in sorted(getattr(r, "methods", None) or ()):
            if method in ("GET", "POST", "PUT", "DELETE"):
                yield method, r.path, r.path.replace("{memory_id}", "some-id").replace("{job_id}", "some-job")


def test_every_route_needs_the_key_and_takes_each_documented_form(svc):
    m, app, c = svc
    calls = list(_calls(app))
    assert len(calls) >= 17 and ("POST", "/reset", "/reset") in calls
    for method, path, url in calls:
        if path == "/health":
            assert c.request(method, url).status_code == 200
            continue
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": f"Bearer {KEY}x"}, {"Authorization": KEY}):
            r = c.request(method, url, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.status_code)
        for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Token {KEY}"}):
            r = c.request(method, url, headers=headers, json={})
            assert r.status_code != 401, (method, path, headers, r.text)
    assert m.store.count() == 0   # none of the refused requests wrote anything


def test_delete_all_and_reset_leave_history_and_other_scopes_as_they_should(svc):
    m, app, c = svc
    H = {"X-API-Key": KEY}
    ids = {}
    for scope in ({"user_id": "a"}, {"user_id": "a", "agent_id": "x"}, {"user_id": "b"}, {"agent_id": "x"}):
        r = c.post("/memories", json={"messages": f"fact of {scope}", "infer": False, **scope}, headers=H)
        ids[tuple(sorted(scope.items()))] = r.json()["results"][0]["id"]
    r = c.delete("/memories", params={"user_id": "a"}, headers=H)
    assert r.status_code == 200
    left = {k for k, mid in ids.items() if m.get(mid) is not None}
    assert left == {(("user_id", "b"),), (("agent_id", "x"),)}    # both of a's scopes went, nothing else
    gone = ids[(("user_id", "a"),)]
    assert [h["event"] for h in m.history(gone)] == ["ADD", "DELETE"]
    assert c.post("/reset", headers=H).status_code == 200
    assert m.store.count() == 0 and m.history(gone) == []


def test_search_ranks_by_cosine_with_threshold_top_k_and_limit_as_a_numpy_oracle(svc):
    m, app, c = svc
    H = {"X-API-Key": KEY}
    rng = np.random.default_rng(0)
    words = "tea coffee Paris Rome Oslo nurse pilot cat dog jazz chess hiking piano Lisbon garden".split()
    texts = [" ".join(rng.choice(words, 4)) + f" {i}" for i in range(40)]
    c.post("/memories", json={"messages": [{"role": "user", "content": t} for t in texts], "user_id": "u",
                              "infer": False}, headers=H)
    c.post("/memories", json={"messages": "tea Paris jazz other", "user_id": "someone-else", "infer": False},
           headers=H)
    enc = HashingTestEncoder()
    mat = enc(texts).astype(np.float64)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    for query, top_k, threshold, key in (("tea in Paris", 5, None, "top_k"), ("jazz piano cat", 12, 0.2, "limit"),
                                         ("Oslo", 40, -1.0, "top_k"), ("nothing like it", 3, 0.9, "top_k")):
        q = enc([query])[0].astype(np.float64)
        scores = mat @ (q / np.linalg.norm(q))
        order = np.argsort(-scores, kind="stable")[:top_k]
        cut = 0.1 if threshold is None else threshold   # the service's default threshold (Mem0's)
        want = [(texts[i], scores[i]) for i in order if scores[i] >= cut]
        body = {"query": query, "user_id": "u", key: top_k, **({} if threshold is None else {"threshold": threshold})}
        got = c.post("/search", json=body, headers=H).json()["results"]
        # the same scores in the same order; equal scores may come in either order
        np.testing.assert_allclose([g["score"] for g in got], [s for _, s in want], atol=1e-5, err_msg=query)
        oracle = dict(zip(texts, scores))
        np.testing.assert_allclose([oracle[g["memory"]] for g in got], [g["score"] for g in got], atol=1e-5)
        assert len({g["memory"] for g in got}) == len(got)
        assert all(g["user_id"] == "u" for g in got)


def test_answer_over_http_prompts_with_the_question_and_the_scopes_dated_memories_only(tmp_path):
    import types

    class Recorder:   # the Answer Agent's model: records each prompt, answers from the memory
        prompts: list = []

        def generate(self, prompts, max_new_tokens=64, **kw):
            self.prompts.extend(prompts)
            return [types.SimpleNamespace(text="Relevant: Oslo\n**Answer:** Oslo") for _ in prompts]
    rec = Recorder()
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "agents": "untrained", "manager": "add-all",
                "extraction": "sentences", "answer_min_score": 0.1}, answer_llm=rec)
    m.add("Alice lives in Oslo", user_id="alice", infer=False, timestamp="8 May, 2023")
    m.add("Alice plays the cello", user_id="alice", infer=False, timestamp="9 May, 2023")
    m.add("Bob lives in Lima", user_id="bob", infer=False, timestamp="1 May, 2023")
    c = TestClient(create_app(m, api_key=KEY), raise_server_exceptions=False)
    r = c.post("/answer", json={"question": "Where does Alice live?", "user_id": "alice"}, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "Oslo" and len(rec.prompts) == 1
    prompt = rec.prompts[0]
    assert "Where does Alice live?" in prompt
    assert "- 8 May, 2023: Alice lives in Oslo" in prompt and "- 9 May, 2023: Alice plays the cello" in prompt
    assert "Lima" not in prompt and "Bob" not in prompt          # another scope's memory never reaches it
    assert {x["memory"] for x in body["memories"]} == {"Alice lives in Oslo", "Alice plays the cello"}
    # a scope with nothing: "I don't know" without asking the model
    r = c.post("/answer", json={"question": "Where does Alice live?", "user_id": "carol"}, headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["memories"] == [] and len(rec.prompts) == 1
    assert r.json()["answer"] == DONT_KNOW
    m.close()


@pytest.mark.parametrize("when", [9.223372036854776e18, 6.77680361916768e16, -1e20])
def test_a_unix_time_out_of_range_is_a_400_naming_it(svc, when):
    # Found by tests/test_service_schema.py: datetime.fromtimestamp raised OverflowError / OSError (500).
    m, app, c = svc
    r = c.post("/memories", json={"messages": "x", "user_id": "u", "infer": False, "timestamp": when},
               headers={"X-API-Key": KEY})
    assert r.status_code == 400 and "not a unix time this machine can represent" in r.json()["detail"], r.text
    assert m.store.count() == 0
