"""Bad input to the memory service is named with a 4xx, never a 500, and never breaks a scope.

In process (FastAPI's TestClient) over a real store, the hashing encoder, add-all management with
sentence facts (no model), and the tiny random Qwen2 behind the batching Engine for /answer and
/v1/chat. Bodies are sent as raw bytes so NaN, Infinity and lone surrogates arrive as a client
can send them.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memr1_jax import Memory
from memr1_jax.agents.llm import ChatLLM
from memr1_jax.service.app import create_app
from memr1_jax.service.engine import Engine

KEY = "k-0123"
H = {"X-API-Key": KEY, "content-type": "application/json"}


@pytest.fixture(scope="module")
def engine():
    e = Engine(ChatLLM.from_registry("tiny-qwen2", batch_size=2), max_batch=2, window_s=0.0)
    yield e
    e.close()


def _memory(store, engine) -> Memory:
    return Memory({"store": str(store), "encoder": "hashing", "agents": "untrained", "manager": "add-all",
                   "extraction": "sentences", "answer_max_new_tokens": 4}, llm=engine)


@pytest.fixture
def svc(store_spec, engine):
    m = _memory(store_spec, engine)
    c = TestClient(create_app(m, api_key=KEY), raise_server_exceptions=False)
    yield m, c
    m.close()


def _raw(obj) -> bytes:
    """JSON as Python writes it: NaN / Infinity literals, lone surrogates as \\ud800 escapes."""
    return json.dumps(obj, allow_nan=True).encode()


def _add(c, text="Alice lives in Paris.", user="alice", **kw):
    r = c.post("/memories", content=_raw({"messages": text, "user_id": user, "infer": False, **kw}), headers=H)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _all(c, user="alice"):
    r = c.get("/memories", params={"user_id": user}, headers=H)
    assert r.status_code == 200, r.text
    return r.json()["results"]


@pytest.mark.parametrize("body, field", [
    ({"messages": "hi there", "user_id": "a", "infer": False, "metadata": {"t": "\ud800"}}, "body.metadata.t"),
    ({"messages": "hi there", "user_id": "a", "infer": False, "metadata": {"x": [1, float("nan")]}},
     "body.metadata.x[1]"),
    ({"messages": "x\udfff", "user_id": "a"}, "body.messages"),
    ({"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\ud800"}], "user_id": "a"},
     "body.messages[1].content"),
    ({"messages": "hi", "user_id": "a\ud800"}, "body.user_id"),
    ({"messages": "hi", "user_id": "a", "infer": False, "metadata": {"t": "a\x00b"}}, "body.metadata.t"),
])
def test_a_write_holding_a_surrogate_or_nan_is_refused_naming_the_field(svc, body, field):
    m, c = svc
    _add(c)
    before = m.store.count()
    r = c.post("/memories", content=_raw(body), headers=H)
    assert r.status_code == 422 and field in json.dumps(r.json()), r.text
    assert m.store.count() == before and m.store.check() == []
    assert len(_all(c)) == 1


def test_an_update_holding_a_surrogate_is_refused_and_the_memory_stays_readable(svc):
    m, c = svc
    mid = _add(c)[0]["id"]
    for body in ({"metadata": {"k": "\ud800"}}, {"text": "moved\udc00"}, {"metadata": {"k": float("inf")}}):
        r = c.put(f"/memories/{mid}", content=_raw(body), headers=H)
        assert r.status_code == 422, r.text
    assert c.get(f"/memories/{mid}", headers=H).json()["memory"] == "Alice lives in Paris."
    assert c.get(f"/memories/{mid}/history", headers=H).status_code == 200
    with pytest.raises(ValueError, match="metadata.k"):   # the Python API refuses it the same way
        m.update(mid, metadata={"k": "\ud800"})


@pytest.mark.parametrize("path, body, field", [
    ("/search", {"query": "q", "user_id": "alice", "threshold": float("nan")}, "body.threshold"),
    ("/search", {"query": "q", "user_id": "alice", "top_k": float("inf")}, "body.top_k"),
    ("/search", {"query": "where\ud800", "user_id": "alice"}, "body.query"),
    ("/answer", {"question": "where\ud800", "user_id": "alice"}, "body.question"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x\ud800"}]}, "body.messages[0].content"),
    ("/v1/embeddings", {"input": ["ok", "\udfff"]}, "body.input[1]"),
    ("/search", {"query": "q", "user_id": "alice", "filters": {"k": {"gt": float("-inf")}}}, "body.filters.k.gt"),
])
def test_rejected_values_get_422_naming_the_field_not_a_500(svc, path, body, field):
    # FastAPI's own 422 copies the input into the response, which cannot hold these values: 500.
    m, c = svc
    r = c.post(path, content=_raw(body), headers=H)
    assert r.status_code == 422, r.text
    assert field in json.dumps(r.json()), r.text


def test_rows_written_before_the_checks_stay_readable_also_after_a_restart(tmp_path, engine):
    # A bad row (as an older version stored it) must not take its scope down.
    path = tmp_path / "m.db"
    m = _memory(path, engine)
    c = TestClient(create_app(m, api_key=KEY), raise_server_exceptions=False)
    ids = [r["id"] for r in _add(c, [{"role": "user", "content": "Alice lives in Paris."},
                                      {"role": "user", "content": "Alice has a cat."}])]
    m.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE memories SET metadata = ? WHERE id = ?", ('{"t": "\\ud800", "n": NaN}', ids[0]))
    db.execute("UPDATE memories SET metadata = ?, embedding = ? WHERE id = ?", ("{not json", b"\x00" * 5, ids[1]))
    db.commit()
    db.close()
    m = _memory(path, engine)
    c = TestClient(create_app(m, api_key=KEY), raise_server_exceptions=False)
    assert len(m.store.check()) == 3    # named by the integrity check ...
    items = _all(c)                      # ... and still served, repaired
    assert [i["id"] for i in items] == ids
    assert items[0]["metadata"] == {"t": "\ufffd", "n": None}
    assert items[1]["metadata"] == {"unreadable": "{not json"}
    for r in (c.get(f"/memories/{ids[0]}", headers=H),
              c.post("/search", json={"query": "Where does Alice live?", "user_id": "alice"}, headers=H),
              c.post("/answer", json={"question": "Where does Alice live?", "user_id": "alice"}, headers=H)):
        assert r.status_code == 200, r.text
    m.close()


def test_a_streamed_body_over_the_limit_is_413(tmp_path, engine):
    m = _memory(tmp_path / "m.db", engine)
    c = TestClient(create_app(m, api_key=KEY, max_body_bytes=4096), raise_server_exceptions=False)

    def chunks():   # no content-length: sent chunked
        yield b'{"messages": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'", "user_id": "a"}'

    r = c.post("/memories", content=chunks(), headers=H)
    assert r.status_code == 413 and "4096" in r.json()["detail"]
    small = c.post("/memories", content=iter([b'{"messages": "Bob likes tea.", ', b'"user_id": "a", "infer": false}']),
                   headers=H)
    assert small.status_code == 200, small.text    # a streamed body under the limit still arrives whole
    assert m.store.count() == 1
    m.close()


def test_docs_and_schema_need_the_key_when_one_is_set(tmp_path, engine):
    m = _memory(tmp_path / "m.db", engine)
    keyed = TestClient(create_app(m, api_key=KEY), raise_server_exceptions=False)
    assert keyed.get("/openapi.json").status_code == 401
    assert keyed.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()["paths"]
    assert keyed.get("/docs").status_code == 404 and keyed.get("/redoc").status_code == 404
    open_ = TestClient(create_app(m), raise_server_exceptions=False)   # no key: loopback only, docs on
    assert open_.get("/docs").status_code == 200 and open_.get("/openapi.json").status_code == 200
    m.close()


# --------------------------------------------------------------------------- random bodies

_STRANGE = st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e", "é" * 3, "💾", "", " ", "<|im_start|>"])
_TEXT = st.one_of(st.text(max_size=40), _STRANGE, st.builds(lambda n: "y" * n, st.integers(10_000, 300_000)))
_NUM = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                 st.sampled_from([0, 1, -1, 10**6]))
_LEAF = st.one_of(st.none(), st.booleans(), _NUM, _TEXT)
_JSON = st.recursive(_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(_TEXT, inner, max_size=4)), max_leaves=12)


def _deep(n: int):
    out = "x"
    for i in range(n):
        out = [out] if i % 2 else {"k": out}
    return out


# A valid body per route (so mutations reach the handlers, not only the parser).
_VALID = {
    ("POST", "/memories"): {"messages": "Alice moved to Porto.", "user_id": "alice", "infer": True},
    ("POST", "/search"): {"query": "Where does Alice live?", "user_id": "alice"},
    ("POST", "/answer"): {"question": "Where does Alice live?", "user_id": "alice"},
    ("PUT", "/memories/{memory_id}"): {"text": "Alice lives in Lisbon."},
    ("POST", "/v1/chat/completions"): {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                       "temperature": 0},
    ("POST", "/v1/embeddings"): {"input": "hello"},
}


def _body(draw, method, path):
    valid = _VALID.get((method, path))
    kind = draw(st.integers(0, 3))
    if valid is None or kind == 0:
        return draw(st.one_of(_JSON, st.just(_deep(draw(st.integers(30, 2000))))))
    body = dict(valid)
    if kind == 1:                                         # one field replaced
        body[draw(st.sampled_from(sorted(body) + ["metadata", "filters", "top_k", "threshold", "limit"]))] = draw(_JSON)
    elif kind == 2:                                       # metadata / filters of any JSON
        body[draw(st.sampled_from(["metadata", "filters"]))] = draw(st.dictionaries(_TEXT, _JSON, max_size=3))
    return body


@st.composite
def _requests(draw, routes):
    method, path = draw(st.sampled_from(routes))
    url = path.replace("{memory_id}", draw(st.one_of(st.just("ID"), st.text(min_size=1, max_size=20).map(
        lambda s: urllib.parse.quote(s.encode("utf-8", "surrogatepass"), safe="")))))
    params = draw(st.dictionaries(st.sampled_from(["user_id", "agent_id", "run_id", "limit"]),
                                  st.one_of(st.text(max_size=8), st.sampled_from(["alice", "-1", "0", "1e9", "NaN"])),
                                  max_size=3))
    raw = _raw(_body(draw, method, path)) if method in ("POST", "PUT") else b""
    if method in ("POST", "PUT") and draw(st.integers(0, 9)) == 0:   # not JSON at all
        raw = draw(st.binary(max_size=64))
    return method, url, params, raw


def _routes(app):
    """Every route the app serves (taken from the app itself), but /reset (it empties the store)."""
    out = []
    for r in app.routes:
        for method in sorted(getattr(r, "methods", None) or ()):
            if method in ("GET", "POST", "PUT", "DELETE") and r.path != "/reset":
                out.append((method, r.path))
    return sorted(set(out))


def test_random_bodies_on_every_route_get_2xx_or_4xx_and_the_store_stays_sound(store_spec, engine):
    m = _memory(store_spec, engine)
    app = create_app(m, api_key=KEY, max_body_bytes=1 << 20)
    c = TestClient(app, raise_server_exceptions=False)
    routes = _routes(app)
    assert ("POST", "/memories") in routes and ("PUT", "/memories/{memory_id}") in routes
    mid = _add(c, "Alice lives in Paris. Alice works as a nurse.")[0]["id"]
    seen = set()

    @settings(max_examples=250, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_requests(routes))
    def run(req):
        method, url, params, raw = req
        url = url.replace("/ID", f"/{mid}")
        r = c.request(method, url, params=params, content=raw or None, headers=H)
        seen.add((method, r.status_code // 100))
        assert r.status_code < 500, (method, url, params, raw[:300], r.status_code, r.text[:300])
        json.loads(r.content.decode("utf-8"))   # strict UTF-8 JSON whatever happened

    run()
    assert m.store.check() == []
    assert {s for _, s in seen} >= {2, 4}   # both good and bad requests were reached
    m.close()
