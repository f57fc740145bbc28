"""The trap suite's rules (each group can fail, a system that stores nothing fails) and the
service's UPDATE / DELETE through ``add`` with a scripted line-format manager: a manager that
updates and deletes passes the memory rules where add-all cannot."""

from __future__ import annotations

import re
import types

import pytest

from memr1_jax import Memory
from memr1_jax.eval.traps import GROUPS, ServiceSystem, Trap, group_counts, make_traps, run_traps, score, traps_table
from memr1_jax.service.memory import DONT_KNOW

STALE = Trap("s", "stale", "ana", ("I live in Austin.", "Actually I moved to Denver."), "Where does Ana live now?",
             expected="Denver", forbidden="Austin")
GONE = Trap("d", "deletion", "ana", ("My door code is 1234.", "I baked bread.", "Please forget my door code."),
            "What is Ana's door code?", forbidden="1234", kept=(("bread",),))
TWO = Trap("e", "entities", "ana", ("My cousin Jo lives in Leeds.", "My friend Joe lives in York."),
           "Where does Ana's cousin Jo live?", expected="Leeds", forbidden="York", kept=(("Jo", "Leeds"), ("Joe", "York")))
NEVER = Trap("n", "never-said", "ana", ("I live in Oslo.",), "What car does Ana drive?", kept=(("Oslo",),))


@pytest.mark.parametrize("trap, answer, memories, passed", [
    (STALE, "Ana lives in Denver", ["Ana moved to Denver."], True),
    (STALE, "Ana lives in Denver", ["Ana moved from Austin to Denver."], True),    # the history, with the new value
    (STALE, "Ana lives in Denver", ["Ana lives in Austin.", "Ana moved to Denver."], False),   # the stale memory kept
    (STALE, "Austin or Denver", ["Ana moved to Denver."], False),
    (GONE, DONT_KNOW, ["Ana baked bread."], True),
    (GONE, DONT_KNOW, ["Ana's door code is 1234.", "Ana baked bread."], False),
    (GONE, DONT_KNOW, [], False),                                   # storing nothing is not forgetting
    (GONE, "It is 1234", ["Ana baked bread."], False),
    (TWO, "Leeds", ["Ana's cousin Jo lives in Leeds.", "Ana's friend Joe lives in York."], True),
    (TWO, "Leeds", ["Ana's friend Joe lives in York."], False),     # merged into one person
    (TWO, "York", ["Ana's cousin Jo lives in Leeds.", "Ana's friend Joe lives in York."], False),
    (NEVER, DONT_KNOW, ["Ana lives in Oslo."], True),
    (NEVER, "Ana drives a Toyota Corolla", ["Ana lives in Oslo."], False),
    (NEVER, DONT_KNOW, [], False),
])
def test_each_rule_passes_and_fails(trap, answer, memories, passed):
    assert score(trap, answer, memories)["pass"] is passed


def test_the_generated_suite_is_reproducible_and_covers_every_group():
    a, b = make_traps(4, seed=3), make_traps(4, seed=3)
    assert a == b and a != make_traps(4, seed=4)
    assert [sum(t.group == g for t in a) for g in GROUPS] == [4, 4, 4, 4]
    for t in a:   # what the rules look for was said (or, for never-said, what is asked was not)
        said = " ".join(t.messages)
        assert all(w in said for words in t.kept for w in words)
        assert (t.expected in said) and (t.forbidden in said) if t.group != "never-said" else t.expected == ""


_SLOTS = {"city": r"\b(live|lives|moved)\b", "work": r"\bwork", "car": r"\b(drive|drives|car|sold|bought)\b",
          "code": r"\b(code|PIN)\b"}


def _slot(text: str) -> tuple | None:
    """(slot, whose): "Ana's cousin Jo lives ..." and "Ana lives ..." are two people's cities."""
    text = re.sub(r"^\w+ asked to forget ", "", text)
    slot = next((s for s, pat in _SLOTS.items() if re.search(pat, text)), None)
    who = re.match(r"^(\w+)(?:'s (?:cousin|friend) (\w+))?", text)
    return None if slot is None else (slot, who.groups())


