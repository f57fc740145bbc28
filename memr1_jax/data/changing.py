"""Generated conversations whose facts keep changing: the Memory Manager's second data source.

LoCoMo's facts rarely change, so adding every fact is a strong heuristic there. Here each
speaker holds four *slots* (home city, employer, car, gym locker code) that are set in the
first session and later changed ("moved from Austin to Denver in May 2023"), corrected ("lives
in Denver, not Austin as said before") or retracted ("sold the car and no longer has one",
"asked to forget the locker code"), between ordinary facts that never change. Questions ask
for the current value, the previous value and the date of the last change.

Every observation carries its gold operation (``gold_notes``): which slot it belongs to and
whether it sets, changes or retracts it. ``gold_line_ops`` turns them into the line-format
completion a perfect manager writes for one step (``memr1_jax.memory.line_ops``), which gives
the oracle bank (``ManagerConfig(kind="gold")``), the supervised warm start and a dense reward
for the manager (``task.manager_reward="gold"``).

Splits are by seed: conversation ``chg-<split>-<k>`` is drawn from ``random.Random`` seeded with
the split's base (train 10_000, validation 20_000, test 30_000) plus k, so test conversations are
never seen in training, and the output is identical on every machine.

``people=True`` (``data.path="changing-people"``, ids ``chp-<split>-<k>``) is the variant a memory
service meets: a speaker's slots are said one or two at a time over the sessions (early steps see a
memory or two, and a new value beside an unrelated memory is an ADD), relatives live and move
(near-namesakes such as "cousin Cal" and "friend Callum" are two people: never UPDATE one with the
other), and more kinds of everyday fact occur. Each event is said one of several ways
(``_SAYINGS``): with or without the old value, the month, or any date ("I moved to Lisbon."), in
relative time ("last week") and in the first person ("I traded my red Honda for ..."); half the
speakers' observations are the service's own rewriting of what they said (``sentence_facts``:
"Ann sold Ann's red Honda ..."), and one conversation in five has a speaker the service would
call "The user" (an id that is no name).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import re
from typing import Mapping, Sequence

from memr1_jax.agents.message_facts import sentence_facts
from memr1_jax.data.embedded import CITIES, ITEMS, JOBS, MONTHS, NAMES, bare_item, fmt_session_time
from memr1_jax.data.locomo import QA, Conversation, Session, Split, Turn

PREFIX = "chg-"
PEOPLE_PREFIX = "chp-"
SPLIT_SEEDS = {"train": 10_000, "val": 20_000, "test": 30_000}
SIZES = {"train": 64, "val": 8, "test": 16}       # conversations per split of data.path="changing"
SLOTS = ("city", "employer", "car", "locker")
_ID = re.compile(r"^(chg|chp)-(train|val|test)-(\d+)$")

# What a fact does to its slot: "set" (first value), "change" (a new value, the old one kept in
# the text), "correct" (the earlier value was wrong), "end" (no value any more, e.g. the car was
# sold: the memory says so), "retract" (the user asks to forget it: the memory goes); "note" is a
# fact that never changes.

_EMPLOYERS = sorted({e for es in JOBS.values() for e in es})
_CARS = ITEMS["car"]
_NOTES = (  # facts that never change: (what the speaker says, the observation)
    ("I baked sourdough bread last weekend, finally a good loaf.", "{n} baked sourdough bread in {m}."),
    ("I ran my first 10k race this month!", "{n} ran a first 10k race in {m}."),
    ("My sister visited me and we went hiking.", "{n}'s sister visited and they went hiking in {m}."),
    ("I've been reading a long mystery novel before bed.", "{n} read a mystery novel in {m}."),
    ("I started learning to play the ukulele.", "{n} started learning the ukulele in {m}."),
    ("We had a huge thunderstorm and lost power for a day.", "{n} lost power for a day in a storm in {m}."),
    ("I volunteered at the food bank on Saturday.", "{n} volunteered at a food bank in {m}."),
    ("I painted my kitchen a pale green.", "{n} painted the kitchen pale green in {m}."),
)
_MORE_NOTES = (  # people=True: more everyday facts, so an ADD is not tied to eight sentences
    ("I adopted a grey cat from the shelter.", "{n} adopted a grey cat in {m}."),
    ("I signed up for a pottery class on Tuesdays.", "{n} signed up for a pottery class in {m}."),
    ("My team won the office quiz night.", "{n}'s team won the office quiz night in {m}."),
    ("I planted tomatoes and basil on the balcony.", "{n} planted tomatoes and basil in {m}."),
    ("I finally fixed the leaking bathroom tap.", "{n} fixed the leaking bathroom tap in {m}."),
    ("I went to a jazz concert downtown.", "{n} went to a jazz concert in {m}."),
    ("I started a course in Spanish.", "{n} started a Spanish course in {m}."),
    ("I bought a new pair of hiking boots.", "{n} bought new hiking boots in {m}."),
    ("I have been cycling to work every day.", "{n} cycled to work every day in {m}."),
    ("My parents celebrated their fortieth anniversary.", "{n}'s parents celebrated their fortieth anniversary in {m}."),
)
# people=True: relatives, some of them near-namesakes of each other (not the trap suite's pairs,
# memr1_jax/eval/traps.py, which test this on other names).
_RELATIONS = ("cousin", "friend", "neighbour", "colleague", "brother", "sister", "aunt", "uncle")
_NEAR_NAMES = (("Al", "Alan"), ("Bea", "Beatrix"), ("Cal", "Callum"), ("Ed", "Eddie"), ("Gus", "Gustav"),
               ("Kim", "Kimberly"), ("Liz", "Liza"), ("Nat", "Natalie"), ("Rob", "Robin"), ("Val", "Valerie"))
_CODES = ("gym locker code", "alarm code", "garage code", "safe code")
_REPLY = ("Oh wow, really?", "That's a big change!", "Good to know, thanks for telling me.",
          "Nice, tell me more next time.", "Got it.", "I'm glad you told me.")


@dataclasses.dataclass(frozen=True)
class Note:
    """The gold reading of one observation: its slot ("" for facts that never change), kind and
    whose fact it is (a memory of another person's slot is not the one to change)."""
    slot: str
    kind: str
    who: str = ""


def month(d: dt.date) -> str:
    return f"{MONTHS[d.month - 1]} {d.year}"


class _Speaker:
    def __init__(self, name: str, rng: random.Random):
        self.name = name
        self.value = {"city": rng.choice(sorted(CITIES)), "employer": rng.choice(_EMPLOYERS),
                      "car": rng.choice(_CARS), "locker": str(rng.randrange(1000, 10000))}
        self.last: dict[str, tuple[str, str, str, str]] = {}   # slot -> (kind, old, new, month)
        self.last_dia: dict[str, str] = {}                       # slot -> turn of its last observation
        self.code = "gym locker code"                            # what the "locker" slot is called
        self.relatives: dict[str, tuple[str, str]] = {}          # slot "cousin Cal" -> (relation, name)
        self.said: set[str] = set()                              # people=True: own slots said so far
        self.plain: set[str] = set()                             # slots last changed without the old value
        self.talks_to_service = False                            # people=True: observations in the service's words


def _event(rng: random.Random, p: _Speaker, slot: str, kind: str, when: str) -> tuple[str, str] | None:
    """(utterance, observation) for one change of p's slot, applying it; None if not possible."""
    n, old = p.name, p.value.get(slot)
    if kind == "set":
        new = old
        text = {"city": (f"I live in {new}, in a small flat near the river.", f"{n} lives in {new}."),
                "employer": (f"I work at {new} these days.", f"{n} works at {new}."),
                "car": (f"I drive {new}, it's old but reliable.", f"{n} drives {new}."),
                "locker": (f"My gym locker code is {new}, I keep forgetting it.", f"{n}'s gym locker code is {new}.")}
        say, obs = text[slot]
    elif old is None:
        return None
    elif kind == "end" and slot == "car":
        say, obs, new = (f"I sold {old} in {when} and I don't have a car anymore.",
                         f"{n} sold {old} in {when} and no longer has a car.", None)
    elif kind == "retract" and slot == "locker":
        say, obs, new = ("Please forget my gym locker code, I changed gyms.",
                         f"{n} asked to forget {n}'s gym locker code.", None)
    elif kind in ("end", "retract"):
        return None
    else:
        pool = {"city": sorted(CITIES), "employer": _EMPLOYERS, "car": list(_CARS),
                "locker": [str(x) for x in range(1000, 10000)]}[slot]
        new = rng.choice([v for v in pool if v != old])
        if kind == "change":
            say, obs = {"city": (f"Big news: I moved from {old} to {new} in {when}!",
                                 f"{n} moved from {old} to {new} in {when}."),
                        "employer": (f"I left {old} and started a new job at {new} in {when}.",
                                     f"{n} left {old} and started working at {new} in {when}."),
                        "car": (f"I sold {old} and bought {new} in {when}.",
                                f"{n} sold {old} and bought {new} in {when}."),
                        "locker": (f"My gym gave me a new locker, the code is {new} now.",
                                   f"{n}'s gym locker code changed from {old} to {new} in {when}.")}[slot]
        else:  # correct
            say, obs = {"city": (f"Wait, I told you {old} before, but I actually live in {new}.",
                                 f"{n} lives in {new}, not {old} as {n} said before."),
                        "employer": (f"Sorry, I misspoke earlier: I work at {new}, not {old}.",
                                     f"{n} works at {new}, not {old} as {n} said before."),
                        "car": (f"Correction: my car is {new}, not {old}.",
                                f"{n} drives {new}, not {old} as {n} said before."),
                        "locker": (f"Oops, my locker code is {new}, not {old}.",
                                   f"{n}'s gym locker code is {new}, not {old} as {n} said before.")}[slot]
    p.last[slot] = (kind, old or "", new or "", when)
    if new is None:
        p.value.pop(slot)
    else:
        p.value[slot] = new
    return say, obs


# people=True: how users say a slot's events, as (utterance, observation); {n} the speaker, {old} /
# {new} values ({bo} / {bn}: a car without its article), {when} the month, {code} what the code is,
# {rel} the relative. Dateless, relative ("last week") and first-person ("my {bo}") forms are what a
# memory service hears; dated first values keep a date from giving a change away.
_SAYINGS = {
    ("city", "set"): (("I live in {new}, in a small flat near the river.", "{n} lives in {new}."),
                      ("I live in {new}.", "{n} lives in {new}."),
                      ("I moved to {new} last week.", "{n} moved to {new} last week."),
                      ("I just moved to {new} in {when}.", "{n} moved to {new} in {when}."),
                      ("I have lived in {new} since {when}.", "{n} has lived in {new} since {when}.")),
    ("city", "change"): (("Big news: I moved from {old} to {new} in {when}!",
                          "{n} moved from {old} to {new} in {when}."),
                         ("I left {old} and moved to {new}.", "{n} left {old} and moved to {new}."),
                         ("Actually I moved to {new} in {when}.", "{n} moved to {new} in {when}."),
                         ("I moved to {new}.", "{n} moved to {new}."),
                         ("I live in {new} now.", "{n} lives in {new} now."),
                         ("I moved to {new} a few days ago.", "{n} moved to {new} a few days ago.")),
    ("employer", "set"): (("I work at {new} these days.", "{n} works at {new}."),
                          ("I work at {new}.", "{n} works at {new}."),
                          ("I just started at {new}.", "{n} just started at {new}."),
                          ("I started working at {new} in {when}.", "{n} started working at {new} in {when}.")),
    ("employer", "change"): (("I left {old} and started a new job at {new} in {when}.",
                              "{n} left {old} and started working at {new} in {when}."),
                             ("I quit {old}, I work at {new} now.", "{n} quit {old} and works at {new} now."),
                             ("I work at {new} now, since {when}.", "{n} now works at {new}, since {when}."),
                             ("I just started a new job at {new}.", "{n} started a new job at {new}."),
                             ("I got a job at {new} last week.", "{n} got a job at {new} last week.")),
    ("car", "set"): (("I drive {new}, it's old but reliable.", "{n} drives {new}."),
                     ("I drive {new}.", "{n} drives {new}."),
                     ("My car is {new}.", "{n}'s car is {new}."),
                     ("I bought {new} in {when}.", "{n} bought {new} in {when}.")),
    ("car", "change"): (("I sold {old} and bought {new} in {when}.", "{n} sold {old} and bought {new} in {when}."),
                        ("I traded my {bo} for {new}.", "{n} traded {n}'s {bo} for {new}."),
                        ("I got rid of my {bo}, I drive {new} now.", "{n} got rid of {n}'s {bo} and drives {new} now."),
                        ("I drive {new} now.", "{n} drives {new} now.")),
    ("car", "end"): (("I sold {old} in {when} and I don't have a car anymore.",
                      "{n} sold {old} in {when} and no longer has a car."),
                     ("I sold my {bo}, so no car for now.", "{n} sold {n}'s {bo} and has no car now."),
                     ("I have no car anymore.", "{n} has no car anymore.")),
    ("locker", "set"): (("My {code} is {new}, I keep forgetting it.", "{n}'s {code} is {new}."),
                        ("My {code} is {new}.", "{n}'s {code} is {new}."),
                        ("I got a new {code} in {when}, it is {new}.", "{n} got a new {code} in {when}: {new}.")),
    ("locker", "change"): (("My gym gave me a new locker, the code is {new} now.",
                            "{n}'s {code} changed from {old} to {new} in {when}."),
                           ("My {code} is {new} now, since {when}.", "{n}'s {code} is {new} since {when}."),
                           ("My {code} changed to {new}.", "{n}'s {code} changed to {new}.")),
    ("locker", "retract"): (("Please forget my {code}, I changed gyms.", "{n} asked to forget {n}'s {code}."),
                            ("Please forget my {code}.", "{n} asked to forget {n}'s {code}."),
                            ("Can you remove my {code}, I don't use it anymore.", "{n} asked to forget {n}'s {code}.")),
    ("relative", "set"): (("My {rel} lives in {new}.", "{n}'s {rel} lives in {new}."),
                          ("My {rel} moved to {new} in {when}.", "{n}'s {rel} moved to {new} in {when}."),
                          ("My {rel} has lived in {new} for years.", "{n}'s {rel} has lived in {new} for years.")),
    ("relative", "change"): (("My {rel} moved from {old} to {new} in {when}.",
                              "{n}'s {rel} moved from {old} to {new} in {when}."),
                             ("My {rel} moved to {new}.", "{n}'s {rel} moved to {new}."),
                             ("My {rel} lives in {new} now.", "{n}'s {rel} lives in {new} now.")),
}


def _people_saying(rng: random.Random, p: _Speaker, slot: str, say_obs: tuple[str, str],
                   rel: str = "") -> tuple[str, str]:
    """people=True: one of the ways users say the slot's last event (``_SAYINGS``; corrections as
    ``_event`` wrote them), in the service's words for a speaker who ``talks_to_service``."""
    kind, old, new, when = p.last[slot]
    forms = _SAYINGS.get(("relative" if rel else slot, kind))
    if forms:
        say, obs = rng.choice(forms)
        fill = dict(n=p.name, old=old, new=new, bo=bare_item(old), bn=bare_item(new), when=when, code=p.code, rel=rel)
        say_obs = (say.format(**fill), obs.format(**fill))
    if p.talks_to_service:
        # the service stores a message as its sentences in the third person (message_facts)
        facts = sentence_facts(say_obs[0], p.name)
        if len(facts) == 1:
            say_obs = (say_obs[0], facts[0])
    # a change whose observation lost the old value: no question asks for it
    if kind == "change" and bare_item(old) not in say_obs[1]:
        p.plain.add(slot)
    else:
        p.plain.discard(slot)
    return say_obs


def _change_kind(rng: random.Random, p: _Speaker, slot: str, retracts: int = 1) -> str:
    """What happens to a slot said before: a change, a correction (only right after a value was
    said), the car's end or the code's retraction (``retracts`` times as likely as one change)."""
    kinds = ["change", "change"]
    if p.last.get(slot, ("",))[0] in ("set", "change"):
        kinds.append("correct")
    kinds += {"car": ["end"], "locker": ["retract"] * retracts}.get(slot, [])
    return rng.choice(kinds)


def _people_events(rng: random.Random, p: _Speaker, s: int) -> list[tuple[str, str]]:
    """people=True: the speaker's own slot events of session s (slots said one or two at a
    time; a slot said before can change, be corrected, end or be retracted)."""
    unsaid = [x for x in SLOTS if x not in p.said]
    if s == 1:
        return [(slot, "set") for slot in rng.sample(unsaid, rng.choice((1, 2)))]
    cands = unsaid + [x for x in SLOTS if x in p.said and x in p.value]
    events = []
    for slot in rng.sample(cands, min(rng.choice((1, 1, 2)), len(cands))):
        if slot not in p.said:
            events.append((slot, "set"))
            continue
        # "forget it" is what a service must get right: retractions three times as often
        events.append((slot, _change_kind(rng, p, slot, retracts=3)))
    return events


def _relative_event(rng: random.Random, p: _Speaker, when: str, taken: set) -> tuple[str, str, str, str] | None:
    """people=True: (slot, kind, utterance, observation) about one of p's relatives: a new one
    (often a near-namesake of one already named) says where they live, or one moves."""
    if p.relatives and (len(p.relatives) >= 3 or rng.random() < 0.45):
        slot = rng.choice(sorted(p.relatives))
        rel, name = p.relatives[slot]
        old = p.value[slot]
        new = rng.choice([c for c in sorted(CITIES) if c != old])
        p.value[slot], p.last[slot] = new, ("change", old, new, when)
        return (slot, "change", *_people_saying(rng, p, slot, ("", ""), rel=slot))
    partners = [b if a == have else a for a, b in _NEAR_NAMES
                for have in (r[1] for r in p.relatives.values()) if have in (a, b)]
    free = [x for x in partners if x not in taken]
    if free and rng.random() < 0.7:
        name = rng.choice(free)
    else:
        pool = [x for pair in _NEAR_NAMES for x in pair if x not in taken]
        if not pool:
            return None
        name = rng.choice(pool)
    used = {r for r, _ in p.relatives.values()}
    rel = rng.choice([r for r in _RELATIONS if r not in used])
    taken.add(name)
    slot = f"{rel} {name}"
    city = rng.choice(sorted(CITIES))
    p.relatives[slot] = (rel, name)
    p.value[slot], p.last[slot] = city, ("set", "", city, when)
    return slot, "set", *_people_saying(rng, p, slot, ("", ""), rel=slot)


def generate_conversation(split: str, k: int, sessions: int = 5,
                          people: bool = False) -> tuple[Conversation, dict[str, Note]]:
    """Conversation ``chg-<split>-<k>`` (``chp-`` with ``people``: see the module text) and the
    gold notes of its observations (by fact text)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"changing-facts split {split!r}: expected one of {sorted(SPLIT_SEEDS)}")
    # the people variant draws from its own stream, so the chg- conversations stay as they were
    rng = random.Random(f"people-{SPLIT_SEEDS[split] + k}" if people else SPLIT_SEEDS[split] + k)
    speakers = [_Speaker(n, rng) for n in rng.sample(NAMES, 2)]
    if people:
        if rng.random() < 0.2:   # a service names a user whose id is no name "The user" (message_facts)
            speakers[0].name = "The user"
        for p in speakers:
            p.code = rng.choice(_CODES)
            # half the speakers' observations are what the service would store: its sentences, third person
            p.talks_to_service = rng.random() < 0.5
    notes: dict[str, Note] = {}
    day = dt.date(2022, 1, 10) + dt.timedelta(days=rng.randrange(0, 700))
    out_sessions = []
    pool = _NOTES + _MORE_NOTES if people else _NOTES
    fillers = rng.sample(pool, len(pool))
    taken: set = set()
    for s in range(1, sessions + 1):
        turns: list[Turn] = []
        obs: dict[str, list] = {p.name: [] for p in speakers}

        def say(speaker: str, text: str) -> str:
            turns.append(Turn(speaker=speaker, dia_id=f"D{s}:{len(turns) + 1}", text=text))
            return turns[-1].dia_id

        when = month(day)
        for p in speakers:
            other = speakers[1] if p is speakers[0] else speakers[0]
            if people:
                events = _people_events(rng, p, s)
            elif s == 1:
                events = [(slot, "set") for slot in SLOTS]
            else:   # one or two slot events a session; a correction only right after a value was said
                slots = rng.sample([x for x in SLOTS if x in p.value], min(rng.choice((1, 1, 2)), len(p.value)))
                events = [(slot, _change_kind(rng, p, slot)) for slot in slots]

            def tell(slot: str, kind: str, utterance: str, fact: str) -> None:
                dia = p.last_dia[slot] = say(p.name, utterance)
                say(other.name, rng.choice(_REPLY))
                obs[p.name].append((fact, dia))
                notes[fact] = Note(slot, kind, p.name)

            for slot, kind in events:
                ev = _event(rng, p, slot, kind, when)
                if ev is None:
                    continue
                if people:
                    p.said.add(slot)
                    ev = _people_saying(rng, p, slot, tuple(x.replace("gym locker code", p.code) for x in ev))
                tell(slot, kind, *ev)
            if people and rng.random() < (0.5 if s == 1 else 0.6):
                rel = _relative_event(rng, p, when, taken)
                if rel is not None:
                    tell(*rel)
            if s > 1 and rng.random() < (0.6 if people else 0.5) and fillers:
                line, fact = fillers.pop()
                dia = say(p.name, line)
                say(other.name, rng.choice(_REPLY))
                fact = fact.format(n=p.name, m=when)
                obs[p.name].append((fact, dia))
                notes[fact] = Note("", "note", p.name)
        stamp = dt.datetime(day.year, day.month, day.day, rng.randrange(8, 22), rng.randrange(60))
        out_sessions.append(Session(index=s, date_time=fmt_session_time(stamp), turns=tuple(turns),
                                    observations={n: tuple(v) for n, v in obs.items()}))
        day += dt.timedelta(days=rng.randrange(30, 75))
    conv = Conversation(id=f"{PEOPLE_PREFIX if people else PREFIX}{split}-{k:03d}", speaker_a=speakers[0].name,
                        speaker_b=speakers[1].name, sessions=tuple(out_sessions), questions=tuple(_questions(speakers)))
    return conv, notes


def _questions(people: Sequence[_Speaker]) -> list[QA]:
    """Current value (category 4), previous value (1), date of the last change (2), whether a
    retracted car is still there (3); for relatives where they live now and before. Evidence:
    the turn of the slot's last observation. A value never said, or a previous value the
    change did not state, is not asked."""
    qs = []
    for p in people:
        n, code = p.name, p.code
        ask = {"city": (f"Where does {n} live now?", f"Where did {n} live before moving to {{new}}?",
                        f"When did {n} move to {{new}}?"),
               "employer": (f"Where does {n} work now?", f"Where did {n} work before {{new}}?",
                            f"When did {n} start working at {{new}}?"),
               "car": (f"What car does {n} drive now?", f"What car did {n} have before {{new}}?",
                       f"When did {n} buy {{new}}?"),
               "locker": (f"What is {n}'s {code} now?", f"What was {n}'s {code} before {{new}}?",
                          f"When did {n}'s {code} change to {{new}}?")}
        for slot in SLOTS:
            if slot not in p.last:
                continue
            kind, old, new, when = p.last[slot]
            ev = (p.last_dia[slot],)
            now, before, date = ask[slot]
            if slot in p.value:
                qs.append(QA(now, bare_item(p.value[slot]) if slot == "car" else p.value[slot], ev, 4))
            if kind == "change":
                if slot not in p.plain:
                    qs.append(QA(before.format(new=new), bare_item(old) if slot == "car" else old, ev, 1))
                qs.append(QA(date.format(new=new), when, ev, 2))
            if kind == "end":
                qs.append(QA(f"Does {n} still have a car?", "No", ev, 3))
        for slot, (rel, name) in p.relatives.items():
            kind, old, new, _ = p.last[slot]
            ev = (p.last_dia[slot],)
            qs.append(QA(f"Where does {n}'s {rel} {name} live now?", new, ev, 4))
            if kind == "change" and slot not in p.plain:
                qs.append(QA(f"Where did {n}'s {rel} {name} live before moving to {new}?", old, ev, 1))
    return qs


def make_changing_dataset(sizes: Mapping[str, int] | None = None, people: bool = False) -> tuple[Conversation, ...]:
    """The train, validation and test conversations (``SIZES`` per split unless given); the
    people variant (``chp-`` ids) with ``people``."""
    sizes = dict(SIZES, **(sizes or {}))
    return tuple(generate_conversation(split, k, people=people)[0] for split in SPLIT_SEEDS for k in range(sizes[split]))


def changing_split(convs: Sequence[Conversation]) -> Split:
    """Train / validation / test by the split named in each generated id (both variants)."""
    by = {s: tuple(c for c in convs if _ID.match(c.id) and _ID.match(c.id).group(2) == s) for s in SPLIT_SEEDS}
    return Split(train=by["train"], validation=by["val"], test=by["test"])


def is_generated(conv_id: str) -> bool:
    return bool(_ID.match(conv_id))


def gold_notes(conv: Conversation) -> dict[str, Note]:
    """The gold notes of a generated conversation, regenerated from its id (its seed)."""
    m = _ID.match(conv.id)
    if m is None:
        raise ValueError(f"conversation {conv.id!r}: gold operations exist only for the changing-facts "
                         f"generator's conversations ({PREFIX}<split>-<k>, {PEOPLE_PREFIX}<split>-<k>)")
    return generate_conversation(m.group(2), int(m.group(3)), len(conv.sessions), people=m.group(1) == "chp")[1]


def gold_targets(facts: Sequence[str], shown: Sequence[str], notes: Mapping[str, Note]) -> list[tuple[str, set]]:
    """Per fact, the gold event and the shown ids it may target: "ADD" (a note, a first value, or
    a change whose slot is not among the shown memories), "UPDATE" (change, correct, end) or
    "DELETE" (retract) of any shown memory of the fact's slot, or "NONE" (a retraction with
    nothing shown to remove)."""
    out = []
    for fact in facts:
        note = notes.get(fact, Note("", "note"))
        # The shown memories of the same person's slot (a bank may hold other people's too).
        same = {i for i, m in enumerate(shown)
                if note.slot and notes.get(m, Note("", "")).slot == note.slot and notes[m].who == note.who}
        if note.kind == "retract":
            out.append(("DELETE", same) if same else ("NONE", set()))
        elif note.kind in ("change", "correct", "end") and same:
            out.append(("UPDATE", same))
        else:
            out.append(("ADD", set()))
    return out


def gold_line_ops(facts: Sequence[str], shown: Sequence[str], notes: Mapping[str, Note]) -> str:
    """The line-format completion of a perfect manager (lowest shown id of the slot)."""
    lines = []
    for n, (event, ids) in enumerate(gold_targets(facts, shown, notes), 1):
        lines.append(f"{n}: {event}" + (f" {min(ids)}" if ids else ""))
    return "\n".join(lines)


def gold_agreement(completion_ops: Sequence[tuple[str, int | None]], facts: Sequence[str], shown: Sequence[str],
                   notes: Mapping[str, Note]) -> float:
    """Fraction of facts whose decided (event, shown id) is a gold one; ``completion_ops[n]`` is
    fact n's decision (("NONE", None) when undecided)."""
    gold = gold_targets(facts, shown, notes)
    if not gold:
        return 0.0
    hits = sum(ev == g and (not ids or sid in ids) for (ev, sid), (g, ids) in zip(completion_ops, gold))
    return hits / len(gold)
