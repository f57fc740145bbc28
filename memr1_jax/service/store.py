"""The memory service's store: memories, their embeddings and history in SQL.

``open_store(spec, dim, encoder)`` opens an SQLite file (the embedded default) or, for a
``postgresql://`` URL, a PostgreSQL database (``store_postgres``: several servers, one memory).
Both give the same guarantees, written once here (``SQLStore``):

- Everything a write changes (the memory row, its embedding, its history rows) is one transaction;
  writers take turns (SQLite ``BEGIN IMMEDIATE``; PostgreSQL a transaction-level advisory lock),
  so ``seq`` numbers rise in commit order and a write that returned survives a kill -9 (SQLite in
  WAL mode with ``synchronous=FULL``; PostgreSQL's own commit).
- Every write transaction also raises the ``version`` counter in ``meta``: a search index (each
  scope's embedding matrix, cached per process) is current when its version is the store's, so a
  memory added through one server is found by the next search through any other.
- A schema version with migrations (``MIGRATIONS``), applied in one transaction when the store is
  older than the code and refused, naming both versions, when it is newer.

Rows carry Mem0's fields (id, memory, hash, user_id / agent_id / run_id, actor_id, role,
metadata, created_at, updated_at) and history rows Mem0's history table's, so the service can
return Mem0's shapes without translation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Iterator, Sequence

import numpy as np

from memr1_jax.service.values import check_value, readable

SCHEMA_VERSION = 3
SCOPE_KEYS = ("user_id", "agent_id", "run_id")

# {BLOB} and {INT} are the engine's type names.
_TABLES = """
CREATE TABLE IF NOT EXISTS memories (
    id TEXT PRIMARY KEY, memory TEXT NOT NULL, hash TEXT NOT NULL,
    user_id TEXT, agent_id TEXT, run_id TEXT, actor_id TEXT, role TEXT,
    metadata TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT,
    embedding {BLOB} NOT NULL, seq {INT} NOT NULL);
CREATE INDEX IF NOT EXISTS memories_scope ON memories (user_id, agent_id, run_id);
CREATE INDEX IF NOT EXISTS memories_seq ON memories (seq);
CREATE TABLE IF NOT EXISTS history (
    id TEXT PRIMARY KEY, memory_id TEXT NOT NULL, old_memory TEXT, new_memory TEXT,
    event TEXT NOT NULL, created_at TEXT, updated_at TEXT, is_deleted INTEGER NOT NULL,
    actor_id TEXT, role TEXT, seq {INT} NOT NULL);
