"""Real Mem0 (mem0ai) against this project: its shapes next to memr1_jax.Memory's, and the
mem0-oss system building banks through the OpenAI-compatible endpoints on a loopback port."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import pytest

os.environ["MEM0_TELEMETRY"] = "False"   # before mem0 is imported: it reads this once
import mem0  # noqa: F401

from memr1_jax import Memory  # noqa: E402
from memr1_jax.agents.llm import ChatLLM, Generation  # noqa: E402
from memr1_jax.data.locomo import Conversation, Session, Turn  # noqa: E402
from memr1_jax.eval import mem0_oss  # noqa: E402
from memr1_jax.memory.encoder import HashingTestEncoder  # noqa: E402


EXTENSIONS = {"source"}   # what this project adds to Mem0's items and history rows: provenance (README)


def _keys(x):
    """The shape of a return value: dict keys (recursively into lists of dicts), this project's
    documented extensions left out."""
    if isinstance(x, dict):
        return {k: _keys(v) if isinstance(v, (dict, list)) and k != "metadata" else type(v).__name__
                for k, v in x.items() if k not in EXTENSIONS}
    if isinstance(x, list):
        return [_keys(v) for v in x]
    return type(x).__name__


def _session(m, user):
    out = {}
    added = m.add([{"role": "user", "content": "I like tea"}, {"role": "assistant", "content": "Noted"}],
                  user_id=user, metadata={"topic": "food"}, infer=False)
    mid = added["results"][0]["id"]
    out["add"] = added
    out["get"] = m.get(mid)
    out["get_all"] = m.get_all(filters={"user_id": user})
    out["search"] = m.search("I like tea", filters={"user_id": user}, top_k=1)
    out["update"] = m.update(mid, text="I like green tea")
    out["history"] = m.history(mid)
    out["delete"] = m.delete(mid)
    out["delete_all"] = m.delete_all(user_id=user)
    out["after"] = m.get_all(filters={"user_id": user})
    return out


def test_return_shapes_equal_real_mem0s(tmp_path):
    from mem0 import Memory as Mem0
    enc = HashingTestEncoder()
    llm = ChatLLM.from_registry("tiny-qwen2")
    with mem0_oss.local_service(llm, enc, tmp_path, "hashing") as (url, key):
        theirs = _session(Mem0.from_config(mem0_oss.mem0_config(url, key, enc.dim, tmp_path, 16)), "u")
    with Memory({"store": str(tmp_path / "ours.db"), "encoder": "hashing"}, encoder=enc) as m:
        ours = _session(m, "u")
    for call in ours:
        assert _keys(ours[call]) == _keys(theirs[call]), call
    # the same values where both are deterministic
    assert ours["get"]["memory"] == theirs["get"]["memory"] and ours["get"]["metadata"] == theirs["get"]["metadata"]
    assert ours["search"]["results"][0]["score"] == pytest.approx(theirs["search"]["results"][0]["score"], abs=1e-5)
    assert [h["event"] for h in ours["history"]] == [h["event"] for h in theirs["history"]]
    assert ours["update"] == theirs["update"] and ours["delete"] == theirs["delete"]


class _ScriptedBackbone:
    """tiny-qwen2's tokenizer with scripted completions: Mem0's extraction prompt gets back, as
    JSON memories, the lines its user said; an answer prompt gets "**Answer:** Paris"."""

    def __init__(self):
        real = ChatLLM.from_registry("tiny-qwen2")
        self.tokenizer, self.batch_size = real.tokenizer, 4
        self.cfg = real.cfg.replace(max_seq_len=1 << 20)   # Mem0's prompt is long; nothing runs here
        self.prompts = []

    def generate_ids(self, prompt_ids, max_new_tokens=64, sampling=None, rng=None, constraints=None):
        out = []
        for ids in prompt_ids:
            text = self.tokenizer.decode(ids)
            self.prompts.append(text)
            facts = sorted(set(re.findall(r"^user: \w+: (.+)$", text, re.M)))
            reply = json.dumps({"memory": [{"text": f} for f in facts]})
            done = self.tokenizer.encode(reply)
            out.append(Generation(reply, list(ids), done, np.zeros(len(done), np.float32), True))
        return out

    def complete(self, prompts, max_new_tokens=64, **kw):
        return ["**Answer:** Paris" for _ in prompts]


def _conversation() -> Conversation:
    sessions = []
    for s in (1, 2):
        turns = tuple(Turn(sp, f"D{s}:{t}", f"fact-{sp}-{s}-{t}") for t, sp in enumerate(["Ann", "Bo", "Ann"]))
        sessions.append(Session(s, f"{s} May, 2023", turns))
    return Conversation("c1", "Ann", "Bo", tuple(sessions), ())


def test_mem0_oss_banks_hold_what_mem0_kept_for_each_speaker(tmp_path):
    enc = HashingTestEncoder()
    backbone = _ScriptedBackbone()
    conv = _conversation()
    calls = []
    banks, stats = mem0_oss.build_banks([conv], backbone, enc, tmp_path, encoder_name="hashing",
                                        messages_per_add=2, progress=calls.append)
    assert stats.failed_calls == 0 and stats.add_calls == mem0_oss.count_calls([conv], 2) == len(calls) == 8
    bank = banks["c1"]
    got = {(e["speaker"], e["text"], e["timestamp"]) for e in bank.entries()}
    assert got == {(0 if t.speaker == "Ann" else 1, t.text, s.date_time) for s in conv.sessions for t in s.turns}
    assert any("fact-Ann-1-0" in p for p in backbone.prompts)     # Mem0's own prompt reached the model


def test_mem0_oss_counts_failed_calls_and_goes_on(tmp_path):
    # A model whose context Mem0's prompt does not fit (tiny-qwen2: 512 tokens) gets a 400 for
    # every call, as OpenAI would answer; the run records the failures instead of stopping.
    llm = ChatLLM.from_registry("tiny-qwen2")
    conv = dataclasses.replace(_conversation(), sessions=_conversation().sessions[:1])
    banks, stats = mem0_oss.build_banks([conv], llm, HashingTestEncoder(), tmp_path, encoder_name="hashing")
    assert stats.add_calls == stats.failed_calls == 4 and banks["c1"].size == 0
    assert "400" in stats.errors[0]


def test_evaluate_system_mem0_oss_builds_caches_and_answers(tmp_path):
    from memr1_jax.config import evaluation_defaults, override
    from memr1_jax.data import default_split, load_conversations
    from memr1_jax.eval.run import evaluate
    from memr1_jax.memory import load_bank
    cfg = override(evaluation_defaults(), {"eval.system": "mem0-oss", "eval.limit": 3, "model.encoder": "hashing",
                                           "eval.mem0_messages_per_add": 8, "eval.run_dir": str(tmp_path / "run"),
                                           # Mem0's max_tokens: the scripted byte-token replies are long
                                           "task.manager.max_new_tokens": 8192})
    backbone = _ScriptedBackbone()
    agg = evaluate(cfg, progress=False, answer_llm=backbone, encoder=HashingTestEncoder())
    assert agg["overall"]["count"] == 3
    (bank_file,) = (tmp_path / "run" / "banks").glob("*.bank")
    conv = next(c for c in default_split(load_conversations("embedded")).test if bank_file.name.startswith(c.id))
    bank = load_bank(bank_file)
    for spk, name in enumerate((conv.speaker_a, conv.speaker_b)):   # what each speaker said, as Mem0 kept it
        assert {e["text"] for e in bank.entries(spk)} == {t.text for t in conv.turns if t.speaker == name}
    recs = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in recs] == ["Paris"] * 3
    seen = len(backbone.prompts)
    evaluate(cfg, progress=False, answer_llm=backbone, encoder=HashingTestEncoder())   # resumed: nothing redone
    assert len(backbone.prompts) == seen
