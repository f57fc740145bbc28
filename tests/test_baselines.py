"""The rag and fullctx baselines, prompt for prompt against hand-worked expectations: lines as
Mem0's evaluation renders them, whole lines packed greedily into chunks, the top-k chunks by cosine
kept in dialogue order, full context cut from the start so the latest turns stay."""

from __future__ import annotations

import warnings

import numpy as np

from memr1_jax.agents.prompts import FULL_CONTEXT_PROMPT, RAG_ANSWER_PROMPT
from memr1_jax.data.locomo import parse_conversation
from memr1_jax.eval.baselines import RagConfig, chunk_lines, dialogue_lines, fullctx_prompts, rag_prompts

with warnings.catch_warnings():   # no observations: these baselines read the turns only
    warnings.simplefilter("ignore")
    CONV = parse_conversation({
        "speaker_a": "Ann", "speaker_b": "Bo",
        "session_1_date_time": "1 May, 2023",
        "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "I live in Oslo with my cat"},
                      {"speaker": "Bo", "dia_id": "D1:2", "text": "Nice, I play the violin"}],
        "session_2_date_time": "9 June, 2023",
        "session_2": [{"speaker": "Ann", "dia_id": "D2:1", "text": "I moved to Lisbon last week"},
                      {"speaker": "Bo", "dia_id": "D2:2", "text": "Lisbon is sunny"},
                      {"speaker": "Ann", "dia_id": "D2:3", "text": "My cat hates the heat"}],
        "qa": [{"question": "Where does Ann live?", "answer": "Lisbon", "category": 4}]}, conv_id="t")

LINES = ["1 May, 2023 | Ann: I live in Oslo with my cat",
         "1 May, 2023 | Bo: Nice, I play the violin",
         "9 June, 2023 | Ann: I moved to Lisbon last week",
         "9 June, 2023 | Bo: Lisbon is sunny",
         "9 June, 2023 | Ann: My cat hates the heat"]


def words(text: str) -> int:
    return len(text.split())


WORDS = ("lisbon", "cat", "oslo", "violin", "heat", "sunny")


def keyword_encoder(texts):
    """A keyword-count embedding, L2-normalised: cosines worked out by hand below."""
    out = np.array([[t.lower().count(w) for w in WORDS] for t in texts], np.float32) + 1e-3
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_dialogue_is_rendered_one_line_per_turn_as_mem0_does():
    assert dialogue_lines(CONV) == LINES


def test_whole_lines_are_packed_greedily_and_a_long_line_is_a_chunk_alone():
    # each line costs its words + 1 (the newline): 13, 11, 12, 9, 11
    assert [words(x) + 1 for x in LINES] == [13, 11, 12, 9, 11]
    assert chunk_lines(LINES, 24, words) == ["\n".join(LINES[:2]), "\n".join(LINES[2:4]), LINES[4]]
    # 23: line 2 no longer joins line 1 (24), so lines 2-3 (23) and 4-5 (20) pair up instead
    assert chunk_lines(LINES, 23, words) == [LINES[0], "\n".join(LINES[1:3]), "\n".join(LINES[3:])]
    assert chunk_lines(LINES, 5, words) == LINES            # every line longer than the budget: alone
    assert chunk_lines(LINES, 1000, words) == ["\n".join(LINES)]


def test_rag_keeps_the_top_chunks_by_cosine_in_dialogue_order():
    # chunks (budget 11): one line each. "Does Ann's cat like Lisbon's heat?" counts lisbon, cat,
    # heat once each: line 5 (cat, heat) and line 3 (lisbon) score highest, line 1 (cat, oslo) next.
    q = "Does Ann's cat like Lisbon's heat?"
    [prompt] = rag_prompts(CONV, [q], keyword_encoder, words, RagConfig(chunk_tokens=11, num_chunks=2))
    assert prompt == RAG_ANSWER_PROMPT.format(context=LINES[2] + "\n---\n" + LINES[4], question=q)
    [prompt3] = rag_prompts(CONV, [q], keyword_encoder, words, RagConfig(chunk_tokens=11, num_chunks=3))
    assert prompt3 == RAG_ANSWER_PROMPT.format(context="\n---\n".join([LINES[0], LINES[2], LINES[4]]), question=q)
    assert rag_prompts(CONV, [], keyword_encoder, words) == []


def test_fullctx_cuts_from_the_start_so_the_latest_turns_stay():
    q = "Where does Ann live?"
    overhead = words(FULL_CONTEXT_PROMPT.format(context="", question=""))
    # room for the last three lines (12 + 9 + 11 = 32 tokens), not the fourth from the end (+11)
    [prompt] = fullctx_prompts(CONV, [q], words, overhead + 32 + 10)
    assert prompt == FULL_CONTEXT_PROMPT.format(context="\n".join(LINES[2:]), question=q)
    [prompt] = fullctx_prompts(CONV, [q], words, overhead + 56)
    assert prompt == FULL_CONTEXT_PROMPT.format(context="\n".join(LINES), question=q)
    [prompt] = fullctx_prompts(CONV, [q], words, overhead + 10)    # not even the last line fits
    assert prompt == FULL_CONTEXT_PROMPT.format(context="", question=q)
