"""The memory bank: environment state the Memory Manager edits.

A bank is split in two halves:

* `BankArrays`, a `flax.struct` pytree of fixed-capacity arrays (embeddings, valid mask,
  ids, speaker, session ordinal, write stamp). Only this part enters jit/vmap, so a group of
  G banks can be stacked (`stack_banks`) and searched in one vmapped call.
* `BankHost`, plain Python: texts and timestamp strings keyed by memory id, the id -> slot map,
  the operation history (as Mem0 keeps one), the next fresh id and a revision counter.

`apply(bank, ops, embed_fn=...)` is pure: it returns a new bank and a report and never mutates
its input (arrays are copied once per call, so keep calls batched on very large banks).
Memory ids are never reused; slots freed by DELETE are reused by later ADDs; when no slot is
free the capacity doubles.
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import flax.struct
import jax
import numpy as np

EmbedFn = Callable[[list], np.ndarray]   # list[str] -> [n, D] float32


class Event(str, enum.Enum):
    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NONE = "NONE"   # the paper's NOOP; the prompt writes "NONE"


@dataclasses.dataclass(frozen=True)
class MemoryOp:
    """One operation on the bank.

    target_id: the real bank id for UPDATE / DELETE / NONE (None for ADD; ADD always gets a
    fresh id). speaker / session / timestamp override the defaults given to `apply`.
    """
    event: Event
    target_id: int | None = None
    text: str = ""
    old_memory: str | None = None
    speaker: int | None = None
    session: int | None = None
    timestamp: str | None = None


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    """One applied operation, as in Mem0's SQLite history table."""
    memory_id: int
    old_text: str | None
    new_text: str | None
    event: str
    step: int          # revision of the bank when applied (one per `apply` call)
    speaker: int
    timestamp: str | None


@dataclasses.dataclass(frozen=True)
class OpResult:
    op: MemoryOp
    applied: bool
    memory_id: int | None      # id written/removed/kept, or the fresh id of an ADD
    problem: str | None = None  # why the op was skipped (unknown id, duplicate, empty text)


@dataclasses.dataclass(frozen=True)
class ApplyReport:
    results: tuple[OpResult, ...]

    @property
    def problems(self) -> list[str]:
        return [r.problem for r in self.results if r.problem]

    def count(self, event: Event) -> int:
        return sum(1 for r in self.results if r.applied and r.op.event == event)

    @property
    def added_ids(self) -> list[int]:
        return [r.memory_id for r in self.results if r.applied and r.op.event == Event.ADD]


@flax.struct.dataclass
class BankArrays:
    """Fixed-capacity array half of a bank; leaves are numpy on the host, jax inside jit."""
    embeddings: jax.Array   # [M, D] float32, L2-normalised rows where valid, zeros elsewhere
    valid: jax.Array        # [M] bool
    ids: jax.Array          # [M] int32 memory id, -1 where empty
    speaker: jax.Array      # [M] int32 owner / speaker index
    session: jax.Array      # [M] int32 session ordinal (timestamp index), -1 if unknown
    stamp: jax.Array        # [M] int32 bank revision of the last write to the slot

    @property
    def capacity(self) -> int:
        return int(self.valid.shape[-1])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[-1])


