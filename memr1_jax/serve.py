"""``python -m memr1_jax.serve --port PORT``: the memory service over HTTP.

Mem0's REST routes backed by ``memr1_jax.Memory`` (the Memory Manager decides ADD / UPDATE /
DELETE / NONE), the Answer Agent at POST /answer, and OpenAI-compatible /v1/chat/completions and
/v1/embeddings over the same model and encoder (see ``memr1_jax.service.app``).

The API key comes from ``MEMR1_API_KEY`` (one key for every scope; sent as ``X-API-Key`` or
``Authorization: Bearer``) and/or ``MEMR1_API_KEYS=FILE`` (keys bound to user_id / agent_id /
run_id values, read-only or not: ``memr1_jax.service.keys``). Without a key the service binds
to 127.0.0.1 only and says so; asking for another host without a key is refused. Models load on the first request that needs them (``--preload``: at start).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

LOOPBACK = "127.0.0.1"


def _parser() -> argparse.ArgumentParser:
    from memr1_jax.service.memory import AGENTS_HELP, EXTRACTIONS, MemoryConfig
    d = MemoryConfig()
    p = argparse.ArgumentParser(prog="python -m memr1_jax.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default=None, help=f"default {LOOPBACK}; another host needs MEMR1_API_KEY")
    p.add_argument("--store", default=d.store, help=f"an SQLite file (default {d.store}) or a postgresql:// URL: "
                   "several servers on one database share one memory")
    p.add_argument("--model", default=d.llm, help="the backbone (fact extraction, /v1/chat) that the agents are "
                   "over: a registry preset or a model folder")
    p.add_argument("--agents", default=d.agents, help=f"the Memory Manager and Answer Agent: {AGENTS_HELP}")
    p.add_argument("--manager-model", default=None, help="the Memory Manager's weights (an adapter folder, a trained "
                   "run's hf/, a model name); default: the agents'")
    p.add_argument("--answer-model", default=None, help="the Answer Agent's weights; default: the agents'")
    p.add_argument("--extraction", choices=EXTRACTIONS, default=d.extraction,
                   help="model: the backbone's facts, kept where grounded in the message, else its sentences; "
                   "sentences: the message's sentences (no model)")
    p.add_argument("--manager", choices=("llm", "add-all"), default=d.manager,
                   help="llm: the manager decides; add-all: every extracted fact is added")
    p.add_argument("--manager-min-score", type=float, default=d.manager_min_score,
                   help="memories less similar (cosine) to a step's facts are not shown to the manager "
                   "(default: the trained agents' floor; -1: none, the top 5 are shown)")
    p.add_argument("--encoder", default=d.encoder, help="minilm (default) | hashing (tests only)")
    p.add_argument("--batch", type=int, default=d.batch, help="most requests generated together")
    p.add_argument("--batch-window-ms", type=float, default=1000 * d.batch_window_s,
                   help="how long a request waits for others to join its batch")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument("--job-lease-s", type=float, default=d.job_lease_s,
                   help="a background add running this long is taken over by another worker (its own died)")
    p.add_argument("--preload", action="store_true", help="load the models before serving")
    p.add_argument("--log-level", default="info")
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from memr1_jax.service.keys import KeyRing
    try:
        keys = KeyRing.load(os.environ.get("MEMR1_API_KEY") or None, os.environ.get("MEMR1_API_KEYS") or None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    host = args.host or LOOPBACK
    if not keys and not _is_loopback(host):
        print(f"error: --host {host} without MEMR1_API_KEY (or MEMR1_API_KEYS) would serve memories to anyone who "
              "can reach it; set one or serve on 127.0.0.1", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port}: expected 1..65535", file=sys.stderr)
        return 2
    import uvicorn

    from memr1_jax import compile_cache
    from memr1_jax.service.app import create_app
    from memr1_jax.service.memory import Memory, MemoryConfig
    from memr1_jax.service.store import StoreError
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:   # a bad flag value (MemoryConfig checks them) is one line naming it, as a bad store is
        cfg = MemoryConfig(store=args.store, llm=args.model, agents=args.agents, manager_model=args.manager_model,
                           answer_model=args.answer_model, extraction=args.extraction, encoder=args.encoder,
                           manager=args.manager, manager_min_score=args.manager_min_score, batch=args.batch,
                           batch_window_s=args.batch_window_ms / 1000, job_lease_s=args.job_lease_s)
        compile_cache.enable()
        memory = Memory(cfg)
    except (StoreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"memr1_jax.serve: {memory.agents_note}", file=sys.stderr)
    if args.preload:
        memory.llm, memory.manager_llm, memory.answer_llm   # noqa: B018 (the properties load)
    if not keys:
        print(f"memr1_jax.serve: no MEMR1_API_KEY set: serving on {host} only, without authentication",
              file=sys.stderr)
    else:
        print(f"memr1_jax.serve: {keys.describe()}", file=sys.stderr)
    app = create_app(memory, keys=keys, max_body_bytes=args.max_body_bytes)
    uvicorn.run(app, host=host, port=args.port, log_level=args.log_level.lower())
    return 0


if __name__ == "__main__":
    sys.exit(main())
