"""Memories an application can audit, undo and share safely: provenance, revert, delete by
request, keys bound to scopes, batches and background adds (in process, on both stores)."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from fastapi.testclient import TestClient

from memr1_jax import Memory
from memr1_jax.service.app import create_app
from memr1_jax.service.keys import KeyRing, hash_key

ADMIN, ALICE, READER = "admin-key", "alice-key", "alice-reader"


@pytest.fixture
def svc(store_spec, tmp_path):
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [
        {"name": "alice-app", "sha256": hash_key(ALICE), "user_id": ["alice"], "write": True},
        {"name": "alice-ro", "sha256": hash_key(READER), "user_id": "alice"}]}))
    m = Memory({"store": store_spec, "encoder": "hashing", "agents": "untrained", "manager": "add-all",
                "extraction": "sentences", "job_lease_s": 1.0})
    app = create_app(m, keys=KeyRing.load(ADMIN, str(keys_file)))
    yield m, app, TestClient(app, raise_server_exceptions=False)
    m.close()


def H(key=ADMIN, **extra):
    return {"X-API-Key": key, **extra}


def _add(c, text, user="alice", key=ADMIN, rid=None, **kw):
    headers = H(key, **({"X-Request-ID": rid} if rid else {}))
    r = c.post("/memories", json={"messages": text, "user_id": user, "infer": False, **kw}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_history_names_the_message_and_the_request_that_produced_a_memory(svc):
    m, app, c = svc
    r = c.post("/memories", headers=H(**{"X-Request-ID": "req-42"}), json={
        "messages": [{"role": "user", "content": "Hello!"}, {"role": "user", "content": "I keep bees in Porto."}],
        "user_id": "alice", "infer": False, "timestamp": "2026-12-01T10:00:00Z"})
    out = r.json()
    assert r.headers["x-request-id"] == "req-42" and set(out) == {"results"}   # Mem0's shape; the id in a header
    generated = c.post("/memories", headers=H(), json={"messages": "x", "user_id": "alice", "infer": False})
    assert m.get(generated.json()["results"][0]["id"])["source"]["request_id"] == generated.headers["x-request-id"]
    second = out["results"][1]["id"]
    source = c.get(f"/memories/{second}", headers=H()).json()["source"]
    assert source["request_id"] == "req-42" and source["decided_by"] == "infer=false"
    assert source["messages"] == [{"index": 1, "role": "user", "text": "I keep bees in Porto.",
                                   "sha256": hashlib.sha256(b"I keep bees in Porto.").hexdigest(),
                                   "timestamp": "2026-12-01T10:00:00Z"}]
    (row,) = c.get(f"/memories/{second}/history", headers=H()).json()
    assert row["event"] == "ADD" and row["source"]["request_id"] == "req-42" and row["source"]["operation"] == "ADD"
    # an inferred add: the facts' source names the user's messages and who decided
    inferred = c.post("/memories", headers=H(**{"X-Request-ID": "req-43"}),
                      json={"messages": "I moved to Lisbon last week.", "user_id": "bob"}).json()["results"]
    src = m.history(inferred[0]["id"])[0]["source"]
    assert src["request_id"] == "req-43" and src["decided_by"] in ("add-all", "no related memory: added")
    assert src["messages"][0]["text"] == "I moved to Lisbon last week."
    # a direct PUT: decided by the API, under its own request id
    c.put(f"/memories/{second}", json={"text": "I keep bees in Braga."}, headers=H(**{"X-Request-ID": "req-44"}))
    last = m.history(second)[-1]
    assert last["event"] == "UPDATE" and last["source"] == {"request_id": "req-44", "operation": "UPDATE",
                                                           "decided_by": "api"}


def test_revert_undoes_an_update_a_delete_and_a_revert(svc):
    m, app, c = svc
    mid = _add(c, "Alice lives in Austin", metadata={"v": 1})["results"][0]["id"]
    c.put(f"/memories/{mid}", json={"text": "Alice lives in Denver", "metadata": {"v": 2}}, headers=H())
    r = c.post(f"/memories/{mid}/revert", headers=H())
    assert r.status_code == 200 and r.json()["event"] == "UPDATE"
    item = c.get(f"/memories/{mid}", headers=H()).json()
    assert item["memory"] == "Alice lives in Austin" and item["metadata"] == {"v": 1}
    assert m.search("Austin", user_id="alice")["results"][0]["id"] == mid   # the old embedding is back too
    c.post(f"/memories/{mid}/revert", headers=H())                         # a revert is reverted
    assert c.get(f"/memories/{mid}", headers=H()).json()["memory"] == "Alice lives in Denver"
    c.delete(f"/memories/{mid}", headers=H())
    assert c.get(f"/memories/{mid}", headers=H()).status_code == 404
    r = c.post(f"/memories/{mid}/revert", headers=H())
    assert r.status_code == 200 and r.json()["event"] == "ADD"
    back = c.get(f"/memories/{mid}", headers=H()).json()
    assert back["memory"] == "Alice lives in Denver" and back["user_id"] == "alice" and back["metadata"] == {"v": 2}
    events = [(h["event"], h["source"].get("operation")) for h in m.history(mid)]
    assert events == [("ADD", "ADD"), ("UPDATE", "UPDATE"), ("UPDATE", "revert"), ("UPDATE", "revert"),
                      ("DELETE", "DELETE"), ("ADD", "revert")]
    assert c.post("/memories/nope/revert", headers=H()).status_code == 404
    assert m.store.check() == []


def test_delete_by_source_request_removes_exactly_that_requests_memories(svc):
    m, app, c = svc
    first = {r["id"] for r in _add(c, [{"role": "user", "content": "a1"}, {"role": "user", "content": "a2"}],
                                   rid="r1")["results"]}
    other = {r["id"] for r in _add(c, "b1", rid="r2")["results"]} | {r["id"] for r in _add(c, "c1", user="bob",
                                                                                          rid="r1b")["results"]}
    r = c.delete("/memories", params={"source_request": "r1"}, headers=H())
    assert r.status_code == 200 and set(r.json()["deleted"]) == first
    left = {i["id"] for u in ("alice", "bob") for i in m.get_all(user_id=u)["results"]}
    assert left == other


def _bob_requests(bob_id, job_id):
    """Every route, asked about bob's memories (or for everything)."""
    body = {"user_id": "bob"}
    return {
        ("POST", "/memories"): dict(json={"messages": "x", **body, "infer": False}),
        ("GET", "/memories"): dict(params=body),
        ("DELETE", "/memories"): dict(params=body),
        ("POST", "/memories/batch"): dict(json={"items": [{"op": "delete", "memory_id": bob_id}]}),
        ("GET", "/memories/{memory_id}"): dict(),
        ("PUT", "/memories/{memory_id}"): dict(json={"text": "changed"}),
        ("DELETE", "/memories/{memory_id}"): dict(),
        ("GET", "/memories/{memory_id}/history"): dict(),
        ("POST", "/memories/{memory_id}/revert"): dict(),
        ("POST", "/search"): dict(json={"query": "bob", **body}),
        ("POST", "/answer"): dict(json={"question": "Where does bob live?", **body}),
        ("POST", "/reset"): dict(),
        ("GET", "/jobs/{job_id}"): dict(),
    }


