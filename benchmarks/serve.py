"""Memory service benchmark: requests/s and p50 / p99 latency of add and search over HTTP.

Starts ``python -m memr1_jax.serve`` (its defaults: the shipped agents over SmolLM2, MiniLM, a
fresh store, an API key) on a free 127.0.0.1 port, fills one user with ``--prefill`` memories, then
for 1, 8 and 32 concurrent clients runs ``--seconds`` of POST /memories as an application sends
them (a user's message, infer=True: extraction, the Memory Manager, storage), of POST /memories
with infer=False (storage and embedding, no LLM) and of POST /search (top_k 10). The add rows
count the memories the responses report stored (ADD / UPDATE) and removed (DELETE); the async row
times the 202 of ``"async_mode": true`` adds while the job queue's worker is busy with the manager
(the adds queued before it). Then the
same storage-bound rows (infer=False add, search) on a PostgreSQL store (a throwaway local
cluster) in the same run, with their ratio to SQLite's. Reports the servers' peak RSS.

The same inferring adds go to mem0ai's ``Memory`` on the same backbone (this project's loopback
/v1 endpoints, as ``--system mem0-oss``) with 8 threads, counting what it stored; last line
before the in-process rows: ``inferring add vs mem0ai X.Y.Z: memr1 S stored at R req/s, mem0 ...``.

Peer, in the same run: mem0ai's ``Memory`` (its 2.x pipeline with local Qdrant on disk and
SQLite history), in process, with the same MiniLM encoder in process, against
``memr1_jax.Memory`` in process, both driven by 8 threads with the same texts and queries.
Last line: ``search speedup vs mem0ai X.Y.Z (in-process, 8 threads): S`` (memr1 / mem0 requests/s).

Usage: python benchmarks/serve.py [--seconds 10] [--prefill 1000] [--clients 1,8,32] [--stores sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

os.environ.setdefault("MEM0_TELEMETRY", "False")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

KEY = "benchmark-key"
LOCK = threading.Lock()
WORDS = ("tea coffee Paris Rome Oslo nurse pilot cat dog jazz chess hiking piano Lisbon sister "
         "brother garden novel marathon cooking").split()


CITIES = ("Porto", "Lisbon", "Austin", "Denver", "Leeds", "Kyoto", "Quito", "Oslo")
JOBS = ("a glassblower", "a nurse", "a pilot", "a teacher", "a baker", "an architect")


def message(rng) -> str:
    """What a user tells an assistant: two facts in one message, the address new nearly every time (with
    8 cities x 6 jobs alone a user soon repeats a memory word for word, which no memory layer stores twice)."""
    return (f"I moved to {rng.integers(1, 1000)} Harbour Street in {rng.choice(CITIES)} last week and I work as "
            f"{rng.choice(JOBS)}.")


def sentence(rng) -> str:
    w = rng.choice(WORDS, 4)
    return f"User {rng.integers(1000)} likes {w[0]} and {w[1]}, lives near {w[2]}, talks about {w[3]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_clients(n: int, seconds: float, request) -> tuple[int, np.ndarray, int]:
    """(requests done, latencies in ms, failures) of ``n`` threads calling ``request(k, i)``."""
    lat, fails, lock = [], [0], threading.Lock()
    stop = time.monotonic() + seconds

    def loop(k):
        i, mine = 0, []
        while time.monotonic() < stop:
            t = time.perf_counter()
            ok = request(k, i)
            mine.append((time.perf_counter() - t) * 1000)
            if not ok:
                with lock:
                    fails[0] += 1
            i += 1
        with lock:
            lat.extend(mine)
    threads = [threading.Thread(target=loop, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lat), np.asarray(lat), fails[0]


def drain(store: str, url: str) -> None:
    """Cancels the async row's queued jobs (hours of manager calls) and waits for the running one,
    so the next rows do not share the CPU with the queue's worker."""
    import sqlite3

    import httpx
    db = sqlite3.connect(store, timeout=60)
    with db:
        db.execute("UPDATE jobs SET status = 'failed', error = 'benchmark: cancelled' WHERE status = 'queued'")
    db.close()
    for _ in range(600):
        jobs = httpx.get(url + "/health", timeout=30).json()["jobs"]
        if not jobs.get("running") and not jobs.get("queued"):
            return
        time.sleep(0.5)


