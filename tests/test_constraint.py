"""Constrained decoding: every sample matches its automaton, log-probs are the masked softmax's,
unconstrained rows are unchanged; the Memory Manager's schema."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np


from memr1_jax.memory import parse_memory_ops  # noqa: E402
from memr1_jax.models.decoder import causal_mask, forward  # noqa: E402
from memr1_jax.models.registry import load_model  # noqa: E402
from memr1_jax.sampling.constraint import compile_json_schema, compile_regex, manager_schema  # noqa: E402
from memr1_jax.sampling.sampler import SamplingConfig, generate  # noqa: E402

ITEM = r'\{"id": "[0-3]", "text": "[a-z ]{1,12}", "event": "(ADD|UPDATE|DELETE|NONE)"\}'
PATTERN = r'\{"memory": \[(' + ITEM + "(, " + ITEM + r"){0,2})?\]\}"


@functools.lru_cache(maxsize=None)
def _model():
    m = load_model("tiny-qwen2")
    return m, compile_regex(PATTERN, m.tokenizer, m.cfg.vocab_size)


def _prompts(tok):
    return [tok.encode("<|im_start|>user\nmanage memory<|im_end|>\n"), tok.encode("hello")]


def _run(constraints, sampling=SamplingConfig(temperature=1.0), samples=4, seed=0):
    m, _ = _model()
    return generate(m.cfg, m.params, _prompts(m.tokenizer), sampling, jax.random.PRNGKey(seed),
                    stop_ids=sorted(m.tokenizer.stop_ids), max_new_tokens=256, num_samples=samples,
                    pad_id=m.tokenizer.pad_id, constraints=constraints)


def test_every_constrained_sample_matches_and_parses():
    m, auto = _model()
    out = _run(auto)
    stops = sorted(m.tokenizer.stop_ids)
    for r in range(out.tokens.shape[0]):
        ids = out.tokens[r, :out.lengths[r]].tolist()
        assert out.stopped[r] and auto.accepts(ids, stops)
        text = m.tokenizer.decode(ids[:-1])
        parsed = parse_memory_ops(text, {str(i): i for i in range(4)})
        assert parsed.found_json and not parsed.problems and json.loads(text)["memory"] is not None
    assert len({tuple(out.tokens[r]) for r in range(out.tokens.shape[0])}) > 1   # still a distribution


def test_constrained_logprobs_equal_a_masked_softmax_recomputed_in_float64():
    m, auto = _model()
    out = _run(auto, SamplingConfig(temperature=0.8, scaled_logprobs=True), samples=2, seed=3)
    prompts = _prompts(m.tokenizer)
    for r in range(out.tokens.shape[0]):
        prompt, comp = prompts[r // 2], out.tokens[r, :out.lengths[r]].tolist()
        seq = jnp.asarray([prompt + comp])
        logits, _ = forward(m.cfg, m.params, seq, jnp.arange(seq.shape[1])[None], causal_mask(jnp.ones_like(seq, bool)))
        logits = np.asarray(logits[0, len(prompt) - 1:-1], np.float64)
        state = auto.initial
        for step, tok in enumerate(comp):
            allowed = auto.next_state[state] >= 0
            for scale, got in ((1.0, out.logprobs), (0.8, out.scaled_logprobs)):
                z = np.where(allowed, logits[step] / scale, -np.inf)
                ref = z[tok] - (np.max(z) + np.log(np.sum(np.exp(z - np.max(z)))))
                assert abs(got[r, step] - ref) < 2e-4, (r, step)
            state = auto.next_state[state, tok]


def test_unconstrained_rows_are_unchanged():
    _, auto = _model()
    greedy = SamplingConfig()
    free = _run(None, greedy, samples=1)
    mixed = _run([auto, None], greedy, samples=1)
    np.testing.assert_array_equal(mixed.tokens[1], free.tokens[1])
    np.testing.assert_allclose(mixed.logprobs[1], free.logprobs[1], atol=1e-6)
    assert not np.array_equal(mixed.tokens[0], free.tokens[0])


def test_manager_schema_allows_the_shown_ids_and_new_ones_only():
    m = load_model("tiny-qwen2")
    auto = compile_json_schema(manager_schema(num_shown=2, max_new=2), m.tokenizer, m.cfg.vocab_size)
    enc = m.tokenizer.encode
    ok = ['{"memory": [{"id": "1", "text": "Alice said \\"hi\\"", "event": "UPDATE", "old_memory": "x"}]}',
          '{"memory": [{"id": "3", "text": "new", "event": "ADD"}, {"id": "0", "text": "", "event": "NONE"}]}',
          '{"memory": []}']
    bad = ['{"memory": [{"id": "4", "text": "x", "event": "ADD"}]}',       # beyond shown + new
           '{"memory": [{"id": "0", "text": "x", "event": "MERGE"}]}',
           '{"memory": [{"id": "0", "event": "NONE"}]}',                    # text is required
           '{"memory": []} and more']
    assert all(auto.accepts(enc(s)) for s in ok)
    assert not any(auto.accepts(enc(s)) for s in bad)
