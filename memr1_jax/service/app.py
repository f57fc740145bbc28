"""The HTTP face of ``Memory``: Mem0's REST routes and OpenAI-compatible ``/v1`` endpoints.

``create_app(memory, api_key=... | keys=...)`` builds the FastAPI app that ``python -m
memr1_jax.serve`` runs under uvicorn. Routes (as Mem0's server): POST /memories, GET /memories,
DELETE /memories, GET / PUT / DELETE /memories/{id}, GET /memories/{id}/history, POST /search,
POST /reset; plus POST /memories/batch, POST /memories/{id}/revert, DELETE
/memories?source_request=ID, GET /jobs/{id} (``"async_mode": true`` adds), POST /answer (the
Answer Agent), GET /health, and /v1/chat/completions, /v1/embeddings, /v1/models over the
service's model and encoder (concurrent chat requests are batched by the Engine). With a key
every route but /health needs it, as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``
(Mem0's client sends ``Token KEY``: accepted too); a key bound to scopes (``service.keys``) gets
403 outside them and 404 for another scope's memory id.

Bad requests get 4xx with a ``detail`` naming the field: 401 without the key, 404 for an
unknown memory id, 413 for a body over ``max_body_bytes`` (declared or streamed), 422 for
malformed JSON, fields of the wrong type, text that is not valid Unicode (a lone surrogate) and
``NaN`` / ``Infinity`` anywhere in a body, 400 for values Memory rejects. A handler never writes
before validating; a 422 never echoes the input back (it may be what cannot be serialised), and
every response is strict UTF-8 JSON whatever a stored row holds. With a key, ``/openapi.json``
needs it too and the interactive ``/docs`` are off.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Annotated, Any, Literal

import json

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from memr1_jax.sampling.sampler import SamplingConfig
from memr1_jax.service.keys import ADMIN, Grant, KeyRing
from memr1_jax.service.memory import Memory, MemoryNotFound
from memr1_jax.service.values import check_value, readable

MAX_BODY_BYTES = 1 << 20


class SafeJSONResponse(JSONResponse):
    """Strict JSON (no NaN) in UTF-8; content that cannot be (a lone surrogate, a non-finite
    number from an old row) is repaired by ``values.readable`` instead of failing the response."""

    def render(self, content) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except (ValueError, UnicodeEncodeError):
            return json.dumps(readable(content), ensure_ascii=False, allow_nan=False,
                              separators=(",", ":")).encode("utf-8")


class _Body(BaseModel):
    # extra: Mem0 / OpenAI clients send fields we do not use. strict: a value is what the schema
    # says (true is not a temperature, "5" not a top_k); JSON numbers still fill float fields.
    model_config = ConfigDict(extra="ignore", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _plain_json(cls, data):
        check_value(data, "body")   # before any field: a NaN or a surrogate is named, never stored
        return data


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=200_000)
    name: str | None = None


class Scope(_Body):
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None

    def ids(self) -> dict:
        return {k: v for k, v in (("user_id", self.user_id), ("agent_id", self.agent_id),
                                  ("run_id", self.run_id)) if v is not None}


def invalid(loc: tuple, msg: str) -> RequestValidationError:
    """A 422 in the shape the schema declares for it (``detail``: [{loc, msg, type}])."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


def query_scope(user_id: str | None, agent_id: str | None, run_id: str | None) -> dict:
    """Scope ids given as query parameters, checked as a body's are: 422 naming the parameter
    (a NUL in ``?agent_id=`` was a 500)."""
    ids = {k: v for k, v in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id)) if v is not None}
    for name, value in ids.items():
        try:
            check_value(value, f"query.{name}")
        except ValueError as e:
            raise invalid(("query", name), str(e)) from None
    return ids


class MemoryCreate(Scope):
    messages: list[Message] | str = Field(min_length=1)
    metadata: dict[str, Any] | None = None
    infer: bool = True
    timestamp: str | float | None = None
    prompt: str | None = None
    async_mode: bool = False     # Mem0's name: 202 with a job id at once, applied in the background


class BatchAdd(Scope):
    op: Literal["add"]
    messages: list[Message] | str = Field(min_length=1)
    metadata: dict[str, Any] | None = None
    timestamp: str | float | None = None
    infer: Literal[False] = False   # a batch stores messages as given: all or nothing, no model in between


class BatchUpdate(_Body):
    op: Literal["update"]
    memory_id: str = Field(min_length=1)
    text: str | None = None
    memory: str | None = None
    metadata: dict[str, Any] | None = None


