"""The jitted sampler against independent full-forward references (tiny random models)."""

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest
from flax import traverse_util

from memr1_jax.models.config import tiny_config
from memr1_jax.models.decoder import abstract_params, causal_mask, forward
from memr1_jax.sampling import sampler as S
from memr1_jax.sampling.sampler import SamplingConfig, bucket_size, generate

REF_LEN = 48  # fixed reference length: one compile per arch


# Output-projection scale per family: a peaked but not degenerate next-token
# distribution (top log-prob around -0.5..-2), so argmax ties cannot occur and
# sampling tests see several likely tokens.
_SHARPNESS = {"llama": 0.3, "qwen2": 2.0, "gemma3": 0.15}


def numpy_params(cfg, seed, sharpness=1.0):
    """Random parameters built with numpy on the model's abstract shapes: jit-compiling
    the Flax initialiser costs 5-20 s on 2 cores, this costs well under a second."""
    rs = np.random.RandomState(seed)
    flat = traverse_util.flatten_dict(nn.meta.unbox(abstract_params(cfg)))
    out = {}
    for path, sd in flat.items():
        name = path[-1]
        if name == "scale":
            v = 1.0 + 0.1 * rs.standard_normal(sd.shape)
        elif name.endswith("_bias"):
            v = 0.1 * rs.standard_normal(sd.shape)
        elif name == "embedding":
            v = rs.standard_normal(sd.shape)
        else:
            fan_in = int(np.prod(sd.shape[:2])) if name == "o_proj" else sd.shape[0]
            v = rs.standard_normal(sd.shape) / np.sqrt(fan_in)
        if name == ("embedding" if cfg.tie_embeddings else "lm_head"):
            v = v * sharpness
        out[path] = jnp.asarray(v, sd.dtype)
    return traverse_util.unflatten_dict(out)


@functools.lru_cache(maxsize=None)
def _model(arch):
    cfg = tiny_config(arch)
    return cfg, numpy_params(cfg, 1, _SHARPNESS[arch])


@functools.lru_cache(maxsize=None)
def _ref_logprobs_fn(arch):
    cfg, _ = _model(arch)

    @jax.jit
    def fn(params, tokens):
        # No cache, no padding on the left: positions 0.., plain causal mask. Right
        # padding cannot influence earlier positions under the causal mask.
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        logits, _ = forward(cfg, params, tokens, positions, causal_mask(jnp.ones_like(tokens, bool)))
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

    return fn


def _ref_logprobs(arch, params, seq):
    tokens = np.zeros((1, REF_LEN), np.int32)
    tokens[0, :len(seq)] = seq
    return np.asarray(_ref_logprobs_fn(arch)(params, jnp.asarray(tokens)))[0]


def _ref_greedy(arch, params, prompt, n, stop=()):
    seq = list(prompt)
    for _ in range(n):
        tok = int(np.argmax(_ref_logprobs(arch, params, seq)[len(seq) - 1]))
        seq.append(tok)
        if tok in stop:
            break
    return seq[len(prompt):]


PROMPTS = [[3, 17, 42, 9, 100], list(range(20, 31)), [7]]
ARCHES = ["llama", "qwen2", "gemma3"]


@pytest.mark.parametrize("arch", ARCHES)
def test_cached_greedy_matches_full_forward_and_logprobs(arch):
    cfg, params = _model(arch)
    n = 14  # gemma3 tiny has sliding_window=8: the decode runs well past it
    out = generate(cfg, params, PROMPTS, max_new_tokens=n)
    assert out.tokens.shape == (3, n)
    for r, prompt in enumerate(PROMPTS):
        ref = _ref_greedy(arch, params, prompt, n)
        assert out.tokens[r].tolist() == ref, f"row {r}"
        assert out.lengths[r] == n and not out.stopped[r]
        lp = _ref_logprobs(arch, params, prompt + ref)
        ref_lp = [lp[len(prompt) - 1 + i, t] for i, t in enumerate(ref)]
        np.testing.assert_allclose(out.logprobs[r], ref_lp, atol=1e-4, rtol=0)
    # the model is peaked enough that these log-probs are informative
    assert out.logprobs.min() < -0.01


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_temperature_logprobs_match_recompute(arch):
    cfg, params = _model(arch)
    sc = SamplingConfig(temperature=0.7, scaled_logprobs=True)
    out = generate(cfg, params, PROMPTS, sc, rng=jax.random.PRNGKey(3), max_new_tokens=14)
    for r, prompt in enumerate(PROMPTS):
        comp = out.tokens[r].tolist()
        lp = _ref_logprobs(arch, params, prompt + comp)
        ref_lp = [lp[len(prompt) - 1 + i, t] for i, t in enumerate(comp)]
        np.testing.assert_allclose(out.logprobs[r], ref_lp, atol=1e-4, rtol=0)
        # scaled log-probs: log_softmax(logits / T), logits recovered up to a constant
        logits = lp[len(prompt) - 1: len(prompt) - 1 + len(comp)] / 0.7
        scaled = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
        ref_s = [float(scaled[i, t]) for i, t in enumerate(comp)]
        np.testing.assert_allclose(out.scaled_logprobs[r], ref_s, atol=1e-4, rtol=0)
    assert not np.allclose(out.logprobs, out.scaled_logprobs)


