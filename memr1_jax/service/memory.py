"""``memr1_jax.Memory``: Mem0's ``Memory`` API with the Memory-R1 agents behind it.

Code written against Mem0 2.x ports by changing the import::

    from memr1_jax import Memory
    m = Memory()                                   # or Memory.from_config({...})
    m.add([{"role": "user", "content": "I moved to Lisbon"}], user_id="alice")
    m.search("where does alice live?", filters={"user_id": "alice"})
    m.answer("Where does Alice live?", filters={"user_id": "alice"})

``add`` turns the user's messages into facts (:mod:`memr1_jax.agents.message_facts`), shows
each step of them with the memories most related to it to the Memory Manager and applies its
ADD / UPDATE / DELETE / NONE operations, where Mem0 2.x only ever adds. ``answer`` is the Answer
Agent: retrieve, distil, answer, or "I don't know" where nothing in memory supports an answer
(:mod:`memr1_jax.agents.grounding`). By default both agents are the trained ones that ship for the
model (``MemoryConfig.agents``). Memories, embeddings and history persist in one SQLite file
(:mod:`memr1_jax.service.store`); the models load on first use, so ``infer=False`` adds,
search and the rest need no LLM.

Shapes follow Mem0 2.x: ``add`` -> ``{"results": [{"id", "memory", "event"}...]}`` (UPDATE
also has ``previous_memory``), ``search`` / ``get_all`` -> ``{"results": [MemoryItem...]}``,
``get`` -> a MemoryItem or None, ``update`` / ``delete`` / ``delete_all`` -> ``{"message"}``,
``history`` -> a list of Mem0's history rows. Unlike Mem0 OSS, ``add`` takes ``timestamp``
(when the messages were said; the memories carry it to the Answer Agent), and ``search`` /
``get_all`` also accept the scope ids as keywords.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import hashlib
import threading
import uuid
from typing import Sequence

import numpy as np

from memr1_jax.agents.grounding import answer_supported
from memr1_jax.agents.message_facts import extract_facts, sentence_facts, speaker_name
from memr1_jax.agents.memory_manager import OUTPUTS, parse_step, render_step, shown_ids, step_constraint
from memr1_jax.agents.prompts import answer_template, extract_answer, format_memory_line, render_answer_prompt
from memr1_jax.memory import Event
from memr1_jax.service.filters import matches, split_filters
from memr1_jax.service.store import SCOPE_KEYS, Row, open_store, text_hash
from memr1_jax.service.values import check_value

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant", "tool")
DONT_KNOW = "I don't know: nothing in memory is about that."


class MemoryNotFound(ValueError):
    """No memory has this id (ValueError, as Mem0 raises)."""

    def __init__(self, memory_id):
        super().__init__(f"Memory with id {memory_id} not found")
        self.memory_id = memory_id


AGENTS_HELP = ("'trained' (the pipeline shipped for llm in memr1_jax/trained/: its Memory Manager and Answer Agent "
               "and their settings), 'untrained' (llm for both) or a pipeline folder (python -m memr1_jax.pipeline's)")
EXTRACTIONS = ("model", "sentences")
# What the service's unset fields are without trained agents (Mem0's prompt shapes).
UNTRAINED = {"manager_output": "json", "constrained": False, "answer_prompt": "full", "answer_k": 30,
             "answer_max_new_tokens": 96, "manager_max_facts": 4}
# The pipeline's run-config settings that map onto service fields.
SETTINGS = {"task.manager.output": "manager_output", "task.manager.constrained": "constrained",
            "task.manager.max_facts_per_step": "manager_max_facts", "task.manager.min_score": "manager_min_score",
            "task.answer.prompt": "answer_prompt", "task.answer.k_per_speaker": "answer_k",
            "task.answer.max_new_tokens": "answer_max_new_tokens"}


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    store: str = "~/.memr1_jax/memory.db"  # an SQLite file, or a postgresql:// URL (several servers, one memory)
    llm: str = "smollm2-135m-instruct"      # the backbone (fact extraction, /v1/chat): registry preset or model folder
    agents: str = "trained"                 # see AGENTS_HELP
    manager_model: str | None = None        # the Memory Manager's weights (a model name or adapter folder); None: the agents'
    answer_model: str | None = None         # the Answer Agent's weights; None: the agents'
    encoder: str = "minilm"                 # "minilm" | "hashing" (tests only)
    manager: str = "llm"                    # "llm" | "add-all" (every extracted fact ADDed, no manager call)
    extraction: str = "sentences"           # "sentences" (the message's, no model) | "model" (the backbone's
                                            # grounded lines, else the sentences); measured: README "Memory service"
    # Unset (None): the agents' training settings, or UNTRAINED's values without trained agents.
    constrained: bool | None = None         # the manager's output decoded under its schema / regex
    manager_output: str | None = None       # "json" (Mem0's list) | "lines" (one operation line per fact)
    answer_k: int | None = None             # memories read by the Answer Agent
    answer_prompt: str | None = None        # "full" (distillation) | "compact" | "mem0" (no distillation)
    answer_max_new_tokens: int | None = None
    answer_min_score: float = 0.5           # no memory this similar to the question: "I don't know", no model call
    retrieve_k: int = 5                     # related memories shown per new fact (Mem0: 5)
    manager_min_score: float | None = None  # a memory less similar (cosine) to every new fact is not shown to the
                                            # manager; none shown: ADD, no call (unset: the agents' setting, else
                                            # none: the top retrieve_k, as Mem0; -1 turns a trained floor off)
    manager_max_facts: int | None = None    # facts per manager call (unset: the agents' steps; untrained 4)
    manager_max_new_tokens: int = 256
    extract_max_new_tokens: int = 96
    max_facts: int = 12
    search_threshold: float = 0.1           # Mem0's default minimum score
    batch: int = 8                          # most concurrent requests generated together
    batch_window_s: float = 0.01            # how long the Engine waits for requests to join a batch
    job_lease_s: float = 60.0               # a background add running this long with no result is taken
                                            # over (its worker died); it is applied once either way

    def __post_init__(self):
        if self.manager not in ("llm", "add-all"):
            raise ValueError(f"MemoryConfig.manager={self.manager!r}: expected 'llm' or 'add-all'")
        if self.extraction not in EXTRACTIONS:
            raise ValueError(f"MemoryConfig.extraction={self.extraction!r}: expected one of {EXTRACTIONS}")
        if self.manager_output is not None and self.manager_output not in OUTPUTS:
            raise ValueError(f"MemoryConfig.manager_output={self.manager_output!r}: expected one of {OUTPUTS}")
        if self.answer_prompt not in (None, "mem0"):
            answer_template(self.answer_prompt)
        if self.manager_min_score is not None and not -1.0 <= self.manager_min_score <= 1.0:
            raise ValueError(f"MemoryConfig.manager_min_score={self.manager_min_score}: a cosine, in [-1, 1]")
        for name in ("retrieve_k", "manager_max_facts", "manager_max_new_tokens", "extract_max_new_tokens",
                     "max_facts", "answer_k", "answer_max_new_tokens", "batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"MemoryConfig.{name}={getattr(self, name)}: must be >= 1")

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"MemoryConfig: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def resolved(self) -> tuple["MemoryConfig", str]:
        """This config with the agents' weights and settings filled in, and a one-line note of
        which agents serve (a model without a shipped pipeline falls back to untrained ones)."""
        from memr1_jax.trained import available, load_pipeline, trained_pipeline
        pipe, note = None, ""
        if self.agents == "trained":
            if self.llm in available():
                pipe = trained_pipeline(self.llm)
            else:
                note = (f"no trained Memory-R1 agents ship for {self.llm!r} (there are for {', '.join(available())}): "
                        f"the untrained model manages and answers")
        elif self.agents != "untrained":
            try:
                pipe = load_pipeline(self.agents)
            except ValueError as e:
                raise ValueError(f"MemoryConfig.agents={self.agents!r}: expected {AGENTS_HELP}; {e}") from None
            if pipe.model != self.llm:
                raise ValueError(f"MemoryConfig.agents={self.agents!r}: its agents are over {pipe.model!r}, "
                                 f"llm is {self.llm!r}")
        fill = dict(UNTRAINED)
        if pipe is not None:
            fill.update({field: pipe.settings[key] for key, field in SETTINGS.items() if key in pipe.settings})
        out = dataclasses.replace(
            self, manager_model=self.manager_model or (pipe.memory_manager if pipe else self.llm),
            answer_model=self.answer_model or (pipe.answer_agent if pipe else self.llm),
            **{k: v for k, v in fill.items() if getattr(self, k) is None})
        if not note:
            note = (f"Memory Manager {out.manager_model}, Answer Agent {out.answer_model}" if pipe is not None
                    else f"untrained agents ({self.llm})")
        return out, note


def _messages(messages) -> list[dict]:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    elif isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty string, a message dict or a list of message dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role={role!r}: expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string, got {type(content).__name__}")
        name = m.get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"messages[{i}].name must be a string")
        out.append({"role": role, "content": content, **({"name": name} if name else {})})
    check_value(out, "messages")
    return out


def _timestamp(value) -> str | None:
    """When the messages were said: a string as given, a datetime or a unix time as ISO-8601."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.timezone.utc).isoformat()
        except (OverflowError, OSError, ValueError):   # beyond year 9999 or the platform's time_t
            raise ValueError(f"timestamp {value!r}: not a unix time this machine can represent") from None
    raise ValueError(f"timestamp must be a string, a datetime or a unix time, got {type(value).__name__}")


