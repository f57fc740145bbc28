"""The memory service's store: one SQLite file holding memories, their embeddings and history.

Everything a write changes (the memory row, its embedding, its history rows) is committed in one
transaction, in WAL mode with ``synchronous=FULL``: a write that returned survives a kill -9 of
the process, and a write cut midway leaves nothing behind. Several threads of one process share
one connection behind a lock; other processes may open the same file (SQLite's own locking;
``busy_timeout`` waits for a writer instead of failing).

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
import uuid
from datetime import datetime, timezone
from typing import Iterator, Sequence

import numpy as np

from memr1_jax.service.values import check_value, readable

SCHEMA_VERSION = 1
SCOPE_KEYS = ("user_id", "agent_id", "run_id")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories (
    id TEXT PRIMARY KEY, memory TEXT NOT NULL, hash TEXT NOT NULL,
    user_id TEXT, agent_id TEXT, run_id TEXT, actor_id TEXT, role TEXT,
    metadata TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT,
    embedding BLOB NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS memories_scope ON memories (user_id, agent_id, run_id);
CREATE INDEX IF NOT EXISTS memories_seq ON memories (seq);
CREATE TABLE IF NOT EXISTS history (
    id TEXT PRIMARY KEY, memory_id TEXT NOT NULL, old_memory TEXT, new_memory TEXT,
    event TEXT NOT NULL, created_at TEXT, updated_at TEXT, is_deleted INTEGER NOT NULL,
    actor_id TEXT, role TEXT, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS history_memory ON history (memory_id);
CREATE INDEX IF NOT EXISTS history_seq ON history (seq);
"""


class StoreError(ValueError):
    """A store file that cannot be used (named in the message)."""


