"""Prompt-lookup speculative decoding: exactly the greedy tokens of a full-forward reference,
drafts found as a plain-Python search finds them, constrained rows kept inside their automaton."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from memr1_jax.sampling.sampler import SamplingConfig, generate
from memr1_jax.sampling.speculative import lookup_drafts
from test_sampling import _model, _ref_greedy, _ref_logprobs

# Prompts that repeat themselves (drafts are found and accepted) and one that does not.
PROMPTS = [[5, 9, 13, 5, 9, 13, 5, 9], list(range(40, 52)), [7, 8, 7, 8, 7]]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_speculative_tokens_equal_full_forward_greedy(arch):
    cfg, params = _model(arch)
    n = 20  # gemma3 tiny has sliding_window=8: per-row windows are crossed
    out = generate(cfg, params, PROMPTS, max_new_tokens=n, speculative=4)
    plain = generate(cfg, params, PROMPTS, max_new_tokens=n)
    for r, prompt in enumerate(PROMPTS):
        ref = _ref_greedy(arch, params, prompt, n)
        assert out.tokens[r].tolist() == ref, f"row {r}"
        lp = _ref_logprobs(arch, params, prompt + ref)
        np.testing.assert_allclose(out.logprobs[r], [lp[len(prompt) - 1 + i, t] for i, t in enumerate(ref)],
                                   atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.logprobs, plain.logprobs, atol=1e-5, rtol=0)
    # The acceptance path was exercised: accepted drafts are among the tokens checked above.
    assert 0 < out.accepted <= out.drafted and out.passes <= n == plain.passes, (out.accepted, out.passes)


def test_speculative_stops_budgets_and_padding_rows_as_plain_greedy():
    cfg, params = _model("llama")
    free = generate(cfg, params, PROMPTS, max_new_tokens=16)
    stops = [[int(free.tokens[0, 5])], [int(free.tokens[1, 1])], [255]]
    budgets = [16, 16, 3]
    kw = dict(stop_ids=stops, max_new_tokens=budgets, pad_id=0)
    plain = generate(cfg, params, PROMPTS, **kw)       # 3 prompts: a fourth padding row in the batch
    spec = generate(cfg, params, PROMPTS, speculative=6, **kw)
    for field in ("tokens", "lengths", "stopped"):
        assert np.array_equal(getattr(spec, field), getattr(plain, field)), field
    np.testing.assert_allclose(spec.logprobs, plain.logprobs, atol=1e-5, rtol=0)


def _python_drafts(hist, start, end, k, ngram):
    """The rule in plain Python: the longest n-gram ending the history that occurred earlier,
    its latest earlier occurrence, and the k tokens after it."""
    for n in range(ngram, 0, -1):
        if end - start < n:
            continue
        tail = hist[end - n:end]
        for p in range(end - n - 1, start - 1, -1):
            if hist[p:p + n] == tail:
                return [hist[min(p + n + i, len(hist) - 1)] for i in range(k)]
    return [hist[end - 1]] * k


def test_lookup_drafts_equal_a_python_search():
    rs = np.random.RandomState(0)
    rows, length, k = 64, 40, 5
    hist = rs.randint(0, 4, size=(rows, length)).astype(np.int32)   # a small alphabet: many repeats
    start = rs.randint(0, 10, size=rows).astype(np.int32)
    end = np.minimum(start + rs.randint(1, 30, size=rows), length).astype(np.int32)
    got = np.asarray(jax.jit(lookup_drafts, static_argnums=(3, 4))(hist, start, end, k, 3))
    for r in range(rows):
        assert got[r].tolist() == _python_drafts(hist[r].tolist(), start[r], end[r], k, 3), r


def test_speculative_needs_greedy_single_samples():
    cfg, params = _model("llama")
    with pytest.raises(ValueError, match="greedy"):
        generate(cfg, params, PROMPTS, SamplingConfig(temperature=0.7), max_new_tokens=4, speculative=4)
    with pytest.raises(ValueError, match="num_samples"):
        generate(cfg, params, PROMPTS, max_new_tokens=4, num_samples=2, speculative=4)
    with pytest.raises(ValueError, match="speculative"):
        generate(cfg, params, PROMPTS, max_new_tokens=4, speculative=-1)


def test_constrained_speculative_equals_constrained_greedy():
    from test_constraint import _model as constrained_model, _prompts
    m, auto = constrained_model()
    kw = dict(stop_ids=sorted(m.tokenizer.stop_ids), max_new_tokens=160, pad_id=m.tokenizer.pad_id,
              constraints=auto)
    prompts = _prompts(m.tokenizer)
    plain = generate(m.cfg, m.params, prompts, **kw)
    spec = generate(m.cfg, m.params, prompts, speculative=8, **kw)
    for field in ("tokens", "lengths", "stopped"):
        assert np.array_equal(getattr(spec, field), getattr(plain, field)), field
    np.testing.assert_allclose(spec.logprobs, plain.logprobs, atol=1e-5, rtol=0)
    stops = sorted(m.tokenizer.stop_ids)
    for r in range(len(prompts)):
        assert auto.accepts(spec.tokens[r, :spec.lengths[r]].tolist(), stops)
    assert spec.accepted > 0 and spec.passes < plain.passes == int(plain.lengths.max())