def _scope(user_id, agent_id, run_id, method: str) -> dict:
    scope = {}
    for k, v in zip(SCOPE_KEYS, (user_id, agent_id, run_id)):
        if v is not None:
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{method}: {k} must be a non-empty string, got {v!r}")
            check_value(v, k)
            scope[k] = v.strip()
    if not scope:
        raise ValueError(f"{method}: one of user_id, agent_id, run_id is required")
    return scope


def _api_source(request_id: str | None, operation: str) -> dict:
    """The source of a change a caller made directly (PUT, DELETE, revert): no manager decided it."""
    check_value(request_id, "request_id")
    return {"request_id": request_id or str(uuid.uuid4()), "operation": operation, "decided_by": "api"}


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _after(view, changes: list[dict], dim: int):
    """(rows, embeddings) of a scope as they will be once ``changes`` are applied: what the next
    manager step of the same add is shown."""
    rows = list(view[0])
    for ch in changes:
        if ch["event"] == "ADD":
            rows.append(Row(ch["id"], ch["memory"], text_hash(ch["memory"]), ch["scope"], ch.get("actor_id"),
                            ch.get("role"), ch.get("metadata") or {}, ch.get("created_at") or "", None,
                            _unit(ch["embedding"])))
        elif ch["event"] == "UPDATE":
            rows = [dataclasses.replace(r, memory=ch["memory"], embedding=_unit(ch["embedding"]))
                    if r.id == ch["id"] else r for r in rows]
        else:
            rows = [r for r in rows if r.id != ch["id"]]
    return rows, (np.stack([r.embedding for r in rows]) if rows else np.zeros((0, dim), np.float32))