@dataclasses.dataclass(frozen=True)
class BankHost:
    """Host half: strings and bookkeeping that never enter jit."""
    texts: Mapping[int, str]
    timestamps: Mapping[int, str]
    slot_of: Mapping[int, int]
    history: tuple[HistoryEntry, ...]
    next_id: int
    revision: int
    # lineage[r] is a random token naming revision r of this bank's history. Two banks with a
    # common prefix share those revisions exactly (forks, e.g. a GRPO group, diverge after it),
    # which lets a search index built on one revision be reused safely on its descendants.
    lineage: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class MemoryBank:
    arrays: BankArrays
    host: BankHost

    @property
    def size(self) -> int:
        return len(self.host.slot_of)

    @property
    def capacity(self) -> int:
        return self.arrays.capacity

    @property
    def dim(self) -> int:
        return self.arrays.dim

    @property
    def revision(self) -> int:
        return self.host.revision

    def ids(self) -> list[int]:
        return sorted(self.host.slot_of)

    def text(self, memory_id: int) -> str:
        return self.host.texts[memory_id]

    def get(self, memory_id: int) -> dict:
        """Everything stored for one id (KeyError if absent)."""
        slot = self.host.slot_of[memory_id]
        a = self.arrays
        return {"id": memory_id, "text": self.host.texts[memory_id],
                "timestamp": self.host.timestamps.get(memory_id),
                "speaker": int(a.speaker[slot]), "session": int(a.session[slot]),
                "embedding": np.asarray(a.embeddings[slot]), "slot": slot}

    def entries(self, speaker: int | None = None) -> list[dict]:
        """Live memories (optionally of one speaker), in id order, without embeddings."""
        out = []
        for mid in self.ids():
            slot = self.host.slot_of[mid]
            spk = int(self.arrays.speaker[slot])
            if speaker is None or spk == speaker:
                out.append({"id": mid, "text": self.host.texts[mid],
                            "timestamp": self.host.timestamps.get(mid), "speaker": spk,
                            "session": int(self.arrays.session[slot])})
        return out


def _token() -> int:
    return secrets.randbits(62)


def _empty_arrays(capacity: int, dim: int) -> BankArrays:
    return BankArrays(
        embeddings=np.zeros((capacity, dim), np.float32),
        valid=np.zeros((capacity,), bool),
        ids=np.full((capacity,), -1, np.int32),
        speaker=np.zeros((capacity,), np.int32),
        session=np.full((capacity,), -1, np.int32),
        stamp=np.zeros((capacity,), np.int32),
    )


def empty_bank(dim: int, capacity: int = 64) -> MemoryBank:
    if dim <= 0 or capacity <= 0:
        raise ValueError(f"empty_bank: dim and capacity must be positive, got dim={dim} capacity={capacity}")
    host = BankHost(texts=MappingProxyType({}), timestamps=MappingProxyType({}),
                    slot_of=MappingProxyType({}), history=(), next_id=0, revision=0,
                    lineage=(_token(),))
    return MemoryBank(_empty_arrays(capacity, dim), host)


def bank_from_arrays(embeddings: np.ndarray, texts: Sequence[str] | None = None,
                     speaker: np.ndarray | int = 0, session: np.ndarray | int = -1,
                     capacity: int | None = None) -> MemoryBank:
    """Bulk-load a bank (ids 0..n-1, no history); used for big retrieval benchmarks."""
    emb = np.asarray(embeddings, np.float32)
    if emb.ndim != 2:
        raise ValueError(f"bank_from_arrays: embeddings must be [n, D], got shape {emb.shape}")
    n, dim = emb.shape
    cap = max(capacity or 0, n, 1)
    arr = _empty_arrays(cap, dim)
    arr.embeddings[:n] = emb
    arr.valid[:n] = True
    arr.ids[:n] = np.arange(n, dtype=np.int32)
    arr.speaker[:n] = speaker
    arr.session[:n] = session
    if texts is None:
        texts = [f"memory {i}" for i in range(n)]
    if len(texts) != n:
        raise ValueError(f"bank_from_arrays: {len(texts)} texts for {n} embeddings")
    host = BankHost(texts=MappingProxyType(dict(enumerate(texts))),
                    timestamps=MappingProxyType({}),
                    slot_of=MappingProxyType({i: i for i in range(n)}),
                    history=(), next_id=n, revision=1 if n else 0,
                    lineage=(_token(), _token()) if n else (_token(),))
    arr = arr.replace(stamp=np.where(arr.valid, host.revision, 0).astype(np.int32))
    return MemoryBank(arr, host)


def _fields(x: BankArrays) -> dict:
    return {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}


