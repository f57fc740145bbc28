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


def test_the_shipped_manager_updates_forgets_and_keeps_namesakes_apart(memory):
    """Through ``add`` with the defaults: a changed employer replaces the old one, a request to forget
    a code removes it, and two people with similar names stay two memories (the manager shipped
    before 2026-12-07 ADDed all three, as add-all does)."""
    def texts(user):
        return [r["memory"] for r in memory.get_all(user_id=user)["results"]]
    memory.add("I work at Acme Robotics.", user_id="dara")
    out = memory.add("I left Acme Robotics and now I work at Bluefin Bank.", user_id="dara")
    assert [r["event"] for r in out["results"]] == ["UPDATE"], out
    assert len(texts("dara")) == 1 and "Bluefin Bank" in texts("dara")[0]
    memory.add("My door code is 4471.", user_id="chen")
    out = memory.add("Please forget my door code.", user_id="chen")
    assert [r["event"] for r in out["results"]] == ["DELETE"], out
    assert not any("4471" in t for t in texts("chen"))
    memory.add("My cousin Jo lives in Oslo.", user_id="lena")
    memory.add("My friend Joe lives in York.", user_id="lena")
    kept = texts("lena")
    assert any("Jo " in t and "Oslo" in t for t in kept) and any("Joe" in t and "York" in t for t in kept), kept
