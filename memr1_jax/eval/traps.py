"""The memory service's trap suite: short conversations a memory layer gets wrong by piling up,
forgetting to forget, merging people or inventing, each scored by deterministic rules.

Four groups, generated from a seed (``make_traps``):
- ``stale``: a value is said, then changed ("Actually I moved to Lisbon"); asked for the current
  value. Passes when the answer holds the new value and not the old one, and no memory holds the
  old value without the new one.
- ``deletion``: a value is said, then the user asks to forget it. Passes when the value is in
  neither the answer nor any memory, and the other fact said is still remembered.
- ``entities``: two people with similar names ("my cousin Jo", "my friend Joe") live in two
  places; asked about one. Passes when the answer holds that one's place and not the other's,
  and each person's place is still in some memory that names them.
- ``never-said``: asked about something never mentioned. Passes when the answer says it does
  not know and what was said is remembered.
The "still remembered" parts keep a system that stores nothing from passing.

Each trap is its own scope (user_id = the speaker's name, run_id = the trap id), each message one
``add`` dated a day after the one before (``message_time``: fixed dates, so the Answer Agent reads the
same prompt whatever the wall clock, and two systems that keep the same memories give the same
answer), then one question. A system is anything with ``add(message, user_id, run_id, timestamp)``,
``memories(user_id, run_id) -> [text]`` and ``answer(question, user_id, run_id) -> text``
(``ServiceSystem`` wraps ``memr1_jax.Memory``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import re
from typing import Callable, Protocol, Sequence

GROUPS = ("stale", "deletion", "entities", "never-said")
NAMES = ("alice", "bruno", "chen", "dara", "emeka", "farah", "goran", "hana", "ivan", "jun", "kofi", "lena")
CITIES = ("Austin", "Denver", "Porto", "Lisbon", "Leeds", "York", "Quito", "Lima", "Oslo", "Graz", "Turin", "Kyoto")
EMPLOYERS = ("Acme Robotics", "Bluefin Bank", "Cedar Hospital", "Delta Airlines", "Everline Press", "Fjord Foods")
CARS = ("Honda Civic", "Toyota Corolla", "Ford Focus", "Mazda 3", "Kia Rio", "Volvo V60")
PAIRS = (("Jo", "Joe"), ("Ann", "Anna"), ("Dan", "Danny"), ("Lee", "Leigh"), ("Max", "Maxine"), ("Tom", "Tomas"))
FILLERS = (("I started learning the ukulele.", "ukulele"), ("I baked sourdough bread last weekend.", "sourdough"),
           ("I ran my first marathon this month.", "marathon"), ("I painted my kitchen pale green.", "kitchen"),
           ("I volunteered at the food bank on Saturday.", "food bank"))
NEVER = (("What car does {N} drive?", "car"), ("What is the name of {N}'s dog?", "dog"),
         ("Which band is {N}'s favourite?", "band"), ("What is {N}'s phone number?", "phone"))
DONT_KNOW = re.compile(r"\b(don'?t|do not|doesn'?t|does not|didn'?t|did not) (know|mention|say)|\bno (information|"
                       r"memory|memories|record|mention)\b|\bnot (mentioned|known|sure|stated|say)\b|\bunknown\b", re.I)


@dataclasses.dataclass(frozen=True)
class Trap:
    id: str
    group: str
    user: str                       # user_id: a name, so facts name the speaker
    messages: tuple[str, ...]       # one add each, in order
    question: str
    expected: str = ""              # must be in the answer ("" for never-said)
    forbidden: str = ""             # must not be in the answer (nor, per group, in the memories)
    kept: tuple[tuple[str, ...], ...] = ()   # words that must stand together in some memory, per tuple


def _has(text: str, value: str) -> bool:
    return bool(value) and re.search(rf"\b{re.escape(value.lower())}\b", text.lower()) is not None


def make_traps(per_group: int = 8, seed: int = 0) -> list[Trap]:
    """``per_group`` traps of each group, reproducible from ``seed``."""
    rng = random.Random(seed)
    out = []
    for k in range(per_group):
        n = rng.choice(NAMES)
        name = n.capitalize()
        filler, _ = rng.choice(FILLERS)
        kind = k % 3
        if kind == 0:
            a, b = rng.sample(CITIES, 2)
            msgs, q = (f"I live in {a}.", filler, f"Actually I moved to {b} last month."), f"Where does {name} live now?"
        elif kind == 1:
            a, b = rng.sample(EMPLOYERS, 2)
            msgs, q = (f"I work at {a}.", filler, f"I left {a} and now I work at {b}."), f"Where does {name} work now?"
        else:
            a, b = rng.sample(CARS, 2)
            msgs, q = (f"I drive a {a}.", filler, f"I sold my {a} and bought a {b}."), f"What car does {name} drive now?"
        out.append(Trap(f"stale-{k}", "stale", n, msgs, q, expected=b, forbidden=a))
    for k in range(per_group):
        n = rng.choice(NAMES)
        name, (filler, key) = n.capitalize(), rng.choice(FILLERS)
        what = rng.choice(("gym locker code", "door code", "bank PIN"))
        code = str(rng.randrange(1000, 10000))
        msgs = (f"My {what} is {code}.", filler, f"Please forget my {what}.")
        out.append(Trap(f"deletion-{k}", "deletion", n, msgs, f"What is {name}'s {what}?", forbidden=code,
                        kept=((key,),)))
    for k in range(per_group):
        n = rng.choice(NAMES)
        name = n.capitalize()
        (x, y), (a, b) = rng.choice(PAIRS), rng.sample(CITIES, 2)
        msgs = (f"My cousin {x} lives in {a}.", f"My friend {y} lives in {b}.")
        if k % 2:
            out.append(Trap(f"entities-{k}", "entities", n, msgs, f"Where does {name}'s friend {y} live?",
                            expected=b, forbidden=a, kept=((x, a), (y, b))))
        else:
            out.append(Trap(f"entities-{k}", "entities", n, msgs, f"Where does {name}'s cousin {x} live?",
                            expected=a, forbidden=b, kept=((x, a), (y, b))))
    for k in range(per_group):
        n = rng.choice(NAMES)
        name = n.capitalize()
        q, _ = NEVER[k % len(NEVER)]
        city, (filler, key) = rng.choice(CITIES), rng.choice(FILLERS)
        out.append(Trap(f"never-said-{k}", "never-said", n, (f"I live in {city}.", filler), q.format(N=name),
                        kept=((city,), (key,))))
    return out


def score(trap: Trap, answer: str, memories: Sequence[str]) -> dict:
    """The rules of the trap's group: {"pass", "answer_ok", "memory_ok"}."""
    if trap.group == "never-said":
        answer_ok = bool(DONT_KNOW.search(answer))
    else:
        answer_ok = (not trap.expected or _has(answer, trap.expected)) and not _has(answer, trap.forbidden)
    memory_ok = all(any(all(_has(m, w) for w in words) for m in memories) for words in trap.kept)
    if trap.group == "stale":
        memory_ok = (any(_has(m, trap.expected) for m in memories)
                     and all(_has(m, trap.expected) for m in memories if _has(m, trap.forbidden)))
    elif trap.group == "deletion":
        memory_ok = memory_ok and not any(_has(m, trap.forbidden) for m in memories)
    return {"pass": answer_ok and memory_ok, "answer_ok": answer_ok, "memory_ok": memory_ok}