class BatchDelete(_Body):
    op: Literal["delete"]
    memory_id: str = Field(min_length=1)


MAX_BATCH_ITEMS = 1000


class BatchRequest(_Body):
    items: list[Annotated[BatchAdd | BatchUpdate | BatchDelete, Field(discriminator="op")]] = Field(
        min_length=1, max_length=MAX_BATCH_ITEMS)


class SearchRequest(Scope):
    query: str = Field(min_length=1, max_length=20_000)
    filters: dict[str, Any] | None = None
    top_k: int | None = Field(None, ge=1, le=10_000)
    limit: int | None = Field(None, ge=1, le=10_000)     # Mem0's older name for top_k
    threshold: float | None = Field(None, ge=-1.0, le=1.0)


class MemoryUpdate(_Body):
    text: str | None = None
    memory: str | None = None     # Mem0's REST clients send the new text under one of these
    data: str | None = None
    metadata: dict[str, Any] | None = None


class AnswerRequest(Scope):
    question: str = Field(min_length=1, max_length=20_000)
    filters: dict[str, Any] | None = None
    top_k: int | None = Field(None, ge=1, le=1000)


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Body):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = 1
    stream: bool = False


class EmbeddingRequest(_Body):
    input: str | list[str]
    model: str | None = None
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"


class _LimitBody:
    """ASGI middleware: 413 once a request body passes ``limit`` bytes, declared or streamed.

    The body is read here, up to the limit, before the app sees it: raised inside the app's own
    read, the error would reach FastAPI's body parser and come back as 400."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = JSONResponse({"detail": f"request body over {self.limit} bytes"}, 413)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await too_large(scope, receive, send)
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":      # the client went away
                return
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                return await too_large(scope, receive, send)
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()              # after the body: wait for a disconnect

        await self.app(scope, replay, send)


def _authenticate(keys: KeyRing):
    """The request's Grant: what its key may do (every scope without keys: loopback only)."""
    def check(request: Request) -> Grant:
        if not keys:
            return ADMIN
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and " " in auth:
            kind, _, value = auth.partition(" ")
            if kind.lower() in ("bearer", "token"):
                given = value.strip()
        grant = keys.grant(given)
        if grant is None:
            raise HTTPException(401, "missing or wrong API key (X-API-Key or Authorization: Bearer)",
                                headers={"WWW-Authenticate": "Bearer"})
        return grant
    return check


def _need(grant: Grant, scope: dict, write: bool = False) -> None:
    """403 unless the key may use ``scope`` (and write, for a write)."""
    if not grant.allows(scope):
        raise HTTPException(403, grant.refusal(scope))
    if write and not grant.write:
        raise HTTPException(403, f"key {grant.name!r} is read-only")