def test_stop_tokens_and_per_row_budgets():
    cfg, params = _model("llama")
    free = generate(cfg, params, PROMPTS, max_new_tokens=12)
    # stop on the 4th greedy token of row 0 and the 2nd of row 1 (per-row stop sets)
    stops = [[int(free.tokens[0, 3])], [int(free.tokens[1, 1])], [255]]
    budgets = [12, 12, 5]
    out = generate(cfg, params, PROMPTS, stop_ids=stops, max_new_tokens=budgets, pad_id=0)
    for r in range(3):
        first = free.tokens[r].tolist()
        idx = [i for i, t in enumerate(first) if t in stops[r]]
        expect_len = min(idx[0] + 1 if idx else 99, budgets[r])
        assert out.lengths[r] == expect_len, r
        assert out.stopped[r] == (bool(idx) and idx[0] + 1 <= budgets[r])
        assert out.tokens[r, :expect_len].tolist() == first[:expect_len]
        assert (out.tokens[r, expect_len:] == 0).all()
        assert (out.logprobs[r, expect_len:] == 0).all()
        assert out.completions()[r] == first[:expect_len]
    # every row stops on its first token -> one column, loop exits at once
    firsts = [[int(t)] for t in free.tokens[:, 0]]
    out = generate(cfg, params, PROMPTS, stop_ids=firsts, max_new_tokens=12)
    assert out.lengths.tolist() == [1, 1, 1] and out.stopped.all()


def test_topk1_and_tiny_topp_equal_greedy():
    cfg, params = _model("qwen2")
    greedy = generate(cfg, params, PROMPTS, max_new_tokens=10)
    for sc in (SamplingConfig(temperature=1.3, top_k=1), SamplingConfig(temperature=1.3, top_p=1e-6)):
        out = generate(cfg, params, PROMPTS, sc, rng=jax.random.PRNGKey(5), max_new_tokens=10)
        np.testing.assert_array_equal(out.tokens, greedy.tokens)
        np.testing.assert_allclose(out.logprobs, greedy.logprobs, atol=1e-5)


def test_temperature_topk_topp_first_token_distribution():
    cfg, params = _model("llama")
    prompt, n = [5, 6, 7], 4096
    p1 = np.asarray(jax.nn.softmax(jnp.asarray(_ref_logprobs("llama", params, prompt)[len(prompt) - 1])))
    for sc in (SamplingConfig(temperature=1.0), SamplingConfig(temperature=2.0, top_k=8, top_p=0.7)):
        out = generate(cfg, params, [prompt], sc, rng=jax.random.PRNGKey(11), max_new_tokens=1,
                       num_samples=n)
        assert out.lengths.tolist() == [1] * n
        freq = np.bincount(out.tokens[:, 0], minlength=cfg.vocab_size) / n
        p = p1 ** (1.0 / sc.temperature)
        p = p / p.sum()
        order = np.argsort(-p)
        keep = order[:sc.top_k] if sc.top_k else order
        if sc.top_p < 1:
            pk = p[keep] / p[keep].sum()
            keep = keep[(np.cumsum(pk) - pk) < sc.top_p]
        q = np.zeros_like(p)
        q[keep] = p[keep] / p[keep].sum()
        assert set(np.nonzero(freq)[0]) <= set(keep.tolist())
        if sc.top_k:
            assert 1 < len(keep) < sc.top_k  # both filters matter in this case
        assert q.max() < 0.9 and (q > 0.02).sum() >= 3  # not degenerate
        # binomial 5-sigma band on every token
        tol = 5 * np.sqrt(q * (1 - q) / n) + 1.0 / n
        assert (np.abs(freq - q) <= tol).all(), (sc, np.abs(freq - q).max())