CREATE INDEX IF NOT EXISTS history_memory ON history (memory_id);
CREATE INDEX IF NOT EXISTS history_seq ON history (seq)
"""


def _create_tables(store: "SQLStore", db) -> None:
    for stmt in _TABLES.format(BLOB=store.BLOB, INT=store.INT).split(";"):
        db.execute(stmt)


def _add_version_counter(store: "SQLStore", db) -> None:
    db.execute("INSERT INTO meta VALUES (?, ?)", ("version", "0"))


def _add_provenance_and_jobs(store: "SQLStore", db) -> None:
    # What caused each memory and history row (source: JSON; request_id: indexed for delete by
    # request), what a revert restores (the version before the change), and background adds.
    for table, column, kind in (("memories", "source", "TEXT"), ("memories", "request_id", "TEXT"),
                                ("history", "source", "TEXT"), ("history", "request_id", "TEXT"),
                                ("history", "scope", "TEXT"), ("history", "old_metadata", "TEXT"),
                                ("history", "new_metadata", "TEXT"), ("history", "old_embedding", store.BLOB)):
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    db.execute("CREATE INDEX IF NOT EXISTS memories_request ON memories (request_id)")
    db.execute(f"""CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, seq {store.INT} NOT NULL, scope TEXT NOT NULL, payload TEXT NOT NULL,
        status TEXT NOT NULL, result TEXT, error TEXT, created_at TEXT NOT NULL, updated_at TEXT,
        claimed_by TEXT, claimed_at DOUBLE PRECISION)""")
    db.execute("CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq)")


# MIGRATIONS[n] takes a store at schema n - 1 to schema n (1: the tables; 2: the change counter;
# 3: provenance, revert data and the job queue).
MIGRATIONS = {1: _create_tables, 2: _add_version_counter, 3: _add_provenance_and_jobs}
JOB_STATES = ("queued", "running", "done", "failed")


class StoreError(ValueError):
    """A store that cannot be used (the file or the URL, without its password, named in the message)."""


def _refuse(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _json(value) -> str:
    return json.dumps(value, allow_nan=False)   # strict: what is stored reads back as JSON


def _storable(text) -> bool:
    """Whether an id could be in the store (no engine holds a NUL or a lone surrogate): another
    is an unknown id, not an engine error."""
    try:
        check_value(text, "id")
    except ValueError:
        return False
    return isinstance(text, str)


def _loads(text) -> dict:
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return readable(value) if isinstance(value, dict) else {}


def _scope_key(scope: dict) -> list:
    return [scope.get(k) for k in SCOPE_KEYS]


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def text_hash(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "replace")).hexdigest()   # Mem0's dedup hash


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    memory: str
    hash: str
    scope: dict            # the non-empty of user_id / agent_id / run_id
    actor_id: str | None
    role: str | None
    metadata: dict
    created_at: str
    updated_at: str | None
    embedding: np.ndarray  # float32 [D], unit norm
    source: dict = dataclasses.field(default_factory=dict)   # what wrote this version (see Memory)

    def as_item(self, score: float | None = None, with_score: bool = True) -> dict:
        """Mem0's MemoryItem: the core fields, the scope ids promoted, the rest under metadata
        (``get`` has ``score`` None, ``get_all`` no score: as Mem0 2.x)."""
        item = {"id": self.id, "memory": self.memory, "hash": self.hash,
                "created_at": self.created_at, "updated_at": self.updated_at}
        if with_score:
            item["score"] = score
        item.update(self.scope)
        if self.actor_id is not None:
            item["actor_id"] = self.actor_id
        if self.role is not None:
            item["role"] = self.role
        if self.metadata:
            item["metadata"] = dict(self.metadata)
        if self.source:
            item["source"] = dict(self.source)
        return item


class SQLStore:
    """The store's logic over an SQL engine. Subclasses give ``_tx`` (a write transaction, writers
    one at a time), ``_read`` (rows of one query), ``BLOB`` / ``INT`` and ``location``.
    SQL is written with ``?`` placeholders; a subclass may translate them."""

    BLOB, INT = "BLOB", "INTEGER"
    location: str

    def __init__(self, dim: int, encoder: str):
        self.dim = int(dim)
        self._cache: dict[tuple, tuple] = {}
        self._cache_lock = threading.Lock()
        self._open(encoder)

    # ------------------------------------------------------------ engine hooks
    def _tx(self):
        raise NotImplementedError

    def _read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def _engine_problems(self) -> list[str]:
        return []

    def close(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ schema
    def _open(self, encoder: str) -> None:
        with self._tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            have = int(meta.get("schema", "0")) if meta else 0
            if have > SCHEMA_VERSION:
                raise StoreError(f"{self.location}: the store is at schema version {have}, newer than this code's "
                                 f"{SCHEMA_VERSION}: upgrade memr1-jax to use it (nothing was changed)")
            if not meta:
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [("schema", "0"), ("dim", str(self.dim)), ("encoder", encoder)])
                meta = {"dim": str(self.dim), "encoder": encoder}
            for version in range(have + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](self, db)
            if have < SCHEMA_VERSION:
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
            for key, value in (("dim", str(self.dim)), ("encoder", encoder)):
                if meta.get(key) != value:
                    raise StoreError(f"{self.location}: store has {key}={meta.get(key)!r}, this service uses "
                                     f"{value!r} (embeddings of another encoder cannot be searched together); "
                                     "use another store or the encoder it was made with")

    # ------------------------------------------------------------------ reads
    _COLUMNS = ("id, memory, hash, user_id, agent_id, run_id, actor_id, role, metadata, created_at, updated_at, "
                "embedding, source")

    def _row(self, r) -> Row:
        """A row as stored, made readable: metadata that does not parse as an object is kept as text
        under ``metadata["unreadable"]``, an embedding of the wrong size or not finite becomes zeros
        (never found by search, still listed), so one bad row never takes its scope down."""
        scope = {k: v for k, v in zip(SCOPE_KEYS, r[3:6]) if v is not None}
        try:
            meta = json.loads(r[8])
        except (TypeError, ValueError, RecursionError):
            meta = None
        if not isinstance(meta, dict):
            meta = {"unreadable": str(r[8])}
        blob = bytes(r[11]) if isinstance(r[11], (bytes, memoryview)) else None
        vec = np.frombuffer(blob, np.float32) if blob is not None and len(blob) == 4 * self.dim else None
        if vec is None or not np.isfinite(vec).all():
            vec = np.zeros(self.dim, np.float32)
        return Row(r[0], r[1], r[2], scope, r[6], r[7], readable(meta), r[9], r[10], vec, _loads(r[12]))

    def get(self, memory_id: str) -> Row | None:
        if not _storable(memory_id):
            return None
        rs = self._read(f"SELECT {self._COLUMNS} FROM memories WHERE id = ?", (memory_id,))
        return self._row(rs[0]) if rs else None

    def rows(self, scope: dict) -> list[Row]:
        """Live memories whose user_id / agent_id / run_id equal those given, oldest first."""
        where = " AND ".join(f"{k} = ?" for k in SCOPE_KEYS if scope.get(k) is not None) or "1 = 1"
        args = [scope[k] for k in SCOPE_KEYS if scope.get(k) is not None]
        return [self._row(r) for r in self._read(f"SELECT {self._COLUMNS} FROM memories WHERE {where} ORDER BY seq",
                                                 args)]

    def version(self) -> int:
        """The store's change counter: raised by every write transaction, through any connection."""
        return int(self._read("SELECT value FROM meta WHERE key = 'version'")[0][0])

    def scope_index(self, scope: dict) -> tuple[list[Row], np.ndarray]:
        """(rows, [n, D] embeddings) of a scope, cached until the store's version changes."""
        key = tuple(scope.get(k) for k in SCOPE_KEYS)
        version = self.version()
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1], hit[2]
        rows = self.rows(scope)
        mat = np.stack([r.embedding for r in rows]) if rows else np.zeros((0, self.dim), np.float32)
        with self._cache_lock:
            if len(self._cache) > 256:   # many scopes: keep memory bounded
                self._cache.clear()
            self._cache[key] = (version, rows, mat)
        return rows, mat

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM memories")[0][0])

    def history(self, memory_id: str) -> list[dict]:
        """Mem0's history rows, oldest first, each with the ``source`` that caused it."""
        if not _storable(memory_id):
            return []
        rs = self._read("SELECT id, memory_id, old_memory, new_memory, event, created_at, updated_at, is_deleted, "
                        "actor_id, role, source FROM history WHERE memory_id = ? ORDER BY seq", (memory_id,))
        keys = ("id", "memory_id", "old_memory", "new_memory", "event", "created_at", "updated_at",
                "is_deleted", "actor_id", "role")
        return [{**dict(zip(keys, tuple(r[:7]) + (bool(r[7]),) + tuple(r[8:10]))), "source": _loads(r[10])}
                for r in rs]

    def scope_of(self, memory_id: str) -> dict | None:
        """The scope of a memory, live or deleted (from its last history row); None if never held."""
        row = self.get(memory_id)
        if row is not None:
            return row.scope
        if not _storable(memory_id):
            return None
        rs = self._read("SELECT scope FROM history WHERE memory_id = ? ORDER BY seq DESC LIMIT 1", (memory_id,))
        return _loads(rs[0][0]) if rs else None

    def request_ids(self, request_id: str) -> list[Row]:
        """The live memories whose current version ``request_id`` wrote."""
        if not _storable(request_id):
            return []
        return [self._row(r) for r in self._read(f"SELECT {self._COLUMNS} FROM memories WHERE request_id = ? "
                                                 "ORDER BY seq", (request_id,))]

    def check(self) -> list[str]:
        """What is wrong with the store, one line each ([] when sound): the engine's own check, then
        every row's text, metadata, embedding and hash, and history rows' events."""
        problems = self._engine_problems()
        raw = self._read("SELECT id, memory, hash, metadata, embedding FROM memories")
        for mid, text, digest, meta, emb in raw:
            try:
                check_value(text, "memory")
                loaded = json.loads(meta, parse_constant=_refuse)
                check_value(loaded, "metadata")
                if not isinstance(loaded, dict):
                    raise ValueError("metadata: not an object")
            except ValueError as e:
                problems.append(f"memory {mid}: {e}")
            if text_hash(text) != digest:
                problems.append(f"memory {mid}: hash does not match its text")
            emb = bytes(emb)
            if len(emb) != 4 * self.dim or not np.isfinite(np.frombuffer(emb, np.float32)).all():
                problems.append(f"memory {mid}: embedding is not {self.dim} finite floats")
        problems += [f"history {hid}: event {ev!r}" for hid, ev in self._read("SELECT id, event FROM history")
                     if ev not in ("ADD", "UPDATE", "DELETE")]
        return problems

    # ----------------------------------------------------------------- writes
    def _vector(self, embedding) -> bytes:
        v = np.asarray(embedding, np.float32).reshape(-1)
        if v.shape != (self.dim,) or not np.isfinite(v).all():
            raise ValueError(f"embedding must be {self.dim} finite floats, got shape {v.shape}")
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32).tobytes()

    @contextlib.contextmanager
    def _write(self) -> Iterator:
        """A write transaction that raises the store's version."""
        with self._tx() as db:
            yield db
            db.execute("UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE key = 'version'")

    @staticmethod
    def _seq(db, table: str) -> int:
        return int(db.execute(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table}").fetchone()[0])

    def _history(self, db, memory_id, old, new, event, created_at, updated_at, deleted, actor_id, role, *,
                 source=None, scope=None, old_metadata=None, new_metadata=None, old_embedding=None):
        """A history row; an UPDATE or DELETE keeps the version it replaced (text, metadata,
        embedding, scope): what a revert restores."""
        source = source or {}
        db.execute("INSERT INTO history (id, memory_id, old_memory, new_memory, event, created_at, updated_at, "
                   "is_deleted, actor_id, role, seq, source, request_id, scope, old_metadata, new_metadata, "
                   "old_embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (str(uuid.uuid4()), memory_id, old, new, event, created_at, updated_at, int(deleted),
                    actor_id, role, self._seq(db, "history"), _json(source), source.get("request_id"),
                    None if scope is None else _json(scope), old_metadata, new_metadata, old_embedding))

    def apply(self, changes: Sequence[dict], missing: str = "raise") -> list[dict]:
        """Apply ADD / UPDATE / DELETE changes in one transaction; returns Mem0-style results.

        ADD: {"event": "ADD", "memory", "embedding", "scope", "metadata", "actor_id", "role",
        "created_at"}; UPDATE: {"event": "UPDATE", "id", "memory" and "embedding" or None,
        "metadata" or None}; DELETE: {"event": "DELETE", "id"}. An UPDATE or DELETE of an id not
        in the store raises KeyError and nothing of the batch is written, or with
        ``missing="skip"`` is left out (another writer removed it after the manager saw it).
        """
        for ch in changes:   # before the transaction: a refused value writes nothing
            check_value(ch.get("memory"), "memory")
            check_value(ch.get("metadata"), "metadata")
        with self._write() as db:
            return self._apply_in(db, changes, missing)

    _INSERT = ("INSERT INTO memories (id, memory, hash, user_id, agent_id, run_id, actor_id, role, metadata, "
               "created_at, updated_at, embedding, seq, source, request_id) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

    def _apply_in(self, db, changes: Sequence[dict], missing: str) -> list[dict]:
        out = []
        for ch in changes:
            ev, source = ch["event"], ch.get("source") or {}
            if ev == "ADD":
                mid = ch.get("id") or str(uuid.uuid4())
                created = ch.get("created_at") or now()
                scope = ch["scope"]
                meta = _json(ch.get("metadata") or {})
                db.execute(self._INSERT, (mid, ch["memory"], text_hash(ch["memory"]), scope.get("user_id"),
                                          scope.get("agent_id"), scope.get("run_id"), ch.get("actor_id"),
                                          ch.get("role"), meta, created, created, self._vector(ch["embedding"]),
                                          self._seq(db, "memories"), _json(source), source.get("request_id")))
                self._history(db, mid, None, ch["memory"], "ADD", created, created, False, ch.get("actor_id"),
                              ch.get("role"), source=source, scope=scope, new_metadata=meta)
                out.append({"id": mid, "memory": ch["memory"], "event": "ADD"})
                continue
            mid = ch["id"]
            r = None if not _storable(mid) else db.execute(
                "SELECT memory, metadata, created_at, actor_id, role, embedding, user_id, agent_id, run_id "
                "FROM memories WHERE id = ?", (mid,)).fetchone()
            if r is None:
                if missing == "skip":
                    continue
                raise KeyError(mid)
            old, meta, created, actor, role, emb = r[:6]
            scope = {k: v for k, v in zip(SCOPE_KEYS, r[6:9]) if v is not None}
            stamp, emb = now(), bytes(emb)
            keep = dict(source=source, scope=scope, old_metadata=meta, old_embedding=emb)
            if ev == "UPDATE":
                text = ch.get("memory")
                new_meta = json.loads(meta)
                if ch.get("metadata") is not None:
                    new_meta.update(ch["metadata"])
                new_meta = _json(new_meta) if ch.get("replace_metadata") is None else _json(ch["replace_metadata"])
                vec = self._vector(ch["embedding"]) if text is not None else emb
                text = old if text is None else text
                db.execute("UPDATE memories SET memory = ?, hash = ?, embedding = ?, metadata = ?, updated_at = ?, "
                           "source = ?, request_id = ? WHERE id = ?",
                           (text, text_hash(text), vec, new_meta, stamp, _json(source), source.get("request_id"), mid))
                self._history(db, mid, old, text, "UPDATE", created, stamp, False, actor, role,
                              new_metadata=new_meta, **keep)
                out.append({"id": mid, "memory": text, "event": "UPDATE", "previous_memory": old})
            elif ev == "DELETE":
                db.execute("DELETE FROM memories WHERE id = ?", (mid,))
                self._history(db, mid, old, None, "DELETE", created, stamp, True, actor, role, **keep)
                out.append({"id": mid, "memory": old, "event": "DELETE"})
            else:
                raise ValueError(f"unknown change event {ev!r}")
        return out

    def revert(self, memory_id: str, source: dict | None = None, embed=None) -> dict:
        """Restores the version before the memory's last change, as one more history row (so a
        revert can be reverted): after an ADD the memory goes, after an UPDATE its text, metadata
        and embedding come back, after a DELETE the memory comes back (same id, scope and metadata).
        KeyError when the store never held the id. ``embed(text)`` embeds a restored text whose
        row predates schema 3 (no embedding kept); such a deleted memory's scope is unknown: refused."""
        source = {**(source or {}), "operation": "revert"}
        with self._write() as db:
            last = None if not _storable(memory_id) else db.execute(
                "SELECT id, event, old_memory, old_metadata, old_embedding, scope, actor_id, role, created_at "
                "FROM history WHERE memory_id = ? ORDER BY seq DESC LIMIT 1", (memory_id,)).fetchone()
            if last is None:
                raise KeyError(memory_id)
            hid, event, old, old_meta, old_emb, scope, actor, role, created = last
            source["reverts"] = hid
            if event != "ADD" and old_emb is None:
                if embed is None or (event == "DELETE" and scope is None):
                    raise ValueError(f"revert {memory_id}: its last change was recorded before this store kept "
                                     "what a revert restores (schema 3)")
                old_emb = np.asarray(embed(old), np.float32).tobytes()
            old_meta = old_meta or "{}"
            if event == "ADD":
                return self._apply_in(db, [{"event": "DELETE", "id": memory_id, "source": source}], "raise")[0]
            if event == "UPDATE":
                vec = np.frombuffer(bytes(old_emb), np.float32)
                return self._apply_in(db, [{"event": "UPDATE", "id": memory_id, "memory": old, "embedding": vec,
                                            "replace_metadata": json.loads(old_meta), "source": source}], "raise")[0]
            return self._apply_in(db, [{"event": "ADD", "id": memory_id, "memory": old, "scope": json.loads(scope),
                                        "metadata": json.loads(old_meta), "actor_id": actor, "role": role,
                                        "created_at": created, "embedding": np.frombuffer(bytes(old_emb), np.float32),
                                        "source": source}], "raise")[0]

    def delete_scope(self, scope: dict, source: dict | None = None) -> int:
        """Every memory of the scope deleted (with history rows) in one transaction; how many."""
        where = " AND ".join(f"{k} = ?" for k in SCOPE_KEYS if scope.get(k) is not None)
        args = [scope[k] for k in SCOPE_KEYS if scope.get(k) is not None]
        with self._write() as db:
            ids = [r[0] for r in db.execute(f"SELECT id FROM memories WHERE {where} ORDER BY seq", args).fetchall()]
            self._apply_in(db, [{"event": "DELETE", "id": i, "source": source} for i in ids], "skip")
        return len(ids)

    def reset(self) -> None:
        with self._write() as db:
            db.execute("DELETE FROM memories")
            db.execute("DELETE FROM history")
            db.execute("DELETE FROM jobs")

    # ------------------------------------------------------------- the job queue
    def enqueue(self, scope: dict, payload: dict) -> str:
        """A background add, kept in the store (so a restart finds it); its id."""
        check_value(payload, "payload")
        job_id = str(uuid.uuid4())
        with self._write() as db:
            db.execute("INSERT INTO jobs (id, seq, scope, payload, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                       (job_id, self._seq(db, "jobs"), _json(_scope_key(scope)), _json(payload), "queued", now()))
        return job_id

    def job_counts(self) -> dict[str, int]:
        return {status: int(n) for status, n in self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status")}

    def job(self, job_id: str) -> dict | None:
        if not _storable(job_id):
            return None
        rs = self._read("SELECT id, scope, status, result, error, created_at, updated_at FROM jobs WHERE id = ?",
                        (job_id,))
        if not rs:
            return None
        jid, scope, status, result, error, created, updated = rs[0]
        out = {"id": jid, "status": status, "created_at": created, "updated_at": updated}
        out.update({k: v for k, v in zip(SCOPE_KEYS, json.loads(scope)) if v is not None})
        if result is not None:
            out["result"] = json.loads(result)
        if error is not None:
            out["error"] = error
        return out

    def claim_job(self, worker: str, lease_s: float) -> tuple[str, dict] | None:
        """The oldest job this worker may run: queued, or running under a lease that ran out (its
        worker died), and no earlier unfinished job of its scope (a scope's adds in order)."""
        stamp = time.time()
        with self._write() as db:
            rows = db.execute("SELECT id, scope, payload, status, claimed_at FROM jobs "
                              "WHERE status IN ('queued', 'running') ORDER BY seq").fetchall()
            busy = set()
            for jid, scope, payload, status, claimed_at in rows:
                if scope in busy:
                    continue
                busy.add(scope)
                if status == "queued" or (claimed_at or 0) < stamp - lease_s:
                    db.execute("UPDATE jobs SET status = 'running', claimed_by = ?, claimed_at = ?, updated_at = ? "
                               "WHERE id = ?", (worker, stamp, now(), jid))
                    return jid, json.loads(payload)
        return None

    def finish_job(self, job_id: str, changes: Sequence[dict], result_of=None, error: str | None = None) -> bool:
        """Applies a job's changes and marks it done (or failed) in one transaction, unless it is
        finished already (another worker took it over): each job's changes land exactly once.
        ``result_of(results)`` makes the job's stored result from the applied changes."""
        with self._write() as db:
            r = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if r is None or r[0] in ("done", "failed"):
                return False
            if error is not None:
                db.execute("UPDATE jobs SET status = 'failed', error = ?, updated_at = ? WHERE id = ?",
                           (error, now(), job_id))
                return True
            results = self._apply_in(db, changes, "skip")
            result = result_of(results) if result_of else {"results": results}
            db.execute("UPDATE jobs SET status = 'done', result = ?, updated_at = ? WHERE id = ?",
                       (_json(result), now(), job_id))
        return True


class MemoryStore(SQLStore):
    """The embedded store: one SQLite file (WAL, ``synchronous=FULL``). Threads of one process share
    one connection behind a lock; other processes may open the same file (SQLite's locking;
    ``busy_timeout`` waits for a writer instead of failing)."""

    def __init__(self, path: os.PathLike, dim: int, encoder: str = ""):
        self.path = pathlib.Path(path)
        self.location = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            # Text that is not UTF-8 (written by another tool) reads as U+FFFD, not an exception.
            self._db.text_factory = lambda b: b.decode("utf-8", "replace")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            super().__init__(dim, encoder)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable memory store ({e})") from e

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _engine_problems(self) -> list[str]:
        return [f"sqlite: {r[0]}" for r in self._read("PRAGMA integrity_check") if r[0] != "ok"]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def is_url(spec: str) -> bool:
    return str(spec).startswith(("postgresql://", "postgres://"))


def open_store(spec: str | os.PathLike, dim: int, encoder: str = "") -> SQLStore:
    """An SQLite file (a path; ``~`` expanded) or a PostgreSQL database (a ``postgresql://`` URL)."""
    if is_url(str(spec)):
        from memr1_jax.service.store_postgres import PostgresStore
        return PostgresStore(str(spec), dim, encoder)
    return MemoryStore(pathlib.Path(spec).expanduser(), dim, encoder)
