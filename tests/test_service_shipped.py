"""The memory service as a user meets it: ``Memory()`` with its defaults (the shipped trained agents
over SmolLM2, MiniLM) stores what a message says, finds it, answers from it and says when it does
not know. Real models, no stand-ins (about a minute)."""

from __future__ import annotations

import pytest

from memr1_jax import Memory
from memr1_jax.service.memory import DONT_KNOW
from memr1_jax.trained import ROOT


@pytest.fixture(scope="module")
def memory(tmp_path_factory):
    m = Memory({"store": str(tmp_path_factory.mktemp("shipped") / "m.db")})
    yield m
    m.close()


def test_defaults_store_the_message_find_it_and_do_not_invent(memory):
    assert memory.config.manager_model == str(ROOT / "smollm2-135m-instruct" / "memory_manager")
    out = memory.add("I moved to Porto last week and I work as a glassblower.", user_id="alice")
    stored = [r["memory"] for r in out["results"] if r["event"] in ("ADD", "UPDATE")]
    assert any("Porto" in s for s in stored) and any("glassblower" in s for s in stored), out   # both facts
    assert all(s.startswith("Alice") for s in stored)
    hits = memory.search("Where does Alice live?", user_id="alice")["results"]
    assert hits and "Porto" in hits[0]["memory"]
    assert "Porto" in memory.answer("Where does Alice live?", user_id="alice")["answer"]
    assert memory.answer("What car does Alice drive?", user_id="alice")["answer"] == DONT_KNOW
    assert memory.answer("Where does Alice live?", user_id="bob")["answer"] == DONT_KNOW   # another scope