class System(Protocol):
    def add(self, message: str, user_id: str, run_id: str, timestamp: str) -> None: ...

    def memories(self, user_id: str, run_id: str) -> list[str]: ...

    def answer(self, question: str, user_id: str, run_id: str) -> str: ...


class ServiceSystem:
    """``memr1_jax.Memory`` as a trap-suite system."""

    def __init__(self, memory):
        self.memory = memory

    def add(self, message, user_id, run_id, timestamp):
        self.memory.add(message, user_id=user_id, run_id=run_id, timestamp=timestamp)

    def memories(self, user_id, run_id):
        return [r["memory"] for r in self.memory.get_all(user_id=user_id, run_id=run_id, top_k=1000)["results"]]

    def answer(self, question, user_id, run_id):
        return self.memory.answer(question, user_id=user_id, run_id=run_id)["answer"]


def message_time(index: int) -> str:
    """When a trap's message number ``index`` was said: noon UTC, one day apart from 1 March 2025."""
    return (dt.datetime(2025, 3, 1, 12, tzinfo=dt.timezone.utc) + dt.timedelta(days=index)).isoformat()


def run_traps(system: System, traps: Sequence[Trap], progress: Callable[[int], None] | None = None) -> list[dict]:
    """Per trap: its id and group, the answer, the memories left and the score."""
    out = []
    for trap in traps:
        for i, msg in enumerate(trap.messages):
            system.add(msg, trap.user, trap.id, message_time(i))
        answer = system.answer(trap.question, trap.user, trap.id)
        memories = system.memories(trap.user, trap.id)
        out.append({"id": trap.id, "group": trap.group, "question": trap.question, "answer": answer,
                    "memories": memories, **score(trap, answer, memories)})
        if progress:
            progress(1)
    return out


def group_counts(results: Sequence[dict]) -> dict[str, tuple[int, int]]:
    """{group: (passed, total)} in GROUPS order."""
    return {g: (sum(r["pass"] for r in results if r["group"] == g), sum(r["group"] == g for r in results))
            for g in GROUPS if any(r["group"] == g for r in results)}


def traps_table(by_system: dict[str, Sequence[dict]]) -> str:
    """A markdown table: one row per group, one column per system (passed / total), and a total."""
    names = list(by_system)
    counts = {s: group_counts(r) for s, r in by_system.items()}
    lines = ["| group | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for g in GROUPS:
        if any(g in c for c in counts.values()):
            lines.append(f"| {g} | " + " | ".join("{}/{}".format(*counts[s].get(g, (0, 0))) for s in names) + " |")
    lines.append("| all | " + " | ".join(f"{sum(p for p, _ in counts[s].values())}/{sum(n for _, n in counts[s].values())}"
                                         for s in names) + " |")
    return "\n".join(lines)