def http_table(args, store: str, infer: bool) -> list[tuple]:
    """Rows of one server over ``store`` (an SQLite file or a postgresql:// URL); the inferring add
    (model-bound, the same on either store) only with ``infer``."""
    import httpx
    port = free_port()
    env = dict(os.environ, MEMR1_API_KEY=KEY)
    proc = subprocess.Popen([sys.executable, "-m", "memr1_jax.serve", "--port", str(port), "--store",
                             store, "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        rng = np.random.default_rng(0)
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=120) as c:
            for s in range(0, args.prefill, 50):
                msgs = [{"role": "user", "content": sentence(rng)} for _ in range(min(50, args.prefill - s))]
                c.post("/memories", json={"messages": msgs, "user_id": "bench", "infer": False}).raise_for_status()
        rows = []
        for n in args.clients:
            clients = [httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=600) for _ in range(n)]
            texts = [[sentence(np.random.default_rng(1000 * n + k)) for _ in range(4096)] for k in range(n)]
            said = [[message(np.random.default_rng(7000 * n + k)) for _ in range(4096)] for k in range(n)]
            changed = {"stored": 0, "removed": 0}

            def add_infer(k, i):
                r = clients[k].post("/memories", json={"messages": said[k][i % 4096], "user_id": f"user{k}-{n}"})
                if r.status_code != 200:
                    return False
                events = [x["event"] for x in r.json()["results"]]
                with LOCK:
                    changed["stored"] += sum(e in ("ADD", "UPDATE") for e in events)
                    changed["removed"] += events.count("DELETE")
                return True

            def add_async(k, i):   # 202 at once; the job queue's worker runs extraction and the manager
                r = clients[k].post("/memories", json={"messages": said[k][(i + 2048) % 4096], "user_id": f"a{k}-{n}",
                                                       "async_mode": True})
                return r.status_code == 202

            def add(k, i):
                r = clients[k].post("/memories", json={"messages": [{"role": "user", "content": texts[k][i % 4096]}],
                                                       "user_id": f"client{k}", "infer": False})
                return r.status_code == 200

            def search(k, i):
                r = clients[k].post("/search", json={"query": texts[k][i % 4096], "user_id": "bench", "top_k": 10})
                return r.status_code == 200
            ops = ((("add (infer)", add_infer), ("add (infer, async_mode: 202)", add_async)) * infer
                   + (("add (infer=False)", add), ("search", search)))
            for name, fn in ops:
                run_clients(n, 1.0, fn)   # warm-up: the encoder compiles its shape buckets, the models theirs
                changed.update(stored=0, removed=0)
                done, lat, fails = run_clients(n, args.seconds, fn)
                kept = (f"{changed['stored']} / {changed['removed']}" if fn is add_infer
                        else (f"{done - fails} / 0" if fn is add else
                              (f"{done - fails} queued" if fn is add_async else "-")))
                rows.append((name, n, done, done / args.seconds, np.percentile(lat, 50), np.percentile(lat, 99), fails,
                             kept, store.split("://")[0] if "://" in store else "sqlite"))
                if fn is add_async:
                    drain(store, url)
            for c in clients:
                c.close()
        with open(f"/proc/{proc.pid}/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
        return rows, peak
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class _Mem0Embedder:
    """mem0's embedder interface over the same in-process MiniLM encoder."""

    def __init__(self, encoder):
        self.encoder = encoder

    def embed(self, text, memory_action=None):
        return self.encoder([text])[0].tolist()

    def embed_batch(self, texts, memory_action=None):
        return [v.tolist() for v in self.encoder(list(texts))]


def peer(args, encoder) -> tuple[list[tuple], str]:
    from importlib.metadata import version

    from mem0 import Memory as Mem0

    from memr1_jax import Memory
    tmp = pathlib.Path(tempfile.mkdtemp())
    dim = int(encoder(["probe"]).shape[-1])
    m0 = Mem0.from_config({
        # the LLM is never called (infer=False); an OpenAI config that names no reachable server
        "llm": {"provider": "openai", "config": {"api_key": "unused", "openai_base_url": "http://127.0.0.1:9/v1"}},
        "embedder": {"provider": "openai", "config": {"api_key": "unused", "embedding_dims": dim,
                                                       "openai_base_url": "http://127.0.0.1:9/v1"}},
        "vector_store": {"provider": "qdrant", "config": {"path": str(tmp / "qdrant"), "embedding_model_dims": dim,
                                                          "on_disk": True}},
        "history_db_path": str(tmp / "history.db")})
    m0.embedding_model = _Mem0Embedder(encoder)
    # Qdrant's local mode is not thread-safe (8 threads raced its payload mask: "index 2527 is out of
    # bounds for axis 0 with size 2527"): its calls go one at a time, as in --system mem0-oss.
    from memr1_jax.eval.mem0_oss import _Locked
    m0.vector_store = _Locked(m0.vector_store)
    ours = Memory({"store": str(tmp / "memr1.db")}, encoder=encoder)
    rng = np.random.default_rng(0)
    pre = [sentence(rng) for _ in range(args.prefill)]
    rows = []
    for name, m in (("memr1_jax.Memory", ours), (f"mem0ai {version('mem0ai')}", m0)):
        for s in range(0, len(pre), 50):
            m.add([{"role": "user", "content": t} for t in pre[s:s + 50]], user_id="bench", infer=False)
        queries = [sentence(np.random.default_rng(7 + k)) for k in range(256)]

        def add(k, i, m=m):
            m.add(queries[(k * 31 + i) % 256], user_id=f"client{k}", infer=False)
            return True

        def search(k, i, m=m):
            return bool(m.search(queries[(k * 31 + i) % 256], filters={"user_id": "bench"}, top_k=10)["results"])
        for op, fn in (("add", add), ("search", search)):
            run_clients(8, 1.0, fn)   # warm-up, as above
            done, lat, fails = run_clients(8, args.seconds, fn)
            rows.append((name, op, done / args.seconds, np.percentile(lat, 50), np.percentile(lat, 99), fails))
    return rows, version("mem0ai")


def mem0_inferring(args) -> tuple[int, float, int, int, str]:
    """mem0ai's add (infer on) on SmolLM2 through this project's /v1 endpoints, 8 threads:
    (memories stored, req/s, adds done, adds that raised, mem0ai version)."""
    from importlib.metadata import version

    from mem0 import Memory as Mem0

    from memr1_jax.agents.llm import ChatLLM
    from memr1_jax.eval.mem0_oss import _Locked, local_service, mem0_config
    from memr1_jax.memory.encoder import make_encoder
    encoder = make_encoder("minilm")
    work = pathlib.Path(tempfile.mkdtemp())
    with local_service(ChatLLM.from_registry("smollm2-135m-instruct", batch_size=8), encoder, work, "minilm") as (u, k):
        m0 = Mem0.from_config(mem0_config(u, k, int(encoder(["probe"]).shape[-1]), work, 256))
        m0.vector_store = _Locked(m0.vector_store)    # see peer()
        stored = [0]

        def add(k, i):
            try:
                out = m0.add(message(np.random.default_rng(100 * k + i)), user_id=f"user{k}")
            except Exception:      # mem0 raises on a refused LLM call
                return False
            with LOCK:
                stored[0] += sum(r.get("event") in ("ADD", "UPDATE") for r in out.get("results", []))
            return True
        run_clients(8, 1.0, add)
        stored[0] = 0
        done, _, fails = run_clients(8, args.seconds, add)
    return stored[0], done / args.seconds, done, fails, version("mem0ai")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--prefill", type=int, default=1000)
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--stores", default="sqlite,postgresql", help="postgresql: a throwaway local cluster "
                   "(memr1_jax.service.pg_cluster), add (infer=False) and search rows")
    args = p.parse_args()
    args.clients = [int(x) for x in args.clients.split(",")]
    from memr1_jax.memory.encoder import load_minilm
    print(f"python -m memr1_jax.serve, MiniLM encoder, {args.prefill} memories prefilled, {args.seconds:.0f} s "
          f"per row, {os.cpu_count()} CPUs")
    rows, server_peak = http_table(args, f"{tempfile.mkdtemp()}/bench.db", infer=True)
    if "postgresql" in args.stores:
        from memr1_jax.service.pg_cluster import LocalCluster, binaries_missing
        if binaries_missing():
            print(f"postgresql rows skipped: {binaries_missing()}")
        else:
            with LocalCluster() as pg:
                pg_rows, pg_peak = http_table(args, pg.create_database("bench"), infer=False)
            rows += pg_rows
            server_peak = max(server_peak, pg_peak)
    print("\n| store | op | clients | requests | req/s | p50 ms | p99 ms | failed | memories stored / removed |"
          "\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[8]} | {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]} | {r[7]} |")
    print(f"\nserver peak RSS: {server_peak:.0f} MiB")
    for op in ("add (infer=False)", "search"):
        by = {(r[8], r[1]): r[3] for r in rows if r[0] == op}
        for n in args.clients:
            if ("postgresql", n) in by:
                print(f"{op}, {n} clients: postgresql / sqlite req/s = {by[('postgresql', n)] / by[('sqlite', n)]:.2f}")
    ours = next(r for r in rows if r[0] == "add (infer)" and r[1] == 8 and r[8] == "sqlite")
    stored, rate, done, fails, ver = mem0_inferring(args)
    print(f"\nmem0ai {ver}, the same kind of messages, 8 threads, {args.seconds:.0f} s: {done} adds ({rate:.2f} req/s, "
          f"{fails} raised), {stored} memories stored")
    print(f"inferring add vs mem0ai {ver}: memr1 {ours[7].split(' / ')[0]} stored at {ours[3]:.2f} req/s, "
          f"mem0 {stored} stored at {rate:.2f} req/s")
    encoder = load_minilm()
    prow, mem0_ver = peer(args, encoder)
    print("\nin process, 8 threads, the same MiniLM encoder:\n\n| library | op | req/s | p50 ms | p99 ms | failed |"
          "\n|---|---|---|---|---|---|")
    for r in prow:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]} |")
    print(f"\nbenchmark process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    ours = {r[1]: r[2] for r in prow if r[0] == "memr1_jax.Memory"}
    theirs = {r[1]: r[2] for r in prow if r[0] != "memr1_jax.Memory"}
    print(f"add speedup vs mem0ai {mem0_ver}: {ours['add'] / theirs['add']:.2f}")
    print(f"search speedup vs mem0ai {mem0_ver} (in-process, 8 threads): {ours['search'] / theirs['search']:.2f}")


if __name__ == "__main__":
    main()