def test_a_key_bound_to_alice_gets_403_or_404_on_every_route_for_bobs_memories(svc):
    m, app, c = svc
    bob_id = _add(c, "Bob lives in Leeds", user="bob")["results"][0]["id"]
    job_id = c.post("/memories", json={"messages": "Bob likes tea", "user_id": "bob", "infer": False,
                                       "async_mode": True}, headers=H()).json()["job_id"]
    for _ in range(100):
        if m.job(job_id)["status"] == "done":
            break
        time.sleep(0.05)
    before = m.get_all(user_id="bob")["results"]
    requests = _bob_requests(bob_id, job_id)
    memory_routes = {(meth, r.path) for r in app.routes for meth in getattr(r, "methods", ()) or ()
                     if meth in ("GET", "POST", "PUT", "DELETE") and not r.path.startswith(("/v1/", "/health",
                                                                                           "/openapi"))}
    assert memory_routes == set(requests), "a route is not walked here"
    for key in (ALICE, READER):
        for (method, path), kw in requests.items():
            url = path.replace("{memory_id}", bob_id).replace("{job_id}", job_id)
            r = c.request(method, url, headers=H(key), **kw)
            assert r.status_code in (403, 404), (key, method, path, r.status_code, r.text)
    assert m.get_all(user_id="bob")["results"] == before
    # ... while alice's own memories are hers: the writer writes, the reader reads and may not write
    mine = _add(c, "Alice likes jazz", key=ALICE)["results"][0]["id"]
    assert c.get(f"/memories/{mine}", headers=H(READER)).status_code == 200
    assert c.put(f"/memories/{mine}", json={"text": "x"}, headers=H(READER)).status_code == 403
    assert c.post("/search", json={"query": "jazz", "user_id": "alice"}, headers=H(READER)).status_code == 200
    assert c.post("/search", json={"query": "jazz", "agent_id": "a"}, headers=H(ALICE)).status_code == 403
    assert c.get("/memories", params={"user_id": "alice"}, headers=H("nope")).status_code == 401