def test_group_sampling_equals_repeated_prompts():
    cfg, params = _model("gemma3")
    g = 4  # 2 prompts x 4 samples: the same 8 decode rows as 8 repeated prompts
    grouped = generate(cfg, params, PROMPTS[:2], max_new_tokens=14, num_samples=g)
    repeated = generate(cfg, params, [p for p in PROMPTS[:2] for _ in range(g)], max_new_tokens=14)
    np.testing.assert_array_equal(grouped.tokens, repeated.tokens)
    np.testing.assert_allclose(grouped.logprobs, repeated.logprobs, atol=1e-5)
    assert grouped.prompt_lengths.tolist() == [5] * g + [11] * g
    sc = SamplingConfig(temperature=1.0)
    samples = generate(cfg, params, PROMPTS[:2], sc, rng=jax.random.PRNGKey(2), max_new_tokens=14,
                       num_samples=g)
    for i, prompt in enumerate(PROMPTS[:2]):
        rows = samples.tokens[g * i: g * i + g].tolist()
        assert len({tuple(r) for r in rows}) == g  # G different samples
        for j, comp in enumerate(rows):  # each sample continues ITS prompt
            lp = _ref_logprobs("gemma3", params, prompt + comp)
            ref = [lp[len(prompt) - 1 + k, t] for k, t in enumerate(comp)]
            np.testing.assert_allclose(samples.logprobs[g * i + j], ref, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])   # gemma3: local layers read the prompt slots too
def test_shared_prompt_cache_equals_repeated_cache(arch):
    """A group's prompt keys stored once (share_prompt) vs repeated G times: the same sampled
    tokens and log-probs, and the shared state holds one prompt copy per prompt."""
    cfg, params = _model(arch)
    g, sc = 4, SamplingConfig(temperature=1.0, scaled_logprobs=True)
    runs = {share: generate(cfg, params, PROMPTS, sc, rng=jax.random.PRNGKey(9), max_new_tokens=14,
                            num_samples=g, share_prompt=share) for share in (True, False)}
    np.testing.assert_array_equal(runs[True].tokens, runs[False].tokens)
    np.testing.assert_array_equal(runs[True].lengths, runs[False].lengths)
    np.testing.assert_allclose(runs[True].logprobs, runs[False].logprobs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(runs[True].scaled_logprobs, runs[False].scaled_logprobs, atol=1e-5, rtol=0)
    assert len({tuple(r) for r in runs[True].tokens.tolist()}) > len(PROMPTS)   # the samples differ
    tokens, valid = S.pad_prompts(PROMPTS, 16, 4, 0)
    state = S.prefill(cfg, params, jnp.asarray(tokens), jnp.asarray(valid), cache_len=48, num_samples=g)
    layer = state["cache"]["layers"][0]
    assert layer["prefix_k"].shape[:3] == (4, cfg.num_kv_heads, 16)        # one copy per prompt
    assert layer["k"].shape[:3] == (4 * g, cfg.num_kv_heads, 48 - 16)     # the rows' own slots
    assert state["key_valid"].shape == (4 * g, 48) and S.prefix_slots(state["cache"]) == 16


def test_no_recompile_within_bucket():
    cfg, params = _model("llama")
    assert bucket_size(17) == bucket_size(20) == 24
    sizes = lambda: (S.prefill._cache_size(), S.decode._cache_size())  # noqa: E731
    before = sizes()
    a = generate(cfg, params, [list(range(1, 18)), [4, 5], [6]], max_new_tokens=14)
    after_a = sizes()
    assert after_a == (before[0] + 1, before[1] + 1)  # a new prompt bucket compiles once
    b = generate(cfg, params, [list(range(1, 21)), [9], [3, 4, 5, 6]], max_new_tokens=11,
                 stop_ids=[1, 2])  # new lengths, budget and stop ids: same buckets
    assert sizes() == after_a
    assert a.tokens.shape == (3, 14) and b.tokens.shape == (3, 11)


def test_bf16_cache_runs_and_mostly_agrees():
    cfg, params = _model("llama")
    f32 = generate(cfg, params, PROMPTS, max_new_tokens=8)
    bf16 = generate(cfg, params, PROMPTS, max_new_tokens=8, cache_dtype="bfloat16")
    assert bf16.tokens.shape == f32.tokens.shape
    np.testing.assert_allclose(bf16.logprobs, f32.logprobs, atol=2e-2)
    assert (bf16.tokens[:, 0] == f32.tokens[:, 0]).all()


def test_bucket_sizes_and_bad_input():
    assert [bucket_size(n) for n in (1, 16, 17, 25, 33, 49, 65, 100, 512, 513)] == \
        [16, 16, 24, 32, 48, 64, 96, 128, 512, 768]
    assert [S.batch_bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
    cfg, params = _model("llama")
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(cfg, params, [[1], []])
    with pytest.raises(ValueError, match="outside"):
        generate(cfg, params, [[1, 999]])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(cfg, params, [[1], [2]], max_new_tokens=[3])
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(cfg, params, [[1] * 500], max_new_tokens=20)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