def _validation_error(request: Request, exc: RequestValidationError) -> SafeJSONResponse:
    """422 naming each field; FastAPI's default copies the input into the response, which fails
    (500) for exactly the inputs refused here, so the input is left out."""
    detail = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid"))
        detail.append({"loc": [p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
                       "msg": msg.removeprefix("Value error, "), "type": str(err.get("type", ""))})
    return SafeJSONResponse(readable({"detail": detail}), status_code=422)


def _http_error(request: Request, exc: StarletteHTTPException) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": readable(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


def _call(fn, *args, **kw):
    """Memory's errors as HTTP errors: unknown id 404, rejected value 400."""
    try:
        return fn(*args, **kw)
    except MemoryNotFound as e:
        raise HTTPException(404, str(e)) from None
    except (ValueError, TypeError) as e:
        raise HTTPException(400, str(e)) from None


def create_app(memory: Memory, *, api_key: str | None = None, keys: KeyRing | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, model_name: str | None = None,
               encoder_name: str | None = None) -> FastAPI:
    """``api_key``: one key for every scope; ``keys``: keys bound to scopes (``service.keys``)."""
    keys = keys if keys is not None else KeyRing.load(api_key)
    auth = Depends(_authenticate(keys))
    # With a key the schema needs it too; the Swagger page cannot send one, so it is off.
    app = FastAPI(title="memr1-jax memory service",
                  description="Mem0-compatible memory API driven by the Memory-R1 agents",
                  default_response_class=SafeJSONResponse, docs_url=None if keys else "/docs",
                  redoc_url=None if keys else "/redoc", openapi_url=None if keys else "/openapi.json")
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    if keys:
        @app.get("/openapi.json", include_in_schema=False)
        def openapi(grant: Grant = auth):
            return app.openapi()
    model_name = model_name or memory.config.llm
    encoder_name = encoder_name or memory.config.encoder
    started = time.time()

    def scoped(req: Scope, filters: dict | None) -> dict:
        return {**(filters or {}), **req.ids()}

    def owned(grant: Grant, memory_id: str, write: bool = False) -> None:
        """404 for an id the key may not see (as if it did not exist), 403 for a read-only key's write."""
        scope = memory.store.scope_of(memory_id)
        if scope is None or not grant.allows(scope):
            raise HTTPException(404, f"Memory with id {memory_id} not found")
        _need(grant, scope, write)

    def request_id(request: Request) -> str:
        return request.state.request_id

    @app.middleware("http")
    async def name_the_request(request: Request, call_next):
        """Every request has an id (the client's X-Request-ID, else a new one), recorded in the
        source of what it changes and returned in the X-Request-ID response header."""
        given = request.headers.get("x-request-id", "")
        request.state.request_id = given if 0 < len(given) <= 128 and given.isprintable() else str(uuid.uuid4())
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    @app.get("/health")
    def health():
        out = {"status": "ok", "memories": memory.store.count(), "model": model_name, "encoder": encoder_name,
               "auth": bool(keys), "uptime_s": round(time.time() - started, 1), "jobs": memory.store.job_counts()}
        batches = getattr(memory.loaded_llm, "batches", None)
        if batches is not None:   # how the Engine grouped the requests it served
            out["generation_batches"], out["largest_batch"] = len(batches), max(batches, default=0)
        return out

    @app.post("/memories")
    def add_memory(req: MemoryCreate, request: Request, grant: Grant = auth):
        _need(grant, req.ids(), write=True)
        msgs = req.messages if isinstance(req.messages, str) else [m.model_dump(exclude_none=True) for m in req.messages]
        out = _call(memory.add, msgs, metadata=req.metadata, infer=req.infer, timestamp=req.timestamp,
                    prompt=req.prompt, request_id=request_id(request), async_mode=req.async_mode, **req.ids())
        return SafeJSONResponse(out, status_code=202) if req.async_mode else out

    @app.post("/memories/batch")
    def batch(req: BatchRequest, request: Request, grant: Grant = auth):
        for i, item in enumerate(req.items):
            if isinstance(item, BatchAdd):
                _need(grant, item.ids(), write=True)
            else:
                try:   # an id outside the key's scopes is one that does not exist: 404, as on PUT / DELETE
                    owned(grant, item.memory_id, write=True)
                except HTTPException as e:
                    raise HTTPException(e.status_code, f"items[{i}].memory_id: {e.detail} (nothing was applied)") from None
        items = [item.model_dump(exclude_none=True) for item in req.items]
        for item in items:
            if item["op"] == "update":
                item["text"] = item.pop("text", None) or item.pop("memory", None)
        try:
            return memory.batch(items, request_id=request_id(request))
        except MemoryNotFound as e:   # deleted since the check above
            raise HTTPException(404, str(e)) from None
        except ValueError as e:   # a bad item: named by its index, nothing applied
            raise invalid(("body", "items"), str(e)) from None

    @app.get("/jobs/{job_id}")
    def job(job_id: str, grant: Grant = auth):
        out = memory.job(job_id)
        if out is None or not grant.allows(out):
            raise HTTPException(404, f"job {job_id} not found")
        return out

    @app.get("/memories")
    def get_all(user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None,
                limit: int = 100, grant: Grant = auth):
        ids = query_scope(user_id, agent_id, run_id)
        if not 1 <= limit <= 10_000:
            raise invalid(("query", "limit"), "limit must be in [1, 10000]")
        _need(grant, ids)
        return _call(memory.get_all, filters=ids, top_k=limit)

    @app.delete("/memories")
    def delete_all(request: Request, user_id: str | None = None, agent_id: str | None = None,
                   run_id: str | None = None, source_request: str | None = None, grant: Grant = auth):
        if source_request is not None:   # what one request produced (only the key's scopes)
            if not grant.write:
                raise HTTPException(403, f"key {grant.name!r} is read-only")
            return _call(memory.delete_by_request, source_request, allowed=grant.allows,
                         request_id=request_id(request))
        ids = query_scope(user_id, agent_id, run_id)
        _need(grant, ids, write=True)
        return _call(memory.delete_all, request_id=request_id(request), **ids)

    @app.get("/memories/{memory_id}")
    def get_memory(memory_id: str, grant: Grant = auth):
        owned(grant, memory_id)
        item = memory.get(memory_id)
        if item is None:
            raise HTTPException(404, f"Memory with id {memory_id} not found")
        return item

    @app.put("/memories/{memory_id}")
    def update_memory(memory_id: str, req: MemoryUpdate, request: Request, grant: Grant = auth):
        owned(grant, memory_id, write=True)
        text = next((t for t in (req.text, req.memory, req.data) if t is not None), None)
        return _call(memory.update, memory_id, text=text, metadata=req.metadata, request_id=request_id(request))

    @app.delete("/memories/{memory_id}")
    def delete_memory(memory_id: str, request: Request, grant: Grant = auth):
        owned(grant, memory_id, write=True)
        return _call(memory.delete, memory_id, request_id=request_id(request))

    @app.get("/memories/{memory_id}/history")
    def history(memory_id: str, grant: Grant = auth):
        owned(grant, memory_id)
        return memory.history(memory_id)

    @app.post("/memories/{memory_id}/revert")
    def revert(memory_id: str, request: Request, grant: Grant = auth):
        owned(grant, memory_id, write=True)
        return _call(memory.revert, memory_id, request_id=request_id(request))

    @app.post("/search")
    def search(req: SearchRequest, grant: Grant = auth):
        filters = scoped(req, req.filters)
        _need(grant, filters)
        top_k = req.top_k or req.limit or 20
        return _call(memory.search, req.query, top_k=top_k, filters=filters, threshold=req.threshold)

    @app.post("/reset")
    def reset(grant: Grant = auth):
        if not grant.everything:
            raise HTTPException(403, f"key {grant.name!r} is bound to scopes; /reset needs the key for every scope")
        memory.reset()
        return {"message": "All memories reset"}

    @app.post("/answer")
    def answer(req: AnswerRequest, grant: Grant = auth):
        filters = scoped(req, req.filters)
        _need(grant, filters)
        return _call(memory.answer, req.question, filters=filters, top_k=req.top_k)

    # ------------------------------------------------------------ OpenAI-compatible
    @app.get("/v1/models")
    def models(grant: Grant = auth):
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "memr1-jax"},
                                           {"id": encoder_name, "object": "model", "owned_by": "memr1-jax"}]}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest, grant: Grant = auth):   # the model only: no memory is read
        if req.stream:
            raise HTTPException(400, "stream=true is not supported; send stream=false")
        if req.n != 1:
            raise HTTPException(400, f"n={req.n}: only n=1 is supported")
        engine = memory.llm
        if not hasattr(engine, "chat_ids"):
            raise HTTPException(503, "this service's model is not behind a batching Engine")
        ids = engine.chat_ids([m.model_dump() for m in req.messages])
        limit = req.max_completion_tokens or req.max_tokens or 256
        room = engine.max_context - len(ids)
        if room < 1:
            raise HTTPException(400, f"prompt of {len(ids)} tokens fills the model's context of {engine.max_context}")
        sampling = SamplingConfig(temperature=req.temperature, top_p=req.top_p)
        try:
            g = engine.submit(ids, min(limit, room), sampling).result()
        except Exception as e:   # the batch this request ran in failed; the engine serves on
            raise HTTPException(503, f"generation failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                             "finish_reason": "stop" if g.stopped else "length"}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(g.completion_ids),
                          "total_tokens": len(ids) + len(g.completion_ids)}}

    @app.post("/v1/embeddings")
    def embeddings(req: EmbeddingRequest, grant: Grant = auth):
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts or len(texts) > 2048:
            raise HTTPException(400, f"input must hold 1 to 2048 strings, got {len(texts)}")
        vecs = memory.embed(texts)
        if req.dimensions is not None and req.dimensions != vecs.shape[1]:
            raise HTTPException(400, f"dimensions={req.dimensions}: {encoder_name} embeds into {vecs.shape[1]}")

        def enc(v: np.ndarray):
            if req.encoding_format == "base64":
                return base64.b64encode(v.astype("<f4").tobytes()).decode()
            return [float(x) for x in v]

        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "model": encoder_name,
                "data": [{"object": "embedding", "index": i, "embedding": enc(v)} for i, v in enumerate(vecs)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    if max_body_bytes:
        app.add_middleware(_LimitBody, limit=max_body_bytes)
    return app
