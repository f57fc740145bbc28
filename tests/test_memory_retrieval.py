"""Exact (jit, vmapped) and ScaNN retrieval: agreement, speaker filter, index following the bank."""

import jax
import numpy as np
import pytest

from memr1_jax.memory import (Event, MemoryOp, RetrievalConfig, Retriever, apply, bank_from_arrays,
                              empty_bank, exact_topk, exact_topk_group, stack_banks)


def clustered(n, d=64, n_clusters=20, sigma=1.0, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n_clusters, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, n_clusters, n)] + sigma * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(db, valid, q, k):
    s = q @ db.T
    s[:, ~valid] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def test_exact_topk_matches_numpy_with_speaker_filter():
    x = clustered(300)
    spk = np.arange(300) % 3
    bank = bank_from_arrays(x, speaker=spk, capacity=512)
    q = clustered(8, seed=1)
    s, ids, slots = exact_topk(bank.arrays, q, 1, k=10)
    want = brute(x, spk == 1, q, 10)
    np.testing.assert_array_equal(np.asarray(ids), want)   # ids == slots == rows here
    assert np.all(spk[np.asarray(ids)] == 1)
    np.testing.assert_allclose(np.asarray(s), np.take_along_axis(q @ x.T, want, 1), rtol=1e-5, atol=1e-5)
    # per-query speakers, and k larger than the live set pads with -1 / -inf
    small = bank_from_arrays(x[:5], speaker=[0, 0, 1, 1, 1])
    s2, ids2, _ = exact_topk(small.arrays, q[:2], np.array([0, -1]), k=8)
    assert sorted(np.asarray(ids2)[0][:2]) == [0, 1] and np.all(np.asarray(ids2)[0][2:] == -1)
    assert np.all(np.isneginf(np.asarray(s2)[0][2:])) and sorted(np.asarray(ids2)[1][:5]) == [0, 1, 2, 3, 4]


def test_group_vmap_equals_per_bank():
    banks = [bank_from_arrays(clustered(n, seed=n), speaker=np.arange(n) % 2) for n in (50, 120, 80)]
    stacked = stack_banks(banks)
    q = np.stack([clustered(4, seed=10 + g) for g in range(3)])
    s, ids, _ = exact_topk_group(stacked, q, np.array([0, 1, -1]), k=6)
    assert ids.shape == (3, 4, 6)
    for g, (b, spk) in enumerate(zip(banks, [0, 1, -1])):
        _, ids_g, _ = exact_topk(b.arrays, q[g], spk, k=6)
        np.testing.assert_array_equal(np.asarray(ids)[g], np.asarray(ids_g))
    # it is a plain pytree function: jax.vmap over the same function works too
    out = jax.vmap(lambda a, qq: exact_topk(a, qq, -1, k=3)[1])(stacked, q)
    assert out.shape == (3, 4, 3)


@pytest.mark.parametrize("mode", ["brute_force", "ah", "tree_ah"])
def test_scann_agrees_with_exact_on_1000_entries(mode):
    xq = clustered(1050, d=64, n_clusters=25, sigma=0.8)     # queries from the same mixture
    x, q = xq[:1000], xq[1000:]
    bank = bank_from_arrays(x, speaker=np.arange(1000) % 2)
    cfg = RetrievalConfig(scann_threshold=0, tree_min_size=0 if mode == "tree_ah" else 10 ** 9,
                          small_index="ah" if mode == "ah" else "brute_force",
                          num_leaves=10, leaves_to_search=8, reorder=200,
                          training_sample_size=1000)
    r = Retriever(cfg)
    for spk in (None, 1):
        got = r.search(bank, q, 10, speaker=spk)
        ref = Retriever(RetrievalConfig(scann_threshold=10 ** 9)).search(bank, q, 10, speaker=spk)
        assert got.backend == "scann" and ref.backend == "exact"
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.ids, ref.ids)])
        if mode == "brute_force":
            np.testing.assert_array_equal(got.ids, ref.ids)
        else:
            # approximate modes: recall@10 against exact (ScaNN's k-means is randomly seeded)
            assert overlap >= 0.95, overlap
        # scores are exact cosines of the returned entries (float reorder), never above exact top-k
        np.testing.assert_allclose(got.scores, np.einsum("qd,qkd->qk", q, x[got.slots]), atol=1e-4)
        assert np.all(got.scores <= ref.scores[:, :1] + 1e-5)
        if spk is not None:
            assert np.all(np.asarray(bank.arrays.speaker)[got.slots] == spk)