class LinesManager:
    """A scripted line-format Memory Manager: a request to forget DELETEs the shown memory of its
    slot (and person), a new value of a shown slot UPDATEs it, anything else is ADDed."""
    thread_safe = True

    def generate(self, prompts, max_new_tokens=64, **kw):
        out = []
        for p in prompts:
            tail = p.rsplit("Old memories:\n", 1)[1]
            old, new = tail.split("New facts:\n", 1)
            shown = {int(m.group(1)): m.group(2) for m in re.finditer(r"^(\d+): (.*)$", old, re.M)}
            lines = []
            for i, fact in enumerate(re.findall(r"^\d+\. (.*)$", new.split("\nWrite one line")[0], re.M), 1):
                hit = next((k for k, m in shown.items() if _slot(m) and _slot(m) == _slot(fact)), None)
                event = "ADD" if hit is None else ("DELETE" if "asked to forget" in fact else "UPDATE")
                lines.append(f"{i}: {event}" + ("" if hit is None else f" {hit}"))
            out.append(types.SimpleNamespace(text="\n".join(lines)))
        return out


class Reader:
    """A scripted Answer Agent: answers with the memory that shares most words with the question."""
    thread_safe = True

    def generate(self, prompts, max_new_tokens=64, **kw):
        out = []
        for p in prompts:
            q = set(re.findall(r"\w+", p.rsplit("Question:", 1)[-1].lower()))
            mems = re.findall(r"^- (?:[^:]*: )?(.*)$", p, re.M)
            best = max(mems, key=lambda m: len(q & set(re.findall(r"\w+", m.lower()))), default="")
            out.append(types.SimpleNamespace(text=f"**Answer:** {best}"))
        return out


@pytest.mark.parametrize("manager, memory_passes", [("llm", True), ("add-all", False)])
def test_update_and_delete_through_add_pass_the_memory_rules(tmp_path, manager, memory_passes):
    traps = [t for t in make_traps(3, seed=1) if t.group in ("stale", "deletion", "entities")]
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "extraction": "sentences", "manager": manager,
                "constrained": False, "answer_min_score": -1.0, "manager_min_score": -1.0, "manager_max_facts": 4},
               manager_llm=LinesManager(), answer_llm=Reader())
    results = run_traps(ServiceSystem(m), traps)
    by_group = {g: [r["memory_ok"] for r in results if r["group"] == g] for g in ("stale", "deletion", "entities")}
    assert by_group["entities"] == [True] * 3            # two similar names stay two memories either way
    assert by_group["stale"] == [memory_passes] * 3 and by_group["deletion"] == [memory_passes] * 3
    if memory_passes:   # one memory of the slot left, with the new value
        stale = results[0]
        assert len(stale["memories"]) == 2 and "pass" in stale
    table = traps_table({manager: results})
    assert table.splitlines()[0] == f"| group | {manager} |" and "| all |" in table
    assert group_counts(results)["stale"][1] == 3


def test_trap_messages_are_dated_by_the_suite_not_the_clock(tmp_path):
    """Each message of a trap is added with its fixed date (a day apart), so the Answer Agent's
    prompt holds the same dates on every run and two systems keeping the same memories are asked
    the same thing."""
    from memr1_jax.eval.traps import message_time
    traps = [t for t in make_traps(2, seed=3) if t.group == "stale"]
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "extraction": "sentences", "manager": "add-all",
                "answer_min_score": -1.0}, answer_llm=Reader())
    run_traps(ServiceSystem(m), traps)
    for trap in traps:
        got = sorted(r["created_at"] for r in m.get_all(user_id=trap.user, run_id=trap.id)["results"])
        assert got == [message_time(i) for i in range(len(trap.messages))]
    assert message_time(0) < message_time(1) < message_time(2) and message_time(1).startswith("2025-03-02T12:00")
