"""Top-k memory retrieval by cosine, with per-speaker filtering.

Two backends behind `Retriever.search`:

* exact: `exact_topk` masks invalid / other-speaker slots and runs `jax.lax.top_k` inside jit.
  It is a pure function of `BankArrays`, so `exact_topk_group` vmaps it over G stacked banks.
* ScaNN (`scann.scann_ops_pybind`, no TensorFlow) for banks whose live entries (of the queried
  speaker) reach `RetrievalConfig.scann_threshold`.

The ScaNN index is a snapshot of one bank revision. It is reused on later revisions of the same
bank lineage (see `BankHost.lineage`): entries written after the snapshot are searched exactly
and merged in, and index hits whose slot was deleted or rewritten since are dropped (the index
over-fetches by that number). When too much has changed the index is rebuilt, lazily, on the
next search. Results therefore never contain a deleted or replaced entry.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from memr1_jax.memory.bank import BankArrays, MemoryBank


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    scann_threshold: int = 20_000      # live entries at or above which ScaNN is used
    # ScaNN index layout. Below `tree_min_size` entries: `small_index`, "brute_force" (ScaNN
    # SIMD, exact) or "ah" (AH + reorder, no tree); otherwise tree + anisotropic hashing (AH) +
    # exact float reorder. Trees have poor recall on small or isotropic data.
    tree_min_size: int = 20_000
    small_index: str = "brute_force"
    num_leaves: int | None = None          # default: about 2 * sqrt(n)
    leaves_to_search: int | None = None    # default: about 2% of the leaves, at least 10
    reorder: int = 100                     # candidates re-scored exactly after AH
    ah_dims_per_block: int = 2
    ah_threshold: float = 0.2              # anisotropic quantization (eta), for dot product
    # k-means sample for AH; the tree gets max(this, 100 per leaf). Measured at 1M clustered
    # points: 50k samples for 1000 leaves gave recall@10 0.69, 100k gave 0.94.
    training_sample_size: int = 100_000
    parallel_search: bool = True           # ScaNN's multi-threaded batched search
    training_threads: int = 0              # 0: ScaNN's default
    rebuild_fraction: float = 0.1          # rebuild once changes exceed this share of the index
    max_stale: int = 256                   # ... or once this many indexed entries went stale
    max_cached_indexes: int = 8


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Per query, best first. Missing results (fewer than k candidates) have id -1, score -inf."""
    ids: np.ndarray      # [Q, k] int64 memory ids
    scores: np.ndarray   # [Q, k] float32 cosine
    slots: np.ndarray    # [Q, k] int64 bank slots (-1 where missing)
    backend: str         # "exact" or "scann"


def _exact_topk_impl(arrays: BankArrays, queries, speaker, k: int):
    q = queries.astype(jnp.float32)
    scores = q @ arrays.embeddings.astype(jnp.float32).T            # [Q, M]
    spk = jnp.broadcast_to(jnp.asarray(speaker, jnp.int32), q.shape[:1])
    ok = arrays.valid[None, :] & ((spk[:, None] < 0) | (arrays.speaker[None, :] == spk[:, None]))
    scores = jnp.where(ok, scores, -jnp.inf)
    kk = min(k, scores.shape[-1])
    top, slots = jax.lax.top_k(scores, kk)
    if kk < k:   # bank smaller than k: pad to a fixed output shape
        pad = k - kk
        top = jnp.concatenate([top, jnp.full((q.shape[0], pad), -jnp.inf, top.dtype)], axis=1)
        slots = jnp.concatenate([slots, jnp.zeros((q.shape[0], pad), slots.dtype)], axis=1)
    hit = jnp.isfinite(top)
    ids = jnp.where(hit, arrays.ids[slots], -1)
    return top, ids, jnp.where(hit, slots, -1)


@functools.partial(jax.jit, static_argnames=("k",))
def exact_topk(arrays: BankArrays, queries: jax.Array, speaker: jax.Array | int = -1, *, k: int):
    """Exact top-k by dot product (cosine for unit vectors) over live slots of `speaker`.

    queries [Q, D]; speaker: scalar or [Q] int (-1 = any speaker).
    Returns (scores [Q, k], ids [Q, k], slots [Q, k]); missing entries: -inf / -1 / -1.
    """
    return _exact_topk_impl(arrays, queries, speaker, k)