def test_scann_index_follows_bank_changes():
    rng = np.random.default_rng(0)
    d = 32
    x = clustered(600, d=d, seed=5)
    bank = bank_from_arrays(x, texts=[f"m{i}" for i in range(600)])
    r = Retriever(RetrievalConfig(scann_threshold=100, tree_min_size=10 ** 9, max_stale=50,
                                  rebuild_fraction=0.2))
    q = x[:20] + 0.01 * rng.standard_normal((20, d)).astype(np.float32)
    first = r.search(bank, q, 5)
    assert r.builds == 1 and np.all(first.ids[:, 0] == np.arange(20))
    # Delete the best hit of queries 0..9, replace (UPDATE) hits of 10..19 with far vectors,
    # and ADD exact copies of queries 0..4: the old index must not return any stale entry.
    far = -x[10:20]
    new = q[:5] / np.linalg.norm(q[:5], axis=1, keepdims=True)
    ops = ([MemoryOp(Event.DELETE, i) for i in range(10)]
           + [MemoryOp(Event.UPDATE, 10 + i, f"moved {i}") for i in range(10)]
           + [MemoryOp(Event.ADD, None, f"copy {i}") for i in range(5)])
    emb = np.concatenate([np.zeros((10, d)), far, new]).astype(np.float32)
    bank2, rep = apply(bank, ops, embeddings=emb)
    assert not rep.problems
    res = r.search(bank2, q, 5)
    assert r.builds == 1                              # reused, not rebuilt: 20 stale <= 50
    added = rep.added_ids
    assert list(res.ids[:5, 0]) == added              # new entries found exactly
    assert not set(res.ids.ravel()) & set(range(20))  # deleted / replaced never returned
    exact = Retriever(RetrievalConfig(scann_threshold=10 ** 9)).search(bank2, q, 5)
    np.testing.assert_array_equal(res.ids, exact.ids)
    # A fork of the original bank (sibling lineage) must not reuse bank2's index state wrongly.
    fork, _ = apply(bank, [MemoryOp(Event.DELETE, 30)], embeddings=np.zeros((1, d), np.float32))
    rf = r.search(fork, q, 5)
    np.testing.assert_array_equal(rf.ids, Retriever(RetrievalConfig(scann_threshold=10 ** 9)).search(fork, q, 5).ids)
    # Many changes trigger a lazy rebuild.
    bank3, _ = apply(bank2, [MemoryOp(Event.DELETE, i) for i in range(20, 200)],
                     embeddings=np.zeros((180, d), np.float32))
    builds = r.builds
    r.search(bank3, q, 5)
    assert r.builds == builds + 1


def test_retriever_switches_backend_by_size():
    x = clustered(300, d=16)
    bank = bank_from_arrays(x, speaker=np.r_[np.zeros(250, int), np.ones(50, int)])
    r = Retriever(RetrievalConfig(scann_threshold=100))
    assert r.search(bank, x[:2], 3).backend == "scann"
    assert r.search(bank, x[:2], 3, speaker=1).backend == "exact"   # only 50 live for speaker 1
    assert Retriever().search(empty_bank(16), x[:2], 3).ids.tolist() == [[-1] * 3] * 2
    with pytest.raises(ValueError, match="queries must be"):
        r.search(bank, np.zeros((2, 5)), 3)
