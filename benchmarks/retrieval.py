"""Retrieval benchmark: ScaNN (through memr1_jax.memory.Retriever) vs exact numpy brute force.

At 10k, 100k and 1M entries of 384-d unit vectors drawn from a Gaussian mixture (clustered:
sentence embeddings are far from isotropic, and ScaNN's tree partitioning needs structure;
see cpu-feasibility.md), with queries from the same mixture, it reports build time, ScaNN
recall@10 against exact search, queries/s of ScaNN, numpy brute force (matmul + argpartition,
batches of 100) and FAISS IndexFlatIP if installed, then MiniLM encoder sentences/s at batch 64.

Last line: `scann speedup at 1M: X, recall@10: R` (X = ScaNN q/s / numpy brute-force q/s,
both measured here on the same queries). Usage: python benchmarks/retrieval.py [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from memr1_jax.memory import RetrievalConfig, Retriever, bank_from_arrays, scann_params  # noqa: E402


def clustered(n, d, n_clusters, sigma, rng, chunk=100_000):
    """Unit vectors: random unit centres plus isotropic noise of norm ~sigma, renormalised."""
    centres = rng.standard_normal((n_clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(0, n_clusters, m)]
        x += (sigma / np.sqrt(d)) * rng.standard_normal((m, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:s + m] = x
    return out


def numpy_topk(db, q, k, batch=100):
    out = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), batch):
        sc = q[s:s + batch] @ db.T
        part = np.argpartition(-sc, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sc, part, 1), axis=1)
        out[s:s + batch] = np.take_along_axis(part, order, 1)
    return out


def maxrss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def bench_size(n, d, nq, rng, k=10):
    n_clusters = max(10, n // 500)
    x = clustered(n + nq, d, n_clusters, sigma=1.0, rng=rng)
    q = x[n:].copy()
    bank = bank_from_arrays(x[:n])
    del x
    gc.collect()
    db = np.asarray(bank.arrays.embeddings)[:n]          # view, no copy

    t = time.perf_counter()
    truth = numpy_topk(db, q, k)
    np_qps = nq / (time.perf_counter() - t)

    faiss_qps = None
    try:
        import faiss
        index = faiss.IndexFlatIP(d)
        index.add(db)
        t = time.perf_counter()
        index.search(q, k)
        faiss_qps = nq / (time.perf_counter() - t)
        del index
    except ImportError:
        pass

    cfg = RetrievalConfig(scann_threshold=0, tree_min_size=20_000)
    r = Retriever(cfg)
    t = time.perf_counter()
    r.search(bank, q[:1], k)                              # builds the index
    build_s = time.perf_counter() - t
    r.search(bank, q[:50], k)                             # warm-up
    t = time.perf_counter()
    res = r.search(bank, q, k)
    sc_qps = nq / (time.perf_counter() - t)
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(res.ids, truth)]))
    params = scann_params(n, cfg)
    del r, bank, db
    gc.collect()
    return {"n": n, "build_s": build_s, "recall": recall, "scann_qps": sc_qps, "numpy_qps": np_qps,
            "faiss_qps": faiss_qps, "speedup": sc_qps / np_qps, "params": params}


def bench_encoder(n=256, batch=64):
    from memr1_jax.memory import load_minilm
    enc = load_minilm(batch_size=batch)
    words = ("memory speaker session remembered adopted painting charity race support group "
             "camping beach guitar pottery school friend family dinner travel").split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, rng.integers(6, 20))) for _ in range(n)]
    enc(texts[:batch])                                    # compile the bucket
    t = time.perf_counter()
    enc(texts)
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--no-encoder", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    t0 = time.time()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        rows.append(bench_size(n, 384, args.queries, rng))
        r = rows[-1]
        print(f"  done n={n} in {time.time() - t0:.0f}s (maxrss {maxrss_gb():.2f} GB)", flush=True)
    print()
    print(f"{'entries':>9} {'index':>30} {'build s':>8} {'recall@10':>9} {'scann q/s':>10} "
          f"{'numpy q/s':>10} {'faiss q/s':>10} {'speedup':>8}")
    for r in rows:
        p = r["params"]
        desc = p["mode"] if p["mode"] != "tree_ah" else \
            f"tree{p['num_leaves']}/{p['leaves_to_search']}+AH+reorder{p['reorder']}"
        fq = f"{r['faiss_qps']:.0f}" if r["faiss_qps"] else "n/a"
        print(f"{r['n']:>9} {desc:>30} {r['build_s']:>8.1f} {r['recall']:>9.3f} {r['scann_qps']:>10.0f} "
              f"{r['numpy_qps']:>10.1f} {fq:>10} {r['speedup']:>7.1f}x")
    if not any(r["faiss_qps"] for r in rows):
        print("faiss: not installed (skipped)")
    if not args.no_encoder:
        print(f"MiniLM-L6-v2 encoder (JAX, batch 64, CPU): {bench_encoder():.1f} sentences/s")
    print(f"peak memory (maxrss): {maxrss_gb():.2f} GB; total time {time.time() - t0:.0f}s")
    big = [r for r in rows if r["n"] >= 1_000_000] or rows[-1:]
    r = big[-1]
    label = "1M" if r["n"] == 1_000_000 else f"{r['n']}"
    print(f"scann speedup at {label}: {r['speedup']:.1f}, recall@10: {r['recall']:.3f}")


if __name__ == "__main__":
    main()