def _grow(arrays: dict, new: int) -> dict:
    """Pad every array to capacity `new` (apply doubles, so jit sees few distinct shapes)."""
    cur = arrays["valid"].shape[0]
    if new <= cur:
        return arrays
    fill = {"embeddings": 0.0, "valid": False, "ids": -1, "speaker": 0, "session": -1, "stamp": 0}
    out = {}
    for k, v in arrays.items():
        grown = np.full((new,) + v.shape[1:], fill[k], v.dtype)
        grown[:cur] = v
        out[k] = grown
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def apply(bank: MemoryBank, ops: Sequence[MemoryOp], *, embed_fn: EmbedFn | None = None,
          embeddings: np.ndarray | None = None, speaker: int = 0, session: int = -1,
          timestamp: str | None = None, dedupe: bool = True) -> tuple[MemoryBank, ApplyReport]:
    """Apply `ops` in order; returns (new bank, report). Never raises on bad ops.

    Texts of ADD/UPDATE ops are embedded in one batched `embed_fn` call, or taken from
    `embeddings` ([len(ops), D], rows aligned with `ops`; rows of other ops are ignored).
    UPDATE / DELETE / NONE of an id that is not live (unknown, or deleted earlier in the same
    call) is skipped and reported. With `dedupe`, an ADD whose stripped text equals a live
    memory of the same speaker is skipped as a duplicate (Mem0 #1674 shows what duplicates
    lead to).
    """
    ops = list(ops)
    revision = bank.host.revision + 1
    dim = bank.dim

    needs_vec = [i for i, op in enumerate(ops)
                 if op.event in (Event.ADD, Event.UPDATE) and isinstance(op.text, str) and op.text.strip()]
    vecs: dict[int, np.ndarray] = {}
    if needs_vec:
        if embeddings is not None:
            emb = np.asarray(embeddings, np.float32)
            if emb.shape != (len(ops), dim):
                raise ValueError(f"apply: embeddings must have shape {(len(ops), dim)}, got {emb.shape}")
            got = emb[needs_vec]
        elif embed_fn is not None:
            got = np.asarray(embed_fn([ops[i].text for i in needs_vec]), np.float32)
            if got.shape != (len(needs_vec), dim):
                raise ValueError(f"apply: embed_fn returned shape {got.shape}, expected {(len(needs_vec), dim)}")
        else:
            raise ValueError("apply: ADD/UPDATE ops need embed_fn or embeddings")
        if not np.isfinite(got).all():   # a damaged encoder: a NaN memory would match nothing, silently
            row = int(np.argwhere(~np.isfinite(got))[0, 0])
            raise ValueError(f"apply: non-finite embedding for memory text {ops[needs_vec[row]].text[:60]!r}")
        got = _normalise(got)
        vecs = {i: got[j] for j, i in enumerate(needs_vec)}

    a = {k: np.array(v) for k, v in _fields(bank.arrays).items()}  # copy: apply is pure
    texts = dict(bank.host.texts)
    stamps = dict(bank.host.timestamps)
    slot_of = dict(bank.host.slot_of)
    history = list(bank.host.history)
    next_id = bank.host.next_id
    free = sorted(set(range(a["valid"].shape[0])) - set(slot_of.values()), reverse=True)
    by_text: dict[tuple[int, str], int] = {}
    if dedupe:
        for mid, s in slot_of.items():
            by_text.setdefault((int(a["speaker"][s]), texts[mid].strip()), mid)

    results = []
    for i, op in enumerate(ops):
        spk = speaker if op.speaker is None else int(op.speaker)
        sess = session if op.session is None else int(op.session)
        ts = timestamp if op.timestamp is None else op.timestamp
        ev = op.event
        text = op.text if isinstance(op.text, str) else ""
        if ev == Event.ADD:
            if not text.strip():
                results.append(OpResult(op, False, None, "ADD with empty text"))
                continue
            key = (spk, text.strip())
            if dedupe and key in by_text:
                results.append(OpResult(op, False, by_text[key],
                                        f"duplicate ADD of memory {by_text[key]}: {text.strip()[:60]!r}"))
                continue
            if not free:
                old_cap = a["valid"].shape[0]
                a = _grow(a, old_cap * 2)
                free = list(range(a["valid"].shape[0] - 1, old_cap - 1, -1))
            slot = free.pop()
            mid = next_id
            next_id += 1
            a["embeddings"][slot] = vecs[i]
            a["valid"][slot] = True
            a["ids"][slot] = mid
            a["speaker"][slot] = spk
            a["session"][slot] = sess
            a["stamp"][slot] = revision
            texts[mid] = text
            if ts is not None:
                stamps[mid] = ts
            slot_of[mid] = slot
            if dedupe:
                by_text[key] = mid
            history.append(HistoryEntry(mid, None, text, "ADD", revision, spk, ts))
            results.append(OpResult(op, True, mid))
            continue

        mid = op.target_id
        if not isinstance(mid, (int, np.integer)) or isinstance(mid, bool) or int(mid) not in slot_of:
            results.append(OpResult(op, False, None, f"{ev.value} of unknown memory id {mid!r}"))
            continue
        mid = int(mid)
        slot = slot_of[mid]
        old = texts[mid]
        owner = int(a["speaker"][slot])
        if ev == Event.UPDATE:
            if not text.strip():
                results.append(OpResult(op, False, mid, f"UPDATE of memory {mid} with empty text"))
                continue
            if dedupe and by_text.get((owner, old.strip())) == mid:
                del by_text[(owner, old.strip())]
            a["embeddings"][slot] = vecs[i]
            a["stamp"][slot] = revision
            if op.session is not None:
                a["session"][slot] = sess
            texts[mid] = text
            if op.timestamp is not None:
                stamps[mid] = op.timestamp
            if dedupe:
                by_text.setdefault((owner, text.strip()), mid)
            history.append(HistoryEntry(mid, old, text, "UPDATE", revision, owner, stamps.get(mid)))
        elif ev == Event.DELETE:
            if dedupe and by_text.get((owner, old.strip())) == mid:
                del by_text[(owner, old.strip())]
            a["embeddings"][slot] = 0.0
            a["valid"][slot] = False
            a["ids"][slot] = -1
            a["stamp"][slot] = revision
            del texts[mid], slot_of[mid]
            stamps.pop(mid, None)
            free.append(slot)
            free.sort(reverse=True)     # reuse the lowest free slot first
            history.append(HistoryEntry(mid, old, None, "DELETE", revision, owner, ts))
        else:  # NONE
            history.append(HistoryEntry(mid, old, old, "NONE", revision, owner, stamps.get(mid)))
        results.append(OpResult(op, True, mid))

    changed = any(r.applied and r.op.event != Event.NONE for r in results)
    host = BankHost(texts=MappingProxyType(texts), timestamps=MappingProxyType(stamps),
                    slot_of=MappingProxyType(slot_of), history=tuple(history), next_id=next_id,
                    revision=revision if changed else bank.host.revision,
                    lineage=bank.host.lineage + (_token(),) if changed else bank.host.lineage)
    if not changed:
        # NONE-only calls still log history but keep the arrays (and any search index) as is.
        return MemoryBank(bank.arrays, host), ApplyReport(tuple(results))
    return MemoryBank(BankArrays(**a), host), ApplyReport(tuple(results))


def stack_banks(banks: Sequence[MemoryBank | BankArrays]) -> BankArrays:
    """Stack G banks into one [G, M, ...] pytree (padded to the largest capacity) for vmap."""
    arrs = [b.arrays if isinstance(b, MemoryBank) else b for b in banks]
    if not arrs:
        raise ValueError("stack_banks: no banks given")
    dims = {x.dim for x in arrs}
    if len(dims) != 1:
        raise ValueError(f"stack_banks: banks have different embedding dims {sorted(dims)}")
    cap = max(x.capacity for x in arrs)
    grown = [_grow({k: np.asarray(v) for k, v in _fields(x).items()}, cap) for x in arrs]
    return BankArrays(**{k: np.stack([g[k] for g in grown]) for k in grown[0]})
