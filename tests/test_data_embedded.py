"""The embedded generated dataset: deterministic, LoCoMo-shaped, answers that track the latest state."""

import datetime as dt
import json
import re

import pytest

from memr1_jax.data import default_split, load_conversations
from memr1_jax.data.embedded import EmbeddedConfig, MONTHS, embedded_split, make_embedded_dataset
from memr1_jax.data.locomo import PAPER_LABELS, conversation_to_flat, load_locomo, question_records, write_flat

DATE_RE = re.compile(r"^(\d{1,2}):(\d{2}) (am|pm) on (\d{1,2}) (\w+), (\d{4})$")


@pytest.fixture(scope="module")
def convs():
    return make_embedded_dataset()


def _session_date(s):
    m = DATE_RE.match(s.date_time)
    assert m, s.date_time
    return dt.date(int(m.group(6)), MONTHS.index(m.group(5)) + 1, int(m.group(4)))


def test_deterministic(convs):
    again = make_embedded_dataset()
    assert again == convs
    assert [json.dumps(conversation_to_flat(c)) for c in again] == [json.dumps(conversation_to_flat(c)) for c in convs]
    other = make_embedded_dataset(EmbeddedConfig(seed=1))
    assert other != convs and sum(len(c.questions) for c in other) >= 150


def test_size_split_and_categories(convs):
    assert 8 <= len(convs) <= 10
    recs = question_records(convs)
    assert len(recs) >= 150
    assert {r.qa.category for r in recs} == {1, 2, 3, 4}
    assert {r.qa.label for r in recs} == set(PAPER_LABELS.values())
    split = embedded_split(convs)
    assert default_split(convs) == split
    assert len(question_records(split.train)) >= 60
    assert len(split.validation) == 1 and len(split.test) == len(convs) - 2
    train_ids = {c.id for c in split.train}
    assert not train_ids & {c.id for c in split.test}
    assert load_conversations("embedded") == convs
    assert sum(len(c.turns) for c in convs) < 2000          # CPU-sized


def test_structure_like_locomo(convs):
    for c in convs:
        assert c.speaker_a != c.speaker_b
        dates = [_session_date(s) for s in c.sessions]
        assert dates == sorted(dates) and len(set(dates)) == len(dates)
        for s in c.sessions:
            assert [t.dia_id for t in s.turns] == [f"D{s.index}:{i}" for i in range(1, len(s.turns) + 1)]
            assert {t.speaker for t in s.turns} == {c.speaker_a, c.speaker_b}
            ids = {t.dia_id for t in s.turns}
            for speaker, facts in s.observations.items():
                assert speaker in (c.speaker_a, c.speaker_b)
                for fact, dia_id in facts:
                    assert dia_id in ids and speaker in fact
                    turn = next(t for t in s.turns if t.dia_id == dia_id)
                    assert turn.speaker == speaker
        assert len({q.question for q in c.questions}) == len(c.questions)


def test_evidence_exists_and_answers_short(convs):
    for c in convs:
        ids = c.dia_ids()
        for q in c.questions:
            assert q.evidence, q
            assert set(q.evidence) <= ids, (c.id, q)
            assert q.answer and len(q.answer.split()) <= 6, q


def _moves_from_dialogue(c, name):
    """(city, session) of each move announced by name, read back from the turn text."""
    cities = []
    for s in c.sessions:
        for t in s.turns:
            if t.speaker == name and "moved" in t.text:
                m = re.search(r"moved (?:from [A-Z][\w ]+? )?to ([A-Z][\w ]+?)(?: from| \w+day| last| two| yesterday| today|!|\.)", t.text)
                assert m, t.text
                cities.append(m.group(1))
    return cities


def test_where_lives_now_is_the_last_move(convs):
    checked_changed = 0
    for c in convs:
        for name in (c.speaker_a, c.speaker_b):
            moves = _moves_from_dialogue(c, name)
            q = next(q for q in c.questions if q.question == f"Where does {name} live now?")
            if moves:
                assert q.answer == moves[-1]
                if len(moves) >= 2:
                    assert q.answer != moves[0]
                    checked_changed += 1
                lived = next(q for q in c.questions if q.question == f"Which cities has {name} lived in?")
                assert lived.answer.split(", ")[1:] == moves
    assert checked_changed >= len(convs)             # someone moves twice in every conversation


def test_temporal_answers_follow_session_dates(convs):
    n = 0
    for c in convs:
        where = {t.dia_id: s for s in c.sessions for t in s.turns}
        for q in c.questions:
            if q.category != 2:
                continue
            s = where[q.evidence[0]]
            day = _session_date(s)
            text = next(t.text for t in s.turns if t.dia_id == q.evidence[0])
            said = {"today": day, "yesterday": day - dt.timedelta(days=1), "two days ago": day - dt.timedelta(days=2)}
            hit = [p for p in ("today", "yesterday", "two days ago", "last weekend", "last week", "last month")
                   if p in text]
            assert len(hit) >= 1, text
            phrase = hit[0]
            if phrase in said:
                d = said[phrase]
                assert q.answer == f"{d.day} {MONTHS[d.month - 1]} {d.year}"
            elif phrase == "last week":
                assert q.answer == f"the week before {day.day} {MONTHS[day.month - 1]} {day.year}"
            elif phrase == "last weekend":
                assert q.answer == f"the weekend before {day.day} {MONTHS[day.month - 1]} {day.year}"
            else:
                prev = day.replace(day=1) - dt.timedelta(days=1)
                assert q.answer == f"{MONTHS[prev.month - 1]} {prev.year}"
            n += 1
    assert n >= 50


def test_latest_state_for_pets_and_items(convs):
    for c in convs:
        text = " ".join(t.text for t in c.turns)
        for q in c.questions:
            m = re.match(r"Does (\w+) still have (.+)\?", q.question)
            if m and q.answer == "No":
                # the loss is mentioned in the evidence turn
                ev = next(t.text for t in c.turns if t.dia_id == q.evidence[0])
                assert any(w in ev for w in ("passed away", "ran away", "goodbye", "lost", "stole", "give away"))
        assert text                                   # non-empty dialogue


def test_writes_as_locomo_flat_files(convs, tmp_path):
    paths = write_flat(convs, tmp_path)
    assert [p.name for p in paths][:2] == ["emb-01.json", "emb-02.json"]
    raw = json.loads(paths[0].read_text())
    assert raw["session_1_date_time"] and raw["session_1"][0]["dia_id"] == "D1:1"
    assert isinstance(raw["session_1_observation"][raw["speaker_a"]][0], list)
    assert load_locomo(tmp_path) == convs