def test_keys_file_errors_name_the_entry(tmp_path):
    bad = tmp_path / "k.json"
    for content, match in ((json.dumps({"keys": [{"sha256": "00"}]}), r"keys\[0\]\.sha256"),
                           (json.dumps({"keys": [{"sha256": "a" * 64}]}), r"keys\[0\]: binds no scope"),
                           (json.dumps({"keys": [{"sha256": "a" * 64, "user_id": 5}]}), r"keys\[0\]\.user_id"),
                           ("{", "not a readable JSON file")):
        bad.write_text(content)
        with pytest.raises(ValueError, match=match):
            KeyRing.load(None, str(bad))


def test_a_batch_with_one_bad_item_applies_nothing(svc):
    m, app, c = svc
    mid = _add(c, "Alice lives in Austin")["results"][0]["id"]
    items = [{"op": "add", "messages": f"note {i}", "user_id": "alice"} for i in range(98)]
    items += [{"op": "update", "memory_id": mid, "text": "Alice lives in Denver"},
              {"op": "delete", "memory_id": "no-such-id"}]
    r = c.post("/memories/batch", json={"items": items}, headers=H())
    assert r.status_code == 404 and "items[99].memory_id" in r.text, r.text
    items[99] = {"op": "update", "memory_id": mid, "metadata": {"k": float("nan")}}
    r = c.post("/memories/batch", content=json.dumps({"items": items}).encode(), headers=H(**{
        "content-type": "application/json"}))
    assert r.status_code == 422 and "items" in r.text
    items[99] = {"op": "frobnicate"}
    assert c.post("/memories/batch", json={"items": items}, headers=H()).status_code == 422
    assert [i["memory"] for i in m.get_all(user_id="alice", top_k=1000)["results"]] == ["Alice lives in Austin"]
    items[99] = {"op": "delete", "memory_id": mid}
    r = c.post("/memories/batch", json={"items": items}, headers=H())
    assert r.status_code == 200 and [x["event"] for x in r.json()["results"]] == ["ADD"] * 98 + ["UPDATE", "DELETE"]
    assert len(m.get_all(user_id="alice", top_k=1000)["results"]) == 98
    too_many = c.post("/memories/batch", json={"items": [{"op": "delete", "memory_id": mid}] * 1001}, headers=H())
    assert too_many.status_code == 422 and "1000" in too_many.text


def test_background_adds_answer_202_at_once_and_apply_in_order(svc):
    m, app, c = svc
    jobs = []
    for i in range(5):
        r = c.post("/memories", json={"messages": f"Alice fact {i}", "user_id": "alice", "infer": False,
                                      "async_mode": True}, headers=H())
        assert r.status_code == 202 and r.json()["status"] == "queued"
        jobs.append(r.json()["job_id"])
    deadline = time.time() + 30
    while time.time() < deadline and any(c.get(f"/jobs/{j}", headers=H()).json()["status"] != "done" for j in jobs):
        time.sleep(0.05)
    done = [c.get(f"/jobs/{j}", headers=H()).json() for j in jobs]
    assert all(d["status"] == "done" and d["user_id"] == "alice" for d in done), done
    assert [d["result"]["results"][0]["memory"] for d in done] == [f"Alice fact {i}" for i in range(5)]
    assert [i["memory"] for i in m.get_all(user_id="alice")["results"]] == [f"Alice fact {i}" for i in range(5)]
    assert c.get("/jobs/unknown", headers=H()).status_code == 404
