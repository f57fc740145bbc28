"""Real Mem0 as a baseline (``--system mem0-oss``): Mem0's own add pipeline on this project's backbone.

mem0ai's ``Memory`` (a test / benchmark dependency: ``pip install mem0ai``) is pointed at this
project's OpenAI-compatible endpoints, served on a loopback port for the run (``local_service``):
its LLM calls go to the run's model, its embeddings to the run's encoder. Conversations are
added as Mem0's LoCoMo evaluation adds them (``evaluation/src/memzero/add.py``): per session,
once from each speaker's side (their turns as ``user``, the other's as ``assistant``, each
prefixed with the speaker's name), ``messages_per_add`` messages per ``add`` call (Mem0: 2), the
session date as metadata, the two sides on two threads (which the Engine batches).

What Mem0 stored is then read back with ``get_all`` into one bank per conversation (speaker 0
and 1, with the session dates), which the Answer Agent reads with Mem0's answer prompt, as the
``mem0`` system does. So extraction, deduplication and storage are Mem0's; retrieval for the
answer is this project's (the same MiniLM embeddings, exact cosine), without Mem0 2.x's BM25 and
entity boosts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import secrets
import socket
import sys
import threading
import time
from typing import Callable, Iterator, Sequence

from memr1_jax.memory import Event, MemoryBank, MemoryOp, apply, empty_bank

MESSAGES_PER_ADD = 2     # Mem0's LoCoMo evaluation


@dataclasses.dataclass
class Mem0Stats:
    add_calls: int = 0
    failed_calls: int = 0         # the LLM call failed or Mem0 raised (counted, the run goes on)
    memories: int = 0
    seconds: float = 0.0
    errors: list = dataclasses.field(default_factory=list)


def mem0_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("mem0ai")
    except PackageNotFoundError:
        raise RuntimeError("--system mem0-oss needs mem0ai: pip install mem0ai") from None


@contextlib.contextmanager
def local_service(llm, encoder, work: pathlib.Path, encoder_name: str) -> Iterator[tuple[str, str]]:
    """This project's /v1 endpoints for ``llm`` (a ChatLLM) and ``encoder`` on a free loopback
    port, behind a fresh random key; yields (base url, key)."""
    import uvicorn

    from memr1_jax.service.app import create_app
    from memr1_jax.service.engine import Engine
    from memr1_jax.service.memory import Memory, MemoryConfig
    key = secrets.token_hex(16)
    engine = Engine(llm)
    memory = Memory(MemoryConfig(store=str(work / "service.db"), encoder=encoder_name), llm=engine, encoder=encoder)
    app = create_app(memory, api_key=key, model_name="memr1-backbone", encoder_name=encoder_name)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the local OpenAI-compatible service did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", key
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        engine.close()
        memory.close()
        sock.close()


def mem0_config(base_url: str, key: str, dim: int, work: pathlib.Path, max_tokens: int) -> dict:
    """Mem0 on this project's endpoints: LLM settings are Mem0's defaults but ``max_tokens``."""
    return {
        "llm": {"provider": "openai", "config": {"model": "memr1-backbone", "openai_base_url": base_url,
                                                  "api_key": key, "max_tokens": max_tokens}},
        "embedder": {"provider": "openai", "config": {"model": "memr1-encoder", "openai_base_url": base_url,
                                                       "api_key": key, "embedding_dims": dim}},
        "vector_store": {"provider": "qdrant", "config": {"collection_name": "locomo", "path": str(work / "qdrant"),
                                                          "embedding_model_dims": dim, "on_disk": True}},
        "history_db_path": str(work / "mem0_history.db"),
    }


def _sides(conv, session) -> list[tuple[str, list[dict]]]:
    """(speaker, messages seen from that speaker's side) for one session, as Mem0's evaluation."""
    out = []
    for me in (conv.speaker_a, conv.speaker_b):
        msgs = [{"role": "user" if t.speaker == me else "assistant", "content": f"{t.speaker}: {t.text}"}
                for t in session.turns if t.speaker in (conv.speaker_a, conv.speaker_b)]
        out.append((me, msgs))
    return out


def _all_memories(m, uid: str, run_id: str | None = None) -> list[dict]:
    """Everything Mem0 kept for one user (and run): 2.x takes filters / top_k, 1.x the ids / limit."""
    scope = {"user_id": uid, **({"run_id": run_id} if run_id else {})}
    if int(mem0_version().split(".")[0]) >= 2:
        return m.get_all(filters=scope, top_k=100_000)["results"]
    return m.get_all(**scope, limit=100_000)["results"]


def user_id(conv, speaker: str) -> str:
    return f"{speaker}_{conv.id}"


class _Locked:
    """Every method call of ``target`` under one lock."""

    def __init__(self, target):
        self._target, self._lock = target, threading.RLock()

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def locked(*args, **kw):
            with self._lock:
                return attr(*args, **kw)
        return locked


def count_calls(convs: Sequence, messages_per_add: int = MESSAGES_PER_ADD) -> int:
    return sum(2 * -(-len(s.turns) // messages_per_add) for c in convs for s in c.sessions if s.turns)


def build_banks(convs: Sequence, llm, encoder, work: pathlib.Path, *, encoder_name: str = "minilm",
                messages_per_add: int = MESSAGES_PER_ADD, max_tokens: int = 256,
                progress: Callable[[int], None] | None = None) -> tuple[dict[str, MemoryBank], Mem0Stats]:
    """One bank per conversation holding what Mem0 kept (speaker 0 = speaker_a)."""
    mem0_version()
    if "mem0" not in sys.modules:   # mem0 reads this once, when imported: no usage reports sent out
        os.environ.setdefault("MEM0_TELEMETRY", "False")
    from mem0 import Memory as Mem0Memory
    work.mkdir(parents=True, exist_ok=True)
    dim = int(encoder(["probe"]).shape[-1])
    stats = Mem0Stats()
    t0 = time.time()
    lock = threading.Lock()
    with local_service(llm, encoder, work, encoder_name) as (url, key):
        m = Mem0Memory.from_config(mem0_config(url, key, dim, work, max_tokens))
        # Qdrant's local mode is not thread-safe (concurrent inserts raced its numpy storage:
        # "index 66 is out of bounds for axis 0 with size 66"); the two speakers' adds still
        # overlap in their LLM calls, which the loopback service batches.
        m.vector_store = _Locked(m.vector_store)

        def add_side(conv, speaker, msgs, date):
            for i in range(0, len(msgs), messages_per_add):
                try:
                    m.add(msgs[i:i + messages_per_add], user_id=user_id(conv, speaker), metadata={"timestamp": date})
                    failed = None
                except Exception as e:   # Mem0 raises on a failed LLM call; its evaluation goes on too
                    failed = f"{type(e).__name__}: {e}"[:300]
                with lock:
                    stats.add_calls += 1
                    if failed:
                        stats.failed_calls += 1
                        stats.errors.append(failed)
                if progress:
                    progress(1)

        for conv in convs:
            for sess in conv.sessions:
                threads = [threading.Thread(target=add_side, args=(conv, sp, msgs, sess.date_time))
                           for sp, msgs in _sides(conv, sess) if msgs]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        banks = {}
        for conv in convs:
            ops = []
            for spk, name in enumerate((conv.speaker_a, conv.speaker_b)):
                kept = _all_memories(m, user_id(conv, name))
                ops += [MemoryOp(Event.ADD, text=r["memory"], speaker=spk,
                                 timestamp=(r.get("metadata") or {}).get("timestamp")) for r in kept if r["memory"]]
            bank, _ = apply(empty_bank(dim), ops, embed_fn=encoder)
            banks[conv.id] = bank
            stats.memories += bank.size
        if hasattr(m, "close"):
            m.close()
    stats.seconds = time.time() - t0
    return banks, stats