def _refuse(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _json(value) -> str:
    return json.dumps(value, allow_nan=False)   # strict: what is stored reads back as JSON


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
        return item


class MemoryStore:
    """Memories and history in SQLite; embeddings as float32 blobs of a fixed dimension."""

    def __init__(self, path: os.PathLike, dim: int, encoder: str = ""):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self._lock = threading.RLock()
        self._writes = 0          # this connection's commits (data_version counts the others')
        self._cache: dict[tuple, tuple] = {}
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            # Text that is not UTF-8 (written by another tool) reads as U+FFFD, not an exception.
            self._db.text_factory = lambda b: b.decode("utf-8", "replace")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._check_meta(encoder)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable memory store ({e})") from e

    def _check_meta(self, encoder: str) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        want = {"schema": str(SCHEMA_VERSION), "dim": str(self.dim), "encoder": encoder}
        if not meta:
            with self._tx() as db:
                db.executemany("INSERT INTO meta VALUES (?, ?)", list(want.items()))
            return
        for key, value in want.items():
            if meta.get(key) != value:
                raise StoreError(f"{self.path}: store has {key}={meta.get(key)!r}, this service uses "
                                 f"{value!r} (embeddings of another encoder cannot be searched together); "
                                 "use another store path or the encoder it was made with")

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
            self._writes += 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ reads
    _COLUMNS = "id, memory, hash, user_id, agent_id, run_id, actor_id, role, metadata, created_at, updated_at, embedding"

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
        vec = np.frombuffer(r[11], np.float32) if isinstance(r[11], bytes) and len(r[11]) == 4 * self.dim else None
        if vec is None or not np.isfinite(vec).all():
            vec = np.zeros(self.dim, np.float32)
        return Row(r[0], r[1], r[2], scope, r[6], r[7], readable(meta), r[9], r[10], vec)

    def get(self, memory_id: str) -> Row | None:
        with self._lock:
            r = self._db.execute(f"SELECT {self._COLUMNS} FROM memories WHERE id = ?", (memory_id,)).fetchone()
        return self._row(r) if r else None

    def rows(self, scope: dict) -> list[Row]:
        """Live memories whose user_id / agent_id / run_id equal those given, oldest first."""
        where = " AND ".join(f"{k} = ?" for k in SCOPE_KEYS if scope.get(k) is not None) or "1"
        args = [scope[k] for k in SCOPE_KEYS if scope.get(k) is not None]
        with self._lock:
            rs = self._db.execute(f"SELECT {self._COLUMNS} FROM memories WHERE {where} ORDER BY seq",
                                  args).fetchall()
        return [self._row(r) for r in rs]

    def scope_index(self, scope: dict) -> tuple[list[Row], np.ndarray]:
        """(rows, [n, D] embeddings) of a scope, cached until any connection writes the file."""
        key = tuple(scope.get(k) for k in SCOPE_KEYS)
        with self._lock:
            version = (self._writes, self._db.execute("PRAGMA data_version").fetchone()[0])
            hit = self._cache.get(key)
            if hit is not None and hit[0] == version:
                return hit[1], hit[2]
            rows = self.rows(scope)
            mat = np.stack([r.embedding for r in rows]) if rows else np.zeros((0, self.dim), np.float32)
            if len(self._cache) > 256:   # many scopes: keep memory bounded
                self._cache.clear()
            self._cache[key] = (version, rows, mat)
            return rows, mat

    def check(self) -> list[str]:
        """What is wrong with the file, one line each ([] when sound): SQLite's integrity check,
        then every row's text, metadata, embedding and hash, and history rows' events."""
        problems = []
        with self._lock:
            problems += [f"sqlite: {r[0]}" for r in self._db.execute("PRAGMA integrity_check") if r[0] != "ok"]
            raw = self._db.execute("SELECT id, memory, hash, metadata, embedding FROM memories").fetchall()
            events = self._db.execute("SELECT id, event FROM history").fetchall()
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
            if len(emb) != 4 * self.dim or not np.isfinite(np.frombuffer(emb, np.float32)).all():
                problems.append(f"memory {mid}: embedding is not {self.dim} finite floats")
        problems += [f"history {hid}: event {ev!r}" for hid, ev in events if ev not in ("ADD", "UPDATE", "DELETE")]
        return problems

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM memories").fetchone()[0])

    def history(self, memory_id: str) -> list[dict]:
        with self._lock:
            rs = self._db.execute(
                "SELECT id, memory_id, old_memory, new_memory, event, created_at, updated_at, is_deleted, "
                "actor_id, role FROM history WHERE memory_id = ? ORDER BY seq", (memory_id,)).fetchall()
        keys = ("id", "memory_id", "old_memory", "new_memory", "event", "created_at", "updated_at",
                "is_deleted", "actor_id", "role")
        return [dict(zip(keys, r[:7] + (bool(r[7]),) + r[8:])) for r in rs]

    # ----------------------------------------------------------------- writes
    def _vector(self, embedding) -> bytes:
        v = np.asarray(embedding, np.float32).reshape(-1)
        if v.shape != (self.dim,) or not np.isfinite(v).all():
            raise ValueError(f"embedding must be {self.dim} finite floats, got shape {v.shape}")
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32).tobytes()

    @staticmethod
    def _seq(db, table: str) -> int:
        return int(db.execute(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table}").fetchone()[0])

    def _history(self, db, memory_id, old, new, event, created_at, updated_at, deleted, actor_id, role):
        db.execute("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (str(uuid.uuid4()), memory_id, old, new, event, created_at, updated_at, int(deleted),
                    actor_id, role, self._seq(db, "history")))

    def apply(self, changes: Sequence[dict], missing: str = "raise") -> list[dict]:
        """Apply ADD / UPDATE / DELETE changes in one transaction; returns Mem0-style results.

        ADD: {"event": "ADD", "memory", "embedding", "scope", "metadata", "actor_id", "role",
        "created_at"}; UPDATE: {"event": "UPDATE", "id", "memory" and "embedding" or None,
        "metadata" or None}; DELETE: {"event": "DELETE", "id"}. An UPDATE or DELETE of an id not
        in the store raises KeyError and nothing of the batch is written, or with
        ``missing="skip"`` is left out (another writer removed it after the manager saw it).
        """
        out = []
        with self._tx() as db:
            for ch in changes:
                ev = ch["event"]
                check_value(ch.get("memory"), "memory")
                check_value(ch.get("metadata"), "metadata")
                if ev == "ADD":
                    mid = ch.get("id") or str(uuid.uuid4())
                    created = ch.get("created_at") or now()
                    scope = ch["scope"]
                    db.execute("INSERT INTO memories VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (mid, ch["memory"], text_hash(ch["memory"]), scope.get("user_id"),
                                scope.get("agent_id"), scope.get("run_id"), ch.get("actor_id"), ch.get("role"),
                                _json(ch.get("metadata") or {}), created, created,
                                self._vector(ch["embedding"]), self._seq(db, "memories")))
                    self._history(db, mid, None, ch["memory"], "ADD", created, created, False,
                                  ch.get("actor_id"), ch.get("role"))
                    out.append({"id": mid, "memory": ch["memory"], "event": "ADD"})
                    continue
                mid = ch["id"]
                r = db.execute("SELECT memory, metadata, created_at, actor_id, role FROM memories WHERE id = ?",
                               (mid,)).fetchone()
                if r is None:
                    if missing == "skip":
                        continue
                    raise KeyError(mid)
                old, meta, created, actor, role = r
                stamp = now()
                if ev == "UPDATE":
                    text = ch.get("memory")
                    new_meta = json.loads(meta)
                    if ch.get("metadata") is not None:
                        new_meta.update(ch["metadata"])
                    if text is not None:
                        db.execute("UPDATE memories SET memory = ?, hash = ?, embedding = ?, metadata = ?, "
                                   "updated_at = ? WHERE id = ?",
                                   (text, text_hash(text), self._vector(ch["embedding"]), _json(new_meta),
                                    stamp, mid))
                    else:
                        db.execute("UPDATE memories SET metadata = ?, updated_at = ? WHERE id = ?",
                                   (_json(new_meta), stamp, mid))
                    self._history(db, mid, old, text if text is not None else old, "UPDATE", created, stamp,
                                  False, actor, role)
                    out.append({"id": mid, "memory": text if text is not None else old, "event": "UPDATE",
                                "previous_memory": old})
                elif ev == "DELETE":
                    db.execute("DELETE FROM memories WHERE id = ?", (mid,))
                    self._history(db, mid, old, None, "DELETE", created, stamp, True, actor, role)
                    out.append({"id": mid, "memory": old, "event": "DELETE"})
                else:
                    raise ValueError(f"unknown change event {ev!r}")
        return out

    def delete_scope(self, scope: dict) -> int:
        with self._lock:   # no other thread deletes one of these ids in between
            ids = [r.id for r in self.rows(scope)]
            if ids:
                self.apply([{"event": "DELETE", "id": i} for i in ids])
        return len(ids)

    def reset(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM memories")
            db.execute("DELETE FROM history")
