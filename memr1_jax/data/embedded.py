"""A small LoCoMo-shaped dataset generated in code (the project's default data).

Ten two-speaker, multi-session conversations where facts change over time:
people move to new cities, change jobs, adopt and lose pets, buy and lose
things, take up hobbies and travel. Sessions carry LoCoMo-style dates
("1:56 pm on 8 May, 2023"), turns have dia_ids ``D<session>:<turn>``, each
session has per-speaker observations ``[fact, dia_id]`` and a summary, and
questions come with evidence dia_ids. Speakers mention events relative to the
session date ("yesterday", "last week", "last month"), so temporal answers
need the date, and latest-state questions ("where does X live now?") need the
most recent of several conflicting facts.

Category numbers follow LoCoMo's *content* semantics, so the same evaluation
code and label table apply as for LoCoMo:
1 multi-hop / multi-answer (lists, "where was X living when ..."),
2 temporal ("when did ..."), 3 open-domain / commonsense (country and language
of a city, "does X still have ..."), 4 single-hop (one fact, latest state).
Under the paper (Mem0) naming these print as 1 "single-hop", 2 "temporal",
3 "multi-hop", 4 "open-domain" (see :mod:`memr1_jax.data.locomo`).

Everything is drawn from ``random.Random`` seeded per conversation, so the
output is identical on every run and machine. Answers are a few words so exact
match is meaningful.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from typing import Sequence

from memr1_jax.data.locomo import QA, Conversation, Session, Split, Turn, split_conversations

EMBEDDED_TRAIN_IDS = ("emb-01",)
EMBEDDED_VALIDATION_IDS = ("emb-02",)


@dataclasses.dataclass(frozen=True)
class EmbeddedConfig:
    seed: int = 0
    num_conversations: int = 10
    train_sessions: int = 12          # the training conversation is longer (as conv-26 is in LoCoMo)
    sessions: int = 6                 # every other conversation
    start: dt.date = dt.date(2023, 1, 9)


# ----------------------------------------------------------------------------- pools

NAMES = ("Maya", "Jordan", "Priya", "Lucas", "Aisha", "Tom", "Elena", "Kenji", "Sofia", "Omar",
         "Grace", "Daniel", "Nora", "Felix", "Hana", "Marco", "Leah", "Victor", "Zoe", "Samir",
         "Ines", "Caleb", "Amara", "Theo")

# city -> (country, main language)
CITIES = {
    "Austin": ("United States", "English"), "Denver": ("United States", "English"),
    "Seattle": ("United States", "English"), "Chicago": ("United States", "English"),
    "Toronto": ("Canada", "English"), "Montreal": ("Canada", "French"),
    "Lisbon": ("Portugal", "Portuguese"), "Madrid": ("Spain", "Spanish"),
    "Mexico City": ("Mexico", "Spanish"), "Buenos Aires": ("Argentina", "Spanish"),
    "Berlin": ("Germany", "German"), "Munich": ("Germany", "German"), "Vienna": ("Austria", "German"),
    "Amsterdam": ("Netherlands", "Dutch"), "Lyon": ("France", "French"), "Rome": ("Italy", "Italian"),
    "Tokyo": ("Japan", "Japanese"), "Osaka": ("Japan", "Japanese"), "Seoul": ("South Korea", "Korean"),
    "Sydney": ("Australia", "English"), "Dublin": ("Ireland", "English"),
    "Stockholm": ("Sweden", "Swedish"), "Athens": ("Greece", "Greek"), "Prague": ("Czech Republic", "Czech"),
    "Warsaw": ("Poland", "Polish"), "Copenhagen": ("Denmark", "Danish"),
}

JOBS = {
    "nurse": ("Harbor Health", "Willow Creek Clinic", "Saint Anne Hospital"),
    "software engineer": ("Northwind Labs", "Orbit Analytics", "Brightline"),
    "teacher": ("Pinecrest Academy", "Oak Hill School", "Lakeside High"),
    "chef": ("Maple Street Bistro", "Greenleaf Kitchen", "The Copper Pot"),
    "architect": ("Keystone Architects", "Arcform Studio", "Lumen Design"),
    "graphic designer": ("Bluefin Studio", "Lumen Design", "Atlas Media"),
    "accountant": ("Summit Bank", "Cedar Partners", "Ledgerly"),
    "journalist": ("Atlas Media", "The Daily Ledger", "Metro Radio"),
    "data analyst": ("Orbit Analytics", "Summit Bank", "Silverline Logistics"),
    "veterinarian": ("Happy Paws Clinic", "Green Valley Vets", "Riverbend Animal Hospital"),
    "photographer": ("Lightbox Photo", "Bluefin Studio", "Atlas Media"),
}

SPECIES = ("dog", "cat", "rabbit", "parrot", "hamster", "turtle")
PET_NAMES = ("Biscuit", "Luna", "Milo", "Pepper", "Rex", "Coco", "Mochi", "Ziggy", "Olive", "Bruno",
             "Nala", "Pickles", "Waffles", "Juniper", "Scout", "Toffee", "Pixel", "Basil")

ITEMS = {
    "car": ("a red Honda", "a blue Subaru", "a white Toyota", "a black Volvo", "a silver Mazda", "a green Jeep"),
    "bike": ("a red mountain bike", "a blue road bike", "an electric bike", "a vintage cruiser"),
    "guitar": ("a Fender guitar", "a Yamaha guitar", "a Gibson guitar"),
    "camera": ("a Canon camera", "a Nikon camera", "a Fujifilm camera"),
    "kayak": ("a green kayak", "an orange kayak", "an inflatable kayak"),
}

HOBBIES = ("pottery", "rock climbing", "salsa dancing", "watercolor painting", "yoga", "chess",
           "sourdough baking", "surfing", "knitting", "piano", "bouldering", "woodworking")

TRIPS = ("Iceland", "Kyoto", "the Grand Canyon", "Banff", "Marrakech", "Crete", "Patagonia",
         "Yellowstone", "the Scottish Highlands", "Bali", "Cape Town", "Santorini", "Lake Como")

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")

# Relative time phrases: (phrase, how to get the event date, how LoCoMo-style gold answers read).
_WHEN = ("today", "yesterday", "two days ago", "last weekend", "last week", "last month")


def fmt_day(d: dt.date) -> str:
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def fmt_session_time(t: dt.datetime) -> str:
    """LoCoMo session timestamp, e.g. ``"1:56 pm on 8 May, 2023"``."""
    hour = t.hour % 12 or 12
    return f"{hour}:{t.minute:02d} {'am' if t.hour < 12 else 'pm'} on {t.day} {MONTHS[t.month - 1]}, {t.year}"


def _resolve_when(phrase: str, d: dt.date) -> tuple[dt.date, str]:
    """Event date and the gold answer for an event mentioned on day d with the phrase."""
    if phrase == "today":
        return d, fmt_day(d)
    if phrase == "yesterday":
        e = d - dt.timedelta(days=1)
        return e, fmt_day(e)
    if phrase == "two days ago":
        e = d - dt.timedelta(days=2)
        return e, fmt_day(e)
    if phrase == "last weekend":
        back = (d.weekday() - 5) % 7 or 7          # the Saturday before d
        return d - dt.timedelta(days=back), f"the weekend before {fmt_day(d)}"
    if phrase == "last week":
        return d - dt.timedelta(days=7), f"the week before {fmt_day(d)}"
    if phrase == "last month":
        first = d.replace(day=1)
        prev = first - dt.timedelta(days=1)
        return prev.replace(day=min(15, prev.day)), f"{MONTHS[prev.month - 1]} {prev.year}"
    raise ValueError(phrase)


# ----------------------------------------------------------------------------- templates

_GREET = (
    "Hey {o}! Good to hear from you. How have you been?",
    "Hi {o}! It feels like ages since we last talked. What's new?",
    "{o}! Perfect timing, I was just thinking about you. How are things?",
    "Hey {o}, got a minute to catch up?",
    "Morning {o}! How's your week going so far?",
)
_GREET_BACK = (
    "Hey {o}! Busy as always, but good. You?",
    "Hi {o}! Always happy to catch up. A lot has happened actually.",
    "Pretty good, thanks for asking! Let me tell you what's been going on.",
    "Oh, it's been a whirlwind. Where do I even start?",
)
_CLOSE = (
    "I have to run, but this was lovely. Talk soon!",
    "Okay, I should get going. Let's catch up again soon!",
    "Great chatting, {o}. Take care!",
    "Time flies! I need to head out, but keep me posted.",
)
_CLOSE_BACK = ("Bye {o}, talk soon!", "Take care, {o}!", "Will do. Have a great evening!",
               "Same here. Catch you later!")

_ANNOUNCE = {
    "intro_city": ("Life in {city} is treating me well. I still can't get over the food scene here.",
                   "I'm still in {city}, and honestly I love it more every month.",
                   "Things are calm here in {city}. The neighborhood is finally starting to feel like home."),
    "intro_job": ("Work keeps me busy. Being a {role} at {employer} is never boring.",
                  "I'm still working as a {role} at {employer}. Long days, but I like the team.",
                  "My job as a {role} at {employer} has been intense lately, but rewarding."),
    "intro_pet": ("And my {species} {pet} keeps me company in the evenings.",
                  "At home it's just me and {pet}, my {species}. Best roommate ever."),
    "move": ("Big news: I moved to {city} {when}! Leaving {old} was harder than I expected.",
             "I finally did it. I packed up everything and moved from {old} to {city} {when}.",
             "So I moved to {city} {when}. The apartment is still full of boxes, but I'm happy I left {old}."),
    "job": ("I started a new job {when}! I'm a {role} at {employer} now.",
            "Guess what: I left {old_employer} and started at {employer} {when}. I'm working as a {role}.",
            "I accepted an offer as a {role} at {employer}. My first day was {when}."),
    "adopt": ("We adopted a {species} {when}! {pet} is already running the house.",
              "I have a new family member: I adopted a {species} named {pet} {when}.",
              "Meet {pet}! I brought this little {species} home from the shelter {when}."),
    "lose_pet": ("I have some sad news. {pet} passed away {when}. The house feels so empty.",
                 "{pet} ran away {when}. We searched the whole neighborhood but never found my {species}.",
                 "I had to say goodbye to {pet} {when}. My {species} was getting very old."),
    "buy": ("I treated myself and bought {item} {when}!",
            "I finally bought {item} {when}. I've wanted one for years.",
            "I picked up {item} {when}. It was on sale, so I couldn't resist."),
    "replace": ("I sold {old_item} and bought {item} {when}.",
                "Out with the old: I got rid of {old_item} and bought {item} {when}."),
    "lose_item": ("Ugh, I lost {item} on the train {when}. Nobody has turned it in.",
                  "Someone stole {item} {when}. I'm still annoyed about it.",
                  "I had to give away {item} {when}. There was just no room for it anymore."),
    "hobby": ("I signed up for {hobby} classes {when}. I'm terrible, but it's so much fun.",
              "I took up {hobby} {when}! A friend dragged me along and now I'm hooked.",
              "New hobby alert: I started {hobby} {when}."),
    "trip": ("I just got back from {place}! I went {when} and it was breathtaking.",
             "I went to {place} {when}. The trip was short but totally worth it.",
             "Did I tell you I went to {place} {when}? I took hundreds of photos."),
}
_REACT = {
    "move": ("Wow, {city}! How are you settling in?", "That's huge! Do you like {city} so far?",
             "Congrats on the move! I bet {city} is an adventure."),
    "job": ("Congratulations! How are your new coworkers?", "That's amazing news, {o}! You deserve it.",
            "A {role}, nice! How was the first week?"),
    "adopt": ("Aww, {pet} is a great name! I need pictures.", "I'm so happy for you! A {species} is a lot of fun.",
              "That's wonderful. How is {pet} settling in?"),
    "lose_pet": ("Oh no, I'm so sorry, {o}. {pet} was lucky to have you.", "That's heartbreaking. I'm here if you need anything.",
                 "I'm really sorry. Losing a pet is so hard."),
    "buy": ("Nice! You've earned it.", "Ooh, congrats! Let me know how you like it.", "That's exciting, enjoy it!"),
    "replace": ("Good call, the old one had seen better days.", "Nice upgrade!"),
    "lose_item": ("Oh no, that's awful. I'm sorry, {o}.", "That's so frustrating!", "Ugh, what a pain."),
    "hobby": ("That sounds like so much fun!", "{hobby}? I'd love to try that sometime.", "Good for you! Hobbies keep us sane."),
    "trip": ("Jealous! {place} has always been on my list.", "That sounds incredible! What was the highlight?",
             "Wow, {place}! You have to show me the photos."),
    "intro": ("That's great to hear.", "Glad things are going well!", "Sounds like a good routine."),
}
_FOLLOW = {
    "move": ("It's a big change, but the neighbors are friendly.", "I still get lost on the way to the grocery store.",
             "The rent is higher, but the view is worth it."),
    "job": ("Everyone has been welcoming so far.", "The commute is a lot shorter, which is a relief.",
            "There's a lot to learn, but I like the challenge."),
    "adopt": ("It chewed one of my shoes already, but I forgive it.", "I'll send you pictures tonight.",
              "It sleeps at the foot of my bed every night."),
    "lose_pet": ("Thanks. I keep looking at old photos.", "Thank you, that means a lot.", "It'll take some time."),
    "buy": ("I'll show you next time you visit.", "Best purchase I've made in a while.", "Now I just need time to use it."),
    "replace": ("The new one is so much nicer.", "I don't miss the old one at all."),
    "lose_item": ("Lesson learned, I guess.", "I'll have to save up for a new one.", "Oh well, it's just stuff."),
    "hobby": ("My instructor is very patient with me.", "I go every Thursday evening now.", "I'm already planning to buy my own gear."),
    "trip": ("The food alone was worth it.", "I'd go back in a heartbeat.", "I already miss it."),
}
# (line, reply, observation about the speaker)
_FILLER = (
    ("I just finished a mystery novel I couldn't put down.", "Ooh, I need something new to read. Send me the title!",
     "{n} finished reading a gripping mystery novel."),
    ("The weather has been so strange this week.", "Same here. I never know what to wear anymore.",
     "{n} found the weather strange that week."),
    ("I tried a new pasta recipe last night and it actually worked.", "Look at you! Save me a plate next time.",
     "{n} cooked a new pasta recipe the night before."),
    ("We've been binge-watching a baking show in the evenings.", "Those shows always make me hungry.",
     "{n} has been watching a baking show in the evenings."),
    ("I've been trying to go to bed earlier.", "How's that going? I'm a night owl, so I never manage.",
     "{n} is trying to go to bed earlier."),
    ("My sister visited over the weekend, which was lovely.", "That's nice! Family visits are the best.",
     "{n}'s sister visited over the weekend."),
    ("I started drinking way too much coffee again.", "Ha, relatable. My coffee machine is my best friend.",
     "{n} has been drinking a lot of coffee."),
)


# ----------------------------------------------------------------------------- simulation

@dataclasses.dataclass
class _Event:
    kind: str
    who: str
    session: int
    dia_id: str
    date: dt.date
    answer_date: str
    data: dict


@dataclasses.dataclass
class _Person:
    name: str
    city: str
    role: str
    employer: str
    city_dia: str = ""
    intro_city_dia: str = ""
    intro_job_dia: str = ""
    job_dia: str = ""
    pets: dict = dataclasses.field(default_factory=dict)      # name -> species (current)
    items: dict = dataclasses.field(default_factory=dict)     # kind -> description (current)
    hobbies: list = dataclasses.field(default_factory=list)
    initial_pet: tuple | None = None                           # (name, species, dia_id)


class _Dialogue:
    def __init__(self, session: int):
        self.session, self.turns, self.facts = session, [], {}

    def say(self, speaker: str, text: str, fact: str | None = None) -> str:
        dia_id = f"D{self.session}:{len(self.turns) + 1}"
        self.turns.append(Turn(speaker=speaker, dia_id=dia_id, text=text))
        if fact:
            self.facts.setdefault(speaker, []).append((fact, dia_id))
        return dia_id


def _pick_when(rng: random.Random, day: dt.date, prev_day: dt.date | None) -> str:
    options = [w for w in _WHEN if prev_day is None or _resolve_when(w, day)[0] > prev_day]
    return rng.choice(options)


def _feasible_kinds(p: _Person) -> list[str]:
    kinds = ["job", "adopt", "buy", "hobby", "trip"]
    if p.pets:
        kinds.append("lose_pet")
    if p.items:
        kinds.append("lose_item")
    return kinds


def _generate_conversation(idx: int, names: tuple[str, str], n_sessions: int, cfg: EmbeddedConfig):
    rng = random.Random(cfg.seed * 100_003 + idx)
    cities = rng.sample(sorted(CITIES), 8)
    people = []
    for k, name in enumerate(names):
        role = rng.choice(sorted(JOBS))
        people.append(_Person(name=name, city=cities[k], role=role, employer=rng.choice(JOBS[role])))
    free_cities = cities[2:]
    pet_names = rng.sample(PET_NAMES, 8)
    trips = rng.sample(TRIPS, 8)
    hobbies = rng.sample(HOBBIES, 8)

    # Plan moves: the first speaker moves twice, the second once (more in long conversations).
    n_moves = [2, 1] if n_sessions < 10 else [3, 2]
    plan: dict[tuple[int, int], list[str]] = {}
    for k in range(2):
        slots = sorted(rng.sample(range(2, n_sessions + 1), n_moves[k]))
        for s in slots:
            plan.setdefault((k, s), []).append("move")

    events: list[_Event] = []
    sessions = []
    day = cfg.start + dt.timedelta(days=rng.randrange(0, 60) + 45 * idx)
    prev_day = None
    for s in range(1, n_sessions + 1):
        stamp = dt.datetime(day.year, day.month, day.day, rng.randrange(8, 22), rng.randrange(60))
        d = _Dialogue(s)
        opener = rng.randrange(2)
        a, b = people[opener], people[1 - opener]
        d.say(a.name, rng.choice(_GREET).format(o=b.name))
        d.say(b.name, rng.choice(_GREET_BACK).format(o=a.name))
        order = [a, b] if rng.random() < 0.5 else [b, a]
        for p in order:
            other = people[1] if p is people[0] else people[0]
            k = people.index(p)
            if s == 1:
                p.city_dia = p.intro_city_dia = d.say(p.name, rng.choice(_ANNOUNCE["intro_city"]).format(city=p.city),
                                   f"{p.name} lives in {p.city}.")
                d.say(other.name, rng.choice(_REACT["intro"]))
                p.job_dia = p.intro_job_dia = d.say(p.name, rng.choice(_ANNOUNCE["intro_job"]).format(role=p.role, employer=p.employer),
                                  f"{p.name} works as a {p.role} at {p.employer}.")
                if rng.random() < 0.6:
                    pet, species = pet_names.pop(), rng.choice(SPECIES)
                    dia = d.say(p.name, rng.choice(_ANNOUNCE["intro_pet"]).format(pet=pet, species=species),
                                f"{p.name} has a {species} named {pet}.")
                    p.pets[pet] = species
                    p.initial_pet = (pet, species, dia)
                d.say(other.name, rng.choice(_REACT["intro"]))
                continue
            kinds = list(plan.get((k, s), []))
            if not kinds or rng.random() < 0.35:
                kinds.append(rng.choice(_feasible_kinds(p)))
            for kind in kinds:
                when = _pick_when(rng, day, prev_day)
                edate, ans = _resolve_when(when, day)
                ev = _make_event(rng, kind, p, other, d, when, s, edate, ans, free_cities, pet_names, trips, hobbies)
                if ev is not None:
                    events.append(ev)
        if rng.random() < 0.7:
            f = rng.choice(_FILLER)
            speaker = rng.choice(people)
            other = people[1] if speaker is people[0] else people[0]
            d.say(speaker.name, f[0], f[2].format(n=speaker.name))
            d.say(other.name, f[1])
        closer = rng.choice(people)
        other = people[1] if closer is people[0] else people[0]
        d.say(closer.name, rng.choice(_CLOSE).format(o=other.name))
        d.say(other.name, rng.choice(_CLOSE_BACK).format(o=closer.name))
        date_time = fmt_session_time(stamp)
        obs = {p.name: tuple(d.facts.get(p.name, ())) for p in people}
        summary = (f"{people[0].name} and {people[1].name} talked at {date_time}. "
                   + " ".join(f for p in people for f, _ in d.facts.get(p.name, ())))
        sessions.append(Session(index=s, date_time=date_time, turns=tuple(d.turns),
                                observations=obs, summary=summary))
        prev_day = day
        day = day + dt.timedelta(days=rng.randrange(16, 45))
    questions = _make_questions(rng, people, events)
    conv = Conversation(id=f"emb-{idx + 1:02d}", speaker_a=people[0].name, speaker_b=people[1].name,
                        sessions=tuple(sessions), questions=tuple(questions))
    return conv


def _make_event(rng, kind, p: _Person, other: _Person, d: _Dialogue, when, s, edate, ans,
                free_cities, pet_names, trips, hobbies) -> _Event | None:
    fmt = dict(when=when, o=other.name)
    data: dict = {}
    if kind == "move":
        if not free_cities:
            return None
        city = free_cities.pop()
        data = dict(city=city, old=p.city)
        fmt.update(data)
        fact = f"{p.name} moved from {p.city} to {city} {when}."
    elif kind == "job":
        role = rng.choice([r for r in sorted(JOBS) if r != p.role] + [p.role])
        employer = rng.choice([e for e in JOBS[role] if e != p.employer])
        data = dict(role=role, employer=employer, old_employer=p.employer, old_role=p.role)
        fmt.update(data)
        fact = f"{p.name} started working as a {role} at {employer} {when}, leaving {p.employer}."
    elif kind == "adopt":
        if not pet_names:
            return None
        species = rng.choice([sp for sp in SPECIES if sp not in p.pets.values()])
        data = dict(pet=pet_names.pop(), species=species)
        fmt.update(data)
        fact = f"{p.name} adopted a {species} named {data['pet']} {when}."
    elif kind == "lose_pet":
        pet = rng.choice(sorted(p.pets))
        data = dict(pet=pet, species=p.pets[pet])
        fmt.update(data)
        fact = f"{p.name} lost the {data['species']} {pet} {when}."
    elif kind == "buy":
        item_kind = rng.choice(sorted(ITEMS))
        old_item = p.items.get(item_kind)
        item = rng.choice([x for x in ITEMS[item_kind] if x != old_item])
        data = dict(kind=item_kind, item=item, old_item=old_item)
        fmt.update(data)
        if old_item:
            kind = "replace"
            fact = f"{p.name} sold {old_item} and bought {item} {when}."
        else:
            fact = f"{p.name} bought {item} {when}."
    elif kind == "lose_item":
        item_kind = rng.choice(sorted(p.items))
        data = dict(kind=item_kind, item=p.items[item_kind])
        fmt.update(data)
        fact = f"{p.name} no longer has {data['item']}; it was lost or given away {when}."
    elif kind == "hobby":
        if not hobbies:
            return None
        data = dict(hobby=hobbies.pop())
        fmt.update(data)
        fact = f"{p.name} took up {data['hobby']} {when}."
    elif kind == "trip":
        if not trips:
            return None
        data = dict(place=trips.pop())
        fmt.update(data)
        fact = f"{p.name} went on a trip to {data['place']} {when}."
    else:
        raise ValueError(kind)

    def cap(t: str) -> str:
        return t[0].upper() + t[1:]
    dia = d.say(p.name, cap(rng.choice(_ANNOUNCE[kind]).format(**fmt)), fact)
    d.say(other.name, cap(rng.choice(_REACT[kind]).format(**fmt)))
    if rng.random() < 0.6:
        d.say(p.name, rng.choice(_FOLLOW[kind]))
    # Apply the state change after the dialogue so announcements can mention the old value.
    if kind == "move":
        p.city, p.city_dia = data["city"], dia
    elif kind == "job":
        p.role, p.employer, p.job_dia = data["role"], data["employer"], dia
    elif kind == "adopt":
        p.pets[data["pet"]] = data["species"]
    elif kind == "lose_pet":
        del p.pets[data["pet"]]
    elif kind in ("buy", "replace"):
        p.items[data["kind"]] = data["item"]
    elif kind == "lose_item":
        del p.items[data["kind"]]
    elif kind == "hobby":
        p.hobbies.append(data["hobby"])
    return _Event(kind=kind, who=p.name, session=s, dia_id=dia, date=edate, answer_date=ans, data=data)


def bare_item(item: str) -> str:
    """"a red Honda" -> "red Honda": an item as a short answer names it."""
    return item.split(" ", 1)[1] if item.split(" ", 1)[0] in ("a", "an") else item


def _make_questions(rng: random.Random, people: list[_Person], events: list[_Event]) -> list[QA]:
    qs: list[QA] = []

    def add(question, answer, evidence, category):
        qs.append(QA(question=question, answer=answer, evidence=tuple(evidence), category=category))

    for p in people:
        mine = [e for e in events if e.who == p.name]
        moves = [e for e in mine if e.kind == "move"]
        jobs = [e for e in mine if e.kind == "job"]
        # --- 4: single fact, latest state
        add(f"Where does {p.name} live now?", p.city, [p.city_dia], 4)
        add(f"Where does {p.name} work now?", p.employer, [p.job_dia], 4)
        add(f"What is {p.name}'s job now?", p.role, [p.job_dia], 4)
        species_count: dict[str, int] = {}
        for sp in p.pets.values():
            species_count[sp] = species_count.get(sp, 0) + 1
        for pet, sp in p.pets.items():
            if species_count[sp] == 1:
                ev = [e.dia_id for e in mine if e.kind == "adopt" and e.data["pet"] == pet]
                if not ev and p.initial_pet and p.initial_pet[0] == pet:
                    ev = [p.initial_pet[2]]
                add(f"What is the name of {p.name}'s {sp}?", pet, ev, 4)
        for kind, item in p.items.items():
            ev = [e.dia_id for e in mine if e.kind in ("buy", "replace") and e.data["item"] == item][-1:]
            add(f"What {kind} does {p.name} have now?", bare_item(item), ev, 4)
        if p.hobbies:
            ev = [e.dia_id for e in mine if e.kind == "hobby"][-1:]
            add(f"What hobby did {p.name} take up most recently?", p.hobbies[-1], ev, 4)
        by_month: dict[str, list[_Event]] = {}
        for e in mine:
            if e.kind == "trip":
                by_month.setdefault(f"{MONTHS[e.date.month - 1]} {e.date.year}", []).append(e)
        for month, evs in by_month.items():
            if len(evs) == 1:
                add(f"Where did {p.name} travel in {month}?", evs[0].data["place"], [evs[0].dia_id], 4)
        # --- 2: temporal
        for e in mine:
            q = {
                "move": f"When did {p.name} move to {e.data.get('city')}?",
                "job": f"When did {p.name} start working at {e.data.get('employer')}?",
                "adopt": f"When did {p.name} adopt {e.data.get('pet')}?",
                "lose_pet": f"When did {p.name} lose {e.data.get('pet')}?",
                "buy": f"When did {p.name} buy {e.data.get('item')}?",
                "replace": f"When did {p.name} buy {e.data.get('item')}?",
                "hobby": f"When did {p.name} take up {e.data.get('hobby')}?",
                "trip": f"When did {p.name} go to {e.data.get('place')}?",
            }.get(e.kind)
            if q is not None:
                add(q, e.answer_date, [e.dia_id], 2)
        # --- 1: multi-hop / multi-answer
        if moves:
            first_city = moves[0].data["old"]
            add(f"Which cities has {p.name} lived in?", ", ".join([first_city] + [m.data["city"] for m in moves]),
                [m.dia_id for m in moves], 1)
        if jobs and all(j.data["old_employer"] != jobs[-1].data["employer"] for j in jobs):
            add(f"Where did {p.name} work before {jobs[-1].data['employer']}?", jobs[-1].data["old_employer"],
                [jobs[-1].dia_id, jobs[-2].dia_id if len(jobs) > 1 else p.intro_job_dia], 1)
        all_pets = ([p.initial_pet[0]] if p.initial_pet else []) + [e.data["pet"] for e in mine if e.kind == "adopt"]
        if len(all_pets) >= 2:
            ev = ([p.initial_pet[2]] if p.initial_pet else []) + [e.dia_id for e in mine if e.kind == "adopt"]
            add(f"What are the names of all the pets {p.name} has had?", ", ".join(all_pets), ev, 1)
        trips_ = [e for e in mine if e.kind == "trip"]
        if len(trips_) >= 2:
            add(f"Which places has {p.name} traveled to?", ", ".join(e.data["place"] for e in trips_),
                [e.dia_id for e in trips_], 1)
        candidates = [e for e in mine if e.kind in ("adopt", "trip", "hobby") and moves
                      and not any(m.session == e.session for m in moves)]
        # At most two per person, preferring events that happened before a later move.
        candidates.sort(key=lambda e: (not any(m.session > e.session for m in moves), rng.random()))
        for e in sorted(candidates[:2], key=lambda e: e.session):
                before = [m for m in moves if m.session < e.session]
                city = before[-1].data["city"] if before else moves[0].data["old"]
                ev = [e.dia_id] + ([before[-1].dia_id] if before else [p.intro_city_dia, moves[0].dia_id])
                what = {"adopt": f"adopted {e.data.get('pet')}", "trip": f"went to {e.data.get('place')}",
                        "hobby": f"took up {e.data.get('hobby')}"}[e.kind]
                add(f"Where was {p.name} living when {p.name} {what}?", city, ev, 1)
        # --- 3: open-domain / commonsense
        country, language = CITIES[p.city]
        add(f"In which country does {p.name} live now?", country, [p.city_dia], 3)
        add(f"What language do most people speak where {p.name} lives now?", language, [p.city_dia], 3)
        for e in mine:
            if e.kind == "lose_pet":
                add(f"Does {p.name} still have {e.data['pet']}?", "No", [e.dia_id], 3)
            if e.kind == "lose_item" and e.data["item"] not in p.items.values():
                add(f"Does {p.name} still have {e.data['item']}?", "No", [e.dia_id], 3)
        for e in mine:
            if e.kind == "adopt" and e.data["pet"] in p.pets:
                add(f"Does {p.name} still have {e.data['pet']}?", "Yes", [e.dia_id], 3)
    a, b = people
    same = CITIES[a.city][0] == CITIES[b.city][0]
    add(f"Do {a.name} and {b.name} live in the same country now?", "Yes" if same else "No",
        [a.city_dia, b.city_dia], 3)
    # A question asked twice (e.g. the same item bought twice) is ambiguous: drop it.
    counts: dict[str, int] = {}
    for q in qs:
        counts[q.question] = counts.get(q.question, 0) + 1
    return [q for q in qs if counts[q.question] == 1]


# ----------------------------------------------------------------------------- public API

def make_embedded_dataset(config: EmbeddedConfig = EmbeddedConfig()) -> tuple[Conversation, ...]:
    """The embedded conversations, ids ``emb-01`` ... (``emb-01`` is the long training one)."""
    if config.num_conversations < 3:
        raise ValueError(f"num_conversations must be >= 3 (train, validation, test), got {config.num_conversations}")
    if 2 * config.num_conversations > len(NAMES):
        raise ValueError(f"num_conversations must be <= {len(NAMES) // 2}, got {config.num_conversations}")
    names = random.Random(config.seed).sample(NAMES, 2 * config.num_conversations)
    convs = []
    for i in range(config.num_conversations):
        n = config.train_sessions if i == 0 else config.sessions
        convs.append(_generate_conversation(i, (names[2 * i], names[2 * i + 1]), n, config))
    return tuple(convs)


def embedded_split(convs: Sequence[Conversation] | None = None) -> Split:
    """Train ``emb-01`` / validation ``emb-02`` / test the rest (LoCoMo's 1:1:8 by conversation)."""
    if convs is None:
        convs = make_embedded_dataset()
    return split_conversations(convs, EMBEDDED_TRAIN_IDS, EMBEDDED_VALIDATION_IDS)