@functools.partial(jax.jit, static_argnames=("k",))
def exact_topk_group(arrays: BankArrays, queries: jax.Array, speaker: jax.Array | int = -1, *, k: int):
    """`exact_topk` vmapped over G banks: arrays [G, M, ...] (see `stack_banks`),
    queries [G, Q, D], speaker scalar, [G] or [G, Q]. Returns [G, Q, k] arrays."""
    G, Q = queries.shape[0], queries.shape[1]
    spk = jnp.asarray(speaker, jnp.int32)
    spk = jnp.broadcast_to(spk[:, None] if spk.ndim == 1 else spk, (G, Q))
    return jax.vmap(lambda a, q, s: _exact_topk_impl(a, q, s, k))(arrays, queries, spk)


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclasses.dataclass
class _ScannSnapshot:
    searcher: object
    revision: int
    lineage: tuple
    slots: np.ndarray          # index position -> bank slot
    stamps: np.ndarray         # stamp of each indexed slot at build time
    n: int


def scann_params(n: int, cfg: RetrievalConfig) -> dict:
    """The ScaNN layout used for n points (exposed so benchmarks report what they ran)."""
    if n < cfg.tree_min_size:
        if cfg.small_index not in ("brute_force", "ah"):
            raise ValueError(f"RetrievalConfig.small_index must be 'brute_force' or 'ah', got {cfg.small_index!r}")
        if cfg.small_index == "ah" and n >= 16:   # AH needs 16 points per codebook
            return {"mode": "ah", "reorder": cfg.reorder, "dims_per_block": cfg.ah_dims_per_block,
                    "ah_threshold": cfg.ah_threshold,
                    "training_sample_size": min(n, cfg.training_sample_size)}
        return {"mode": "brute_force"}
    leaves = cfg.num_leaves or int(min(max(2 * math.sqrt(n), 16), n // 20))
    search = cfg.leaves_to_search or max(10, int(round(leaves * 0.02)))
    return {"mode": "tree_ah", "num_leaves": leaves, "leaves_to_search": min(search, leaves),
            "reorder": cfg.reorder, "dims_per_block": cfg.ah_dims_per_block,
            "ah_threshold": cfg.ah_threshold,
            "training_sample_size": min(n, cfg.training_sample_size),
            "tree_sample_size": min(n, max(cfg.training_sample_size, 100 * leaves))}


def build_scann(db: np.ndarray, k: int, cfg: RetrievalConfig):
    """Build a ScaNN searcher over unit rows `db` [n, D] for dot-product search."""
    import scann  # imported lazily: exact search needs no ScaNN

    db = np.ascontiguousarray(db, np.float32)
    p = scann_params(db.shape[0], cfg)
    b = scann.scann_ops_pybind.builder(db, max(1, k), "dot_product")
    if cfg.training_threads:
        b = b.set_n_training_threads(cfg.training_threads)
    if p["mode"] == "brute_force":
        return b.score_brute_force().build()
    if p["mode"] == "ah":
        return (b.score_ah(p["dims_per_block"], anisotropic_quantization_threshold=p["ah_threshold"],
                           training_sample_size=p["training_sample_size"])
                .reorder(p["reorder"]).build())
    return (b.tree(num_leaves=p["num_leaves"], num_leaves_to_search=p["leaves_to_search"],
                   training_sample_size=p["tree_sample_size"])
            .score_ah(p["dims_per_block"], anisotropic_quantization_threshold=p["ah_threshold"],
                      training_sample_size=p["training_sample_size"])
            .reorder(p["reorder"]).build())


class Retriever:
    """One search interface over a bank: exact for small banks, ScaNN for large ones.

    Holds a small cache of ScaNN snapshots keyed by (bank lineage root, speaker); nothing else.
    """

    def __init__(self, config: RetrievalConfig = RetrievalConfig()):
        self.config = config
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self.builds = 0   # number of ScaNN builds so far (tests and benchmarks read it)

    def search(self, bank: MemoryBank, queries: np.ndarray, k: int,
               speaker: int | None = None) -> SearchResult:
        """Top-k live memories of `speaker` (None: any) for each query row [Q, D] (or [D])."""
        q = np.asarray(queries, np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != bank.dim:
            raise ValueError(f"Retriever.search: queries must be [Q, {bank.dim}], got {q.shape}")
        if k <= 0:
            raise ValueError(f"Retriever.search: k must be positive, got {k}")
        q = _normalise_rows(q)
        a = bank.arrays
        valid = np.asarray(a.valid)
        live = valid if speaker is None else valid & (np.asarray(a.speaker) == speaker)
        n_live = int(live.sum())
        if n_live == 0 or n_live < self.config.scann_threshold:
            s, i, sl = exact_topk(a, q, -1 if speaker is None else int(speaker), k=int(k))
            return SearchResult(np.asarray(i, np.int64), np.asarray(s, np.float32),
                                np.asarray(sl, np.int64), "exact")
        return self._search_scann(bank, q, k, speaker, live)

    # --- ScaNN path -----------------------------------------------------------------------

    def _snapshot(self, bank: MemoryBank, speaker, live: np.ndarray, k: int) -> _ScannSnapshot:
        key = (bank.host.lineage[0], speaker)
        snap = self._cache.get(key)
        stamp = np.asarray(bank.arrays.stamp)
        if snap is not None:
            r = snap.revision
            same_line = len(bank.host.lineage) > r and bank.host.lineage[:r + 1] == snap.lineage
            if same_line:
                n_stale, n_delta = self._staleness(snap, bank, live, stamp)
                if (n_stale <= self.config.max_stale
                        and n_stale + n_delta <= self.config.rebuild_fraction * max(snap.n, 1)):
                    self._cache.move_to_end(key)
                    return snap
        slots = np.flatnonzero(live)
        emb = np.asarray(bank.arrays.embeddings)
        # A contiguous run of slots is a view: no 1.5 GB gather copy at 1M entries.
        contiguous = len(slots) and slots[-1] - slots[0] + 1 == len(slots)
        db = emb[slots[0]:slots[-1] + 1] if contiguous else emb[slots]
        searcher = build_scann(db, k, self.config)
        self.builds += 1
        snap = _ScannSnapshot(searcher, bank.revision, tuple(bank.host.lineage[:bank.revision + 1]),
                              slots, stamp[slots].copy(), len(slots))
        self._cache[key] = snap
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.max_cached_indexes:
            self._cache.popitem(last=False)
        return snap

    @staticmethod
    def _stale_mask(snap: _ScannSnapshot, bank: MemoryBank) -> np.ndarray:
        """Index positions whose slot was deleted or rewritten after the snapshot."""
        a = bank.arrays
        cap = np.asarray(a.valid).shape[0]
        in_range = snap.slots < cap
        s = np.where(in_range, snap.slots, 0)
        return ~in_range | ~np.asarray(a.valid)[s] | (np.asarray(a.stamp)[s] != snap.stamps)

    def _staleness(self, snap, bank, live, stamp) -> tuple[int, int]:
        n_stale = int(self._stale_mask(snap, bank).sum())
        n_delta = int((live & (stamp > snap.revision)).sum())
        return n_stale, n_delta

    def _search_scann(self, bank: MemoryBank, q: np.ndarray, k: int, speaker, live) -> SearchResult:
        snap = self._snapshot(bank, speaker, live, k)
        a = bank.arrays
        stamp = np.asarray(a.stamp)
        emb = np.asarray(a.embeddings)
        ids_arr = np.asarray(a.ids)
        stale = self._stale_mask(snap, bank)
        n_stale = int(stale.sum())
        fetch = min(k + n_stale, snap.n)   # over-fetch so k survive the stale filter
        search = (snap.searcher.search_batched_parallel if self.config.parallel_search
                  else snap.searcher.search_batched)
        nn, dist = search(
            q, final_num_neighbors=fetch,
            pre_reorder_num_neighbors=max(fetch, self.config.reorder))
        nn = np.asarray(nn, np.int64)
        dist = np.asarray(dist, np.float32)
        cand_slots = np.where(nn >= 0, snap.slots[np.clip(nn, 0, snap.n - 1)], -1)
        good = (nn >= 0) & ~stale[np.clip(nn, 0, snap.n - 1)]
        cand_scores = np.where(good, dist, -np.inf).astype(np.float32)
        # Entries written after the snapshot: search them exactly and merge.
        delta = np.flatnonzero(live & (stamp > snap.revision))
        if delta.size:
            ds = q @ emb[delta].T
            cand_slots = np.concatenate([cand_slots, np.broadcast_to(delta, ds.shape)], axis=1)
            cand_scores = np.concatenate([cand_scores, ds.astype(np.float32)], axis=1)
        order = np.argsort(-cand_scores, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(cand_scores, order, axis=1)
        slots = np.take_along_axis(cand_slots, order, axis=1)
        if top.shape[1] < k:
            pad = k - top.shape[1]
            top = np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf)
            slots = np.pad(slots, ((0, 0), (0, pad)), constant_values=-1)
        hit = np.isfinite(top)
        slots = np.where(hit, slots, -1)
        ids = np.where(hit, ids_arr[np.clip(slots, 0, None)], -1).astype(np.int64)
        return SearchResult(ids, top, slots.astype(np.int64), "scann")