class _Locked:
    """An LLM without its own batching queue, called by one thread at a time."""

    def __init__(self, llm):
        self.llm, self._lock = llm, threading.Lock()

    def generate(self, prompts, max_new_tokens: int = 64, **kw):
        with self._lock:
            return self.llm.generate(prompts, max_new_tokens=max_new_tokens, **kw)

    def __getattr__(self, name):   # tokenizer, cfg: what constrained decoding reads
        return getattr(self.llm, name)


class Memory:
    """A memory layer: extraction, the Memory Manager's operations, search, the Answer Agent."""

    def __init__(self, config: MemoryConfig | dict | None = None, *, llm=None, manager_llm=None, answer_llm=None,
                 encoder=None):
        """``llm`` / ``manager_llm`` / ``answer_llm`` (a ChatLLM, a service Engine, or anything with
        ``generate(prompts, max_new_tokens)``) and ``encoder`` replace the models the config names;
        a given ``llm`` also serves as the agents not given."""
        cfg = config if isinstance(config, MemoryConfig) else MemoryConfig.from_dict(config or {})
        self.config, self.agents_note = cfg.resolved()
        if encoder is None:
            from memr1_jax.memory.encoder import make_encoder
            encoder = make_encoder(cfg.encoder)
        self.encoder = encoder
        self._encode_lock = threading.Lock()
        dim = int(self.embed(["probe"]).shape[-1])
        self.store = open_store(cfg.store, dim, encoder=cfg.encoder)
        log.info("memr1_jax.Memory: %s", self.agents_note)
        given = self._wrap(llm)
        self._models = {"llm": given, "manager": self._wrap(manager_llm) or given,
                        "answer": self._wrap(answer_llm) or given}
        self._engines: dict[str, object] = {}   # by model name: agents over the same weights share one
        self._load_lock = threading.Lock()
        self._scope_locks: dict[tuple, threading.Lock] = {}
        self._scope_guard = threading.Lock()
        self._worker = None
        pending = self.store.job_counts()
        if pending.get("queued") or pending.get("running"):
            self._jobs()   # background adds a stopped process left: they run now

    @classmethod
    def from_config(cls, config_dict: dict, **kw) -> "Memory":
        return cls(MemoryConfig.from_dict(config_dict), **kw)

    @staticmethod
    def _wrap(llm):
        if llm is None or getattr(llm, "thread_safe", False):
            return llm
        return _Locked(llm)

    # ----------------------------------------------------------------- models
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._encode_lock:
            return np.asarray(self.encoder(list(texts)), np.float32)

    def _model(self, role: str):
        name = {"llm": self.config.llm, "manager": self.config.manager_model, "answer": self.config.answer_model}[role]
        with self._load_lock:
            if self._models[role] is None:
                if name not in self._engines:
                    self._engines[name] = self._load(name)
                self._models[role] = self._engines[name]
            return self._models[role]

    @property
    def llm(self):
        """The backbone: fact extraction and /v1/chat."""
        return self._model("llm")

    @property
    def loaded_llm(self):
        """The backbone if loaded (or given), else None: never loads."""
        return self._models["llm"]

    @property
    def manager_llm(self):
        return self._model("manager")

    @property
    def answer_llm(self):
        return self._model("answer")

    def _load(self, name: str):
        from memr1_jax.agents.llm import ChatLLM
        from memr1_jax.service.engine import Engine
        return Engine(ChatLLM.from_registry(name, batch_size=self.config.batch), window_s=self.config.batch_window_s)

    @contextlib.contextmanager
    def _scope_lock(self, scope: dict):
        # One add at a time per scope: the manager decides on the memories it was shown.
        key = tuple(scope.get(k) for k in SCOPE_KEYS)
        with self._scope_guard:
            lock = self._scope_locks.setdefault(key, threading.Lock())
        with lock:
            yield

    # -------------------------------------------------------------------- add
    def add(self, messages, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None,
            metadata: dict | None = None, timestamp=None, infer: bool = True, prompt: str | None = None,
            request_id: str | None = None, async_mode: bool = False) -> dict:
        """The messages' memories: extracted, decided by the Memory Manager and applied in one
        transaction. Every change records its ``source`` (``request_id``, the messages, who
        decided; ``request_id`` names the call, default a new uuid). ``async_mode``: queued in the store and applied by a background worker; returns
        ``{"job_id", "status": "queued"}`` at once (``job(job_id)`` tells how it went)."""
        msgs = _messages(messages)
        scope = _scope(user_id, agent_id, run_id, "add")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError(f"add: metadata must be a dict, got {type(metadata).__name__}")
        for name, value in (("metadata", metadata), ("prompt", prompt), ("timestamp", timestamp),
                            ("request_id", request_id)):
            check_value(value, name)
        rid = request_id or str(uuid.uuid4())
        request = {"messages": msgs, "scope": scope, "metadata": dict(metadata or {}), "timestamp": _timestamp(timestamp),
                   "infer": bool(infer), "prompt": prompt, "request_id": rid}
        if async_mode:
            job_id = self.store.enqueue(scope, request)
            self._jobs().wake()
            return {"job_id": job_id, "status": "queued", "request_id": rid}
        return self._add(request, lambda changes, fmt: fmt(self.store.apply(changes, missing="skip")))

    def _add(self, request: dict, apply):
        """Plans the request's changes under its scope's lock and hands them to ``apply(changes,
        format)`` (the store's, or a job's: changes and "done" in one transaction)."""
        msgs, scope, rid = request["messages"], request["scope"], request["request_id"]
        base = {"scope": scope, "metadata": request["metadata"], "created_at": request["timestamp"]}

        def fmt(results):
            by_id = {ch.get("id"): ch for ch in changes}
            for r in results:   # infer=False: as Mem0's results
                ch = by_id.get(r["id"])
                if ch is not None and ch.get("source", {}).get("decided_by") == "infer=false":
                    r.update(actor_id=ch.get("actor_id"), role=ch.get("role"))
            return {"results": results}

        with self._scope_lock(scope):
            changes = self._plan(msgs, scope, base, request, rid)
            return apply(changes, fmt)

    def _source(self, rid: str, msgs: list[dict], when, decided_by: str) -> dict:
        """Where a change came from: the request, its messages (position, role, sha256, text
        up to 1,000 characters, when said) and who decided it."""
        return {"request_id": rid, "decided_by": decided_by,
                "messages": [{"index": i, "role": m["role"], "sha256": hashlib.sha256(m["content"].encode()).hexdigest(),
                              "text": m["content"][:1000], "timestamp": when} for i, m in msgs]}

    def _plan(self, msgs: list[dict], scope: dict, base: dict, request: dict, rid: str) -> list[dict]:
        if not request["infer"]:
            kept = [(i, m) for i, m in enumerate(msgs) if m["role"] != "system" and m["content"].strip()]
            if not kept:
                return []
            vecs = self.embed([m["content"] for _, m in kept])
            return [dict(base, event="ADD", id=str(uuid.uuid4()), memory=m["content"], embedding=v, role=m["role"],
                         actor_id=m.get("name"), source={**self._source(rid, [(i, m)], base["created_at"],
                                                                          "infer=false"), "operation": "ADD"})
                    for (i, m), v in zip(kept, vecs)]
        facts = self._extract(msgs, scope, request["prompt"])
        if not facts:
            return []
        said = [(i, m) for i, m in enumerate(msgs) if m["role"] == "user" and m["content"].strip()]
        view = self.store.scope_index(scope)
        changes, step = [], self.config.manager_max_facts
        # In the steps the manager was trained on: each sees the memories the last one left (a view
        # of the store with the earlier steps' changes), and all of them are applied at once.
        for i in range(0, len(facts), step):
            planned = self._decide(facts[i:i + step], scope, base, view,
                                   lambda who: self._source(rid, said, base["created_at"], who))
            view = _after(view, planned, self.store.dim)
            changes += planned
        return changes

    def _speaker(self, msgs: list[dict], scope: dict) -> str:
        for m in msgs:
            if m["role"] == "user" and m.get("name"):
                return speaker_name(m["name"])
        return speaker_name(scope.get("user_id") or scope.get("agent_id"))

    def _extract(self, msgs: list[dict], scope: dict, instructions: str | None) -> list[str]:
        """The facts of the user's messages (``agents.message_facts``): the backbone's grounded
        lines, else the messages' own sentences, so nothing said is silently dropped."""
        cfg, speaker = self.config, self._speaker(msgs, scope)
        message = "\n".join(m["content"].strip() for m in msgs if m["role"] == "user" and m["content"].strip())
        if not message:
            return []
        if cfg.extraction == "sentences":
            return sentence_facts(message, speaker, cfg.max_facts)
        return extract_facts(self.llm, [(message, speaker)], cfg.max_facts, cfg.extract_max_new_tokens,
                             instructions)[0]

    def _decide(self, facts: list[str], scope: dict, base: dict, view, source) -> list[dict]:
        """The Memory Manager's step: related memories + facts -> prompt -> operations -> changes,
        over ``view`` (rows, embeddings); ``source(decided_by)`` is each change's provenance."""
        cfg = self.config
        rows, mat = view
        fact_vecs = self.embed(facts)
        related = []
        if rows and cfg.manager == "llm":
            scores = fact_vecs @ mat.T
            top = np.argsort(-scores, axis=1, kind="stable")[:, :min(cfg.retrieve_k, len(rows))]
            related = [rows[j] for j in shown_ids(top, np.take_along_axis(scores, top, 1), cfg.manager_min_score)]
        if cfg.manager == "add-all" or not related:
            # With no memory shown there is nothing to update or delete: every fact is new. (The
            # shipped 135M manager answers NONE to a fact on an empty bank at times: it was never
            # trained on one, its steps all start from a snapshot of earlier sessions.)
            ops = [(Event.ADD, None, f) for f in facts]
            who = "add-all" if cfg.manager == "add-all" else "no related memory: added"
        else:
            who = f"memory-manager:{cfg.manager_model or cfg.llm}"
            prompt, id_map = render_step([{"id": i, "text": r.memory} for i, r in enumerate(related)], facts,
                                         cfg.manager_output)
            llm = self.manager_llm
            kw = {}
            if cfg.constrained:
                kw["constraints"] = [step_constraint(llm, len(id_map), len(facts), cfg.manager_output)]
            completion = llm.generate([prompt], max_new_tokens=cfg.manager_max_new_tokens, **kw)[0].text
            parsed = parse_step(completion, facts, id_map, cfg.manager_output)
            if parsed.problems:
                log.info("memory manager output for %s: %s", scope, "; ".join(parsed.problems))
            ops = [(op.event, op.target_id, op.text) for op in parsed.ops]
        live = {text_hash(r.memory) for r in rows}
        changes, texts = [], []
        for event, target, text in ops:
            text = text.strip() if isinstance(text, str) else ""
            if event in (Event.ADD, Event.UPDATE) and not text:
                continue               # as the bank does: no memory without text
            if event == Event.ADD:
                h = text_hash(text)
                if h in live:          # Mem0's hash dedup: the same memory twice is not kept twice
                    continue
                live.add(h)
                changes.append(dict(base, event="ADD", id=str(uuid.uuid4()), memory=text, role="user",
                                    source={**source(who), "operation": "ADD"}))
                texts.append(text)
            elif event == Event.UPDATE:
                changes.append({"event": "UPDATE", "id": related[target].id, "memory": text,
                                "source": {**source(who), "operation": "UPDATE"}})
                texts.append(text)
            elif event == Event.DELETE:
                changes.append({"event": "DELETE", "id": related[target].id,
                                "source": {**source(who), "operation": "DELETE"}})
        if texts:
            vecs = iter(self.embed(texts))
            for ch in changes:
                if ch["event"] in ("ADD", "UPDATE"):
                    ch["embedding"] = next(vecs)
        return changes

    # ------------------------------------------------------------------ reads
    def _filters(self, filters, kw: dict, method: str) -> tuple[dict, dict]:
        merged = dict(filters or {})
        for k in SCOPE_KEYS:
            if kw.get(k) is not None:
                merged[k] = kw.pop(k)
        if kw:
            raise TypeError(f"{method}() got unexpected keyword arguments {sorted(kw)}")
        check_value(merged, "filters")
        return split_filters(merged, method)

    def search(self, query: str, *, top_k: int = 20, filters: dict | None = None, threshold: float | None = None,
               **kw) -> dict:
        """The ``top_k`` memories of the scope most similar to ``query`` (cosine, scores >= threshold)."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("search: query must be a non-empty string")
        check_value(query, "query")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"search: top_k must be a positive integer, got {top_k!r}")
        threshold = self.config.search_threshold if threshold is None else float(threshold)
        if not -1.0 <= threshold <= 1.0:   # NaN too: every comparison with it is false
            raise ValueError(f"search: threshold must be a cosine in [-1, 1], got {threshold}")
        scope, cond = self._filters(filters, kw, "search")
        return {"results": [row.as_item(score) for row, score in self._ranked(query, scope, cond, top_k, threshold)]}

    def _ranked(self, query: str, scope: dict, cond: dict, top_k: int, threshold: float):
        """Exact cosine search over the scope (its matrix cached by the store until a write)."""
        rows, mat = self.store.scope_index(scope)
        if cond:
            keep = [i for i, r in enumerate(rows) if matches(r, cond)]
            rows, mat = [rows[i] for i in keep], mat[keep]
        if not rows:
            return []
        q = self.embed([query])[0]
        scores = mat @ _unit(q)
        k = min(top_k, len(rows))
        top = np.argpartition(-scores, k - 1)[:k]
        order = top[np.argsort(-scores[top], kind="stable")]
        return [(rows[i], float(scores[i])) for i in order if scores[i] >= threshold]

    def get(self, memory_id: str) -> dict | None:
        row = self.store.get(memory_id)
        return row.as_item() if row else None

    def get_all(self, *, filters: dict | None = None, top_k: int = 20, **kw) -> dict:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"get_all: top_k must be a positive integer, got {top_k!r}")
        scope, cond = self._filters(filters, kw, "get_all")
        rows = [r for r in self.store.rows(scope) if matches(r, cond)]
        return {"results": [r.as_item(with_score=False) for r in rows[:top_k]]}

    def history(self, memory_id: str) -> list[dict]:
        return self.store.history(memory_id)

    # ----------------------------------------------------------------- writes
    def update(self, memory_id: str, text: str | None = None, metadata: dict | None = None,
               data: str | None = None, request_id: str | None = None) -> dict:
        text = data if text is None else text
        if text is None and metadata is None:
            raise ValueError("update: at least one of text or metadata must be provided")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ValueError("update: text must be a non-empty string")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError(f"update: metadata must be a dict, got {type(metadata).__name__}")
        check_value(text, "text")
        check_value(metadata, "metadata")
        change = {"event": "UPDATE", "id": memory_id, "memory": text, "metadata": metadata,
                  "source": _api_source(request_id, "UPDATE")}
        if text is not None:
            change["embedding"] = self.embed([text])[0]
        try:
            self.store.apply([change])
        except KeyError:
            raise MemoryNotFound(memory_id) from None
        return {"message": "Memory updated successfully!"}

    def delete(self, memory_id: str, request_id: str | None = None) -> dict:
        try:
            self.store.apply([{"event": "DELETE", "id": memory_id, "source": _api_source(request_id, "DELETE")}])
        except KeyError:
            raise MemoryNotFound(memory_id) from None
        return {"message": "Memory deleted successfully!"}

    def delete_all(self, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None,
                   request_id: str | None = None) -> dict:
        scope = _scope(user_id, agent_id, run_id, "delete_all")
        n = self.store.delete_scope(scope, _api_source(request_id, "DELETE"))
        log.info("deleted %d memories of %s", n, scope)
        return {"message": "Memories deleted successfully!"}

    def revert(self, memory_id: str, request_id: str | None = None) -> dict:
        """Restores the version before the memory's last change (``SQLStore.revert``): the old text
        after an UPDATE, the memory after a DELETE, nothing after an ADD. A revert is a change of
        its own, in history, and can be reverted. Returns the change applied."""
        try:
            return self.store.revert(memory_id, _api_source(request_id, "revert"), embed=lambda t: self.embed([t])[0])
        except KeyError:
            raise MemoryNotFound(memory_id) from None

    def delete_by_request(self, source_request: str, allowed=None, request_id: str | None = None) -> dict:
        """Deletes the memories whose current version the request ``source_request`` wrote (those
        whose scope ``allowed(scope)`` accepts, when given), in one transaction."""
        check_value(source_request, "source_request")
        rows = [r for r in self.store.request_ids(source_request) if allowed is None or allowed(r.scope)]
        source = _api_source(request_id, "DELETE")
        done = self.store.apply([{"event": "DELETE", "id": r.id, "source": source} for r in rows], missing="skip")
        return {"message": f"{len(done)} memories of request {source_request} deleted",
                "deleted": [d["id"] for d in done]}

    def batch(self, items: Sequence[dict], request_id: str | None = None) -> dict:
        """add (messages stored as given, infer=False) / update / delete items applied in one
        transaction: all or none. A bad item raises ValueError naming ``items[i]`` and its field."""
        rid = request_id or str(uuid.uuid4())
        check_value(rid, "request_id")
        changes, owner, texts = [], [], []
        for i, item in enumerate(items):
            try:
                op = item.get("op") if isinstance(item, dict) else None
                if op == "add":
                    msgs = _messages(item.get("messages"))
                    scope = _scope(item.get("user_id"), item.get("agent_id"), item.get("run_id"), "add")
                    metadata = item.get("metadata")
                    if metadata is not None and not isinstance(metadata, dict):
                        raise ValueError("metadata must be a dict")
                    check_value(metadata, "metadata")
                    base = {"scope": scope, "metadata": dict(metadata or {}),
                            "created_at": _timestamp(item.get("timestamp"))}
                    planned = self._plan(msgs, scope, base, {"infer": False}, rid)
                elif op in ("update", "delete"):
                    mid = item.get("memory_id")
                    if not isinstance(mid, str) or not mid:
                        raise ValueError("memory_id: expected a memory id")
                    if op == "delete":
                        planned = [{"event": "DELETE", "id": mid, "source": _api_source(rid, "DELETE")}]
                    else:
                        text, metadata = item.get("text"), item.get("metadata")
                        if text is None and metadata is None:
                            raise ValueError("text or metadata is required")
                        if text is not None and (not isinstance(text, str) or not text.strip()):
                            raise ValueError("text: must be a non-empty string")
                        check_value(text, "text")
                        check_value(metadata, "metadata")
                        planned = [{"event": "UPDATE", "id": mid, "memory": text, "metadata": metadata,
                                    "source": _api_source(rid, "UPDATE")}]
                        if text is not None:
                            texts.append(planned[0])
                else:
                    raise ValueError(f"op={op!r}: expected add, update or delete")
            except (ValueError, TypeError) as e:
                raise ValueError(f"items[{i}]: {e}") from None
            changes += planned
            owner += [i] * len(planned)
        if texts:
            for ch, v in zip(texts, self.embed([ch["memory"] for ch in texts])):
                ch["embedding"] = v
        try:
            results = self.store.apply(changes)
        except KeyError as e:
            i = owner[next(j for j, ch in enumerate(changes) if ch.get("id") == e.args[0])]
            err = MemoryNotFound(e.args[0])
            err.args = (f"items[{i}].memory_id: {err} (nothing was applied)",)
            raise err from None
        return {"results": results}

    # --------------------------------------------------------- background adds
    def job(self, job_id: str) -> dict | None:
        """A background add: {"id", "status" (queued / running / done / failed), "result" when done}."""
        return self.store.job(job_id)

    def _jobs(self):
        with self._load_lock:
            if self._worker is None:
                from memr1_jax.service.jobs import JobWorker
                self._worker = JobWorker(self.store, self._run_job, self.config.job_lease_s)
            return self._worker

    def _run_job(self, job_id: str, request: dict) -> None:
        self._add(request, lambda changes, fmt: self.store.finish_job(job_id, changes, result_of=fmt))

    def reset(self) -> None:
        """Every memory, all history and every queued job gone (the store stays, empty)."""
        self.store.reset()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
        self.store.close()
        for engine in self._engines.values():   # the ones it loaded; given models are the caller's
            engine.close()
        self._engines.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------------- answer
    def answer(self, question: str, *, filters: dict | None = None, top_k: int | None = None, **kw) -> dict:
        """The Answer Agent over the scope's memories: {"answer", "memories" (those read), "completion"}.
        It says it does not know (``DONT_KNOW``) when no memory is ``answer_min_score`` similar to
        the question (the model is not asked) or when the model's answer rests on none of the
        memories it read (``agents.grounding.answer_supported``: a small model invents)."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("answer: question must be a non-empty string")
        check_value(question, "question")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise ValueError(f"answer: top_k must be a positive integer, got {top_k!r}")
        cfg = self.config
        scope, cond = self._filters(filters, kw, "answer")
        ranked = self._ranked(question, scope, cond, top_k or cfg.answer_k, -1.0)
        if not ranked or ranked[0][1] < cfg.answer_min_score:
            return {"answer": DONT_KNOW, "memories": [r.as_item(s) for r, s in ranked], "completion": ""}
        lines = [format_memory_line(r.created_at, r.memory) for r, _ in ranked]
        name = scope.get("user_id") or scope.get("agent_id") or scope.get("run_id")
        distill = cfg.answer_prompt != "mem0"
        template = answer_template(cfg.answer_prompt) if distill else None
        prompt = render_answer_prompt(question, name, lines, "assistant", [], distill, template)
        completion = self.answer_llm.generate([prompt], max_new_tokens=cfg.answer_max_new_tokens)[0].text
        answer, _ = extract_answer(completion)
        if not answer_supported(answer, question, [r.memory for r, _ in ranked], [speaker_name(name)]):
            answer = DONT_KNOW
        return {"answer": answer, "memories": [r.as_item(s) for r, s in ranked], "completion": completion}
