"""LoCoMo loader: paper split counts, flat vs nested layouts, errors naming file and key."""

import json
import urllib.error

import pytest

from memr1_jax.data import locomo
from memr1_jax.data.locomo import (LocomoFormatError, category_counts, load_locomo, question_records,
                                   split_conversations, write_flat)


@pytest.fixture(scope="module")
def convs(locomo_dir):
    return load_locomo(locomo_dir)


def test_paper_split_counts(convs):
    split = split_conversations(convs)
    assert [c.id for c in split.train] == ["conv-26"]
    assert [c.id for c in split.validation] == ["conv-30"]
    assert len(split.test) == 8
    assert len(question_records(split.train)) == 152
    assert len(question_records(split.validation)) == 81
    test = question_records(split.test)
    assert len(test) == 1307
    assert all(r.qa.category != 5 for r in test)
    # Mem0/paper naming: 1 single-hop, 2 temporal, 3 multi-hop, 4 open-domain.
    assert category_counts(test) == {"single-hop": 239, "temporal": 258, "multi-hop": 83, "open-domain": 727}
    # LoCoMo's own (content) naming of the same numbers.
    assert category_counts(test, naming="locomo") == {
        "multi-hop": 239, "temporal": 258, "open-domain": 83, "single-hop": 727}


def test_whole_dataset_figures(convs):
    assert len(convs) == 10
    assert sum(len(c.turns) for c in convs) == 5882
    assert sum(len(c.questions) for c in convs) == 1986
    assert len(question_records(convs, categories=(5,))) == 446
    c26 = convs[0]
    assert c26.speaker_a == "Caroline" and c26.speaker_b == "Melanie"
    s1 = c26.sessions[0]
    assert s1.index == 1 and s1.date_time == "1:56 pm on 8 May, 2023"
    assert s1.turns[0].dia_id == "D1:1" and s1.turns[0].speaker == "Caroline"
    assert s1.observations["Caroline"][0][1] == "D1:3"
    # Integer gold answers become strings (6 in the release).
    q = [q for q in c26.questions if q.question == "When did Melanie paint a sunrise?"][0]
    assert q.answer == "2022" and isinstance(q.answer, str)
    adv = [q for q in c26.questions if q.category == 5][0]
    assert adv.answer == "" and adv.adversarial_answer


def _nest_by_hand(flat: dict, sample_id: str) -> dict:
    """The locomo10.json layout, built independently of locomo.conversation_to_nested."""
    conv, obs, summ, evts = {}, {}, {}, {}
    for k, v in flat.items():
        if k == "qa":
            continue
        if k.endswith("_observation"):
            obs[k] = v
        elif k.endswith("_summary"):
            summ[k] = v
        elif k.startswith("events_"):
            evts[k] = v
        else:
            conv[k] = v
    return {"qa": flat["qa"], "conversation": conv, "event_summary": evts, "observation": obs,
            "session_summary": summ, "sample_id": sample_id}


def test_nested_release_gives_identical_results(convs, locomo_dir, tmp_path):
    nested = [_nest_by_hand(json.loads(p.read_text()), f"conv-{p.stem}")
              for p in sorted(locomo_dir.glob("*.json"), key=lambda p: int(p.stem))]
    path = tmp_path / "locomo10.json"
    path.write_text(json.dumps(nested))
    assert load_locomo(path) == convs
    # A directory holding only the release file is read the same way.
    assert load_locomo(tmp_path) == convs


def test_flat_round_trip(convs, tmp_path):
    write_flat(convs, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.json"))[:2] == ["26.json", "30.json"]
    assert load_locomo(tmp_path) == convs
    locomo.write_nested(convs, tmp_path / "n" / "locomo10.json")
    assert load_locomo(tmp_path / "n" / "locomo10.json") == convs


# --------------------------------------------------------------------------- malformed input (no data needed)

def _good_flat():
    return {
        "speaker_a": "Ann", "speaker_b": "Bo",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "I moved to Lisbon."},
                      {"speaker": "Bo", "dia_id": "D1:2", "text": "Nice!"}],
        "session_1_observation": {"Ann": [["Ann moved to Lisbon.", "D1:1"]]},
        "session_2_date_time": "2:00 pm on 9 May, 2023",        # a date without a session is allowed
        "qa": [{"question": "Where does Ann live?", "answer": "Lisbon", "evidence": ["D1:1"], "category": 4},
               {"question": "Year?", "answer": 2023, "evidence": [], "category": 2}],
    }


def _write(tmp_path, obj, name="7.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_good_minimal_file(tmp_path):
    (c,) = load_locomo(_write(tmp_path, _good_flat()))
    assert c.id == "conv-7" and len(c.sessions) == 1
    assert c.questions[1].answer == "2023"
    assert c.sessions[0].observations == {"Ann": (("Ann moved to Lisbon.", "D1:1"),)}


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.pop("speaker_b"), "speaker_b"),
    (lambda d: d["session_1"][1].pop("text"), "session_1[1].text"),
    (lambda d: d["session_1"][0].__setitem__("dia_id", 3), "session_1[0].dia_id"),
    (lambda d: d.pop("session_1_date_time"), "session_1_date_time"),
    (lambda d: d.__setitem__("session_1", "oops"), "session_1"),
    (lambda d: d["qa"][0].__setitem__("category", "4"), "qa[0].category"),
    (lambda d: d["qa"][0].__setitem__("category", 9), "qa[0].category"),
    (lambda d: d["qa"][1].pop("answer"), "qa[1].answer"),
    (lambda d: d["qa"][0].__setitem__("evidence", "D1:1"), "qa[0].evidence"),
    (lambda d: d.pop("qa"), "qa"),
    (lambda d: d["session_1_observation"]["Ann"].append(["only a fact"]), "session_1_observation.Ann[1]"),
])
def test_malformed_flat_names_file_and_key(tmp_path, mutate, key):
    d = _good_flat()
    mutate(d)
    p = _write(tmp_path, d)
    with pytest.raises(LocomoFormatError) as e:
        load_locomo(p)
    assert str(p) in str(e.value)
    assert repr(key) in str(e.value)


def test_malformed_nested_names_file_index_and_key(tmp_path):
    good = _nest_by_hand(_good_flat(), "conv-7")
    bad = _nest_by_hand(_good_flat(), "conv-8")
    del bad["conversation"]["speaker_a"]
    p = _write(tmp_path, [good, bad], "locomo10.json")
    with pytest.raises(LocomoFormatError) as e:
        load_locomo(p)
    assert f"{p}[1]" in str(e.value) and "'conversation.speaker_a'" in str(e.value)
    no_id = _nest_by_hand(_good_flat(), "x")
    del no_id["sample_id"]
    with pytest.raises(LocomoFormatError, match="sample_id"):
        load_locomo(_write(tmp_path, [no_id], "n.json"))


def test_garbage_files(tmp_path):
    p = tmp_path / "1.json"
    p.write_text("{not json")
    with pytest.raises(LocomoFormatError, match="1.json: not valid JSON"):
        load_locomo(p)
    with pytest.raises(LocomoFormatError, match=r"l.json: key .\[0\].: expected a conversation object"):
        load_locomo(_write(tmp_path, ["just a string"], "l.json"))
    with pytest.raises(FileNotFoundError, match="download_locomo"):
        load_locomo(tmp_path / "missing.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.json"):
        load_locomo(empty)
    d = _good_flat()
    _write(tmp_path, [_nest_by_hand(d, "conv-1"), _nest_by_hand(d, "conv-1")], "dup.json")
    with pytest.raises(LocomoFormatError, match="duplicate conversation id 'conv-1'"):
        load_locomo(tmp_path / "dup.json")


def test_zero_padded_session_keys_read_as_their_numbers(tmp_path):
    d = _good_flat()
    padded = {("session_01" + k[len("session_1"):] if k.startswith("session_1") else k): v for k, v in d.items()}
    padded["session_1_date_time"] = padded.pop("session_01_date_time")   # the probe's file: date key unpadded
    (want,) = load_locomo(_write(tmp_path, d, "1.json"))
    (got,) = load_locomo(_write(tmp_path, padded, "2.json"))
    assert got.sessions == want.sessions and got.sessions[0].index == 1


@pytest.mark.parametrize("mutate, key, problem", [
    (lambda d: d.__setitem__("Session_2", []), "Session_2", "not a session key"),
    (lambda d: d.__setitem__("session-2", []), "session-2", "not a session key"),
    (lambda d: d.__setitem__("events_session_1_summary", ""), "events_session_1_summary", "not a session key"),
    (lambda d: d.__setitem__("session_01", []), "session_01", "given twice"),
])
def test_other_spellings_of_a_session_key_are_named(tmp_path, mutate, key, problem):
    d = _good_flat()
    mutate(d)
    with pytest.raises(LocomoFormatError, match=f"key '{key}'.*{problem}"):
        load_locomo(_write(tmp_path, d))


def test_nested_file_with_observations_inside_conversation_keeps_them(tmp_path):
    # The probe's file: observations moved into "conversation" used to build empty banks, rc 0.
    d = _good_flat()
    nested = _nest_by_hand(d, "conv-1")
    moved = json.loads(json.dumps(nested))
    moved["conversation"].update(moved.pop("observation"))
    (want,) = load_locomo(_write(tmp_path, [nested], "a.json"))
    (got,) = load_locomo(_write(tmp_path, [moved], "b.json"))
    assert got == want and got.sessions[0].observations


def test_a_file_without_any_observation_warns_that_banks_will_be_empty(tmp_path):
    d = _good_flat()
    d.pop("session_1_observation")
    with pytest.warns(locomo.LocomoWarning, match="no session has observations"):
        load_locomo(_write(tmp_path, d))


def test_duplicate_ids_name_both_files(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    for name in ("a.json", "b.json"):
        _write(folder, _nest_by_hand(_good_flat(), "conv-1"), name)
    with pytest.raises(LocomoFormatError, match=r"b.json: duplicate conversation id 'conv-1' \(also in .*a.json\)"):
        load_locomo(folder)


def test_download_error_is_clear(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(locomo.urllib.request, "urlopen", refuse)
    with pytest.raises(RuntimeError) as e:
        locomo.download_locomo(tmp_path)
    msg = str(e.value)
    assert "raw.githubusercontent.com/snap-research/locomo" in msg and "by hand" in msg
    assert "CC BY-NC" in msg
    assert not (tmp_path / "locomo10.json").exists()


def _release_like() -> list:
    """Conversations with the ids and question counts of the public release."""
    convs = []
    for cid, n in locomo.LOCOMO_RELEASE_QUESTIONS.items():
        d = _good_flat()
        d["qa"] = [dict(d["qa"][0]) for _ in range(n)]
        convs.append(_nest_by_hand(d, cid))
    return convs


def test_download_saves_and_validates(tmp_path, monkeypatch):
    import hashlib
    payload = json.dumps(_release_like()).encode()

    class Resp:
        def __init__(self, data):
            self.data = data

        def read(self):
            return self.data

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(locomo.urllib.request, "urlopen", lambda url, timeout: Resp(payload))
    out = locomo.download_locomo(tmp_path / "dl")
    assert out.name == "locomo10.json" and [c.id for c in load_locomo(out)] == list(locomo.LOCOMO_RELEASE_QUESTIONS)
    digest = hashlib.sha256(payload).hexdigest()
    assert (tmp_path / "dl" / "locomo10.json.sha256").read_text().split()[0] == digest
    assert locomo.download_locomo(tmp_path / "dl", sha256=digest) == out        # a verified cache hit
    with pytest.raises(LocomoFormatError, match="sha256"):
        locomo.download_locomo(tmp_path / "dl", sha256="0" * 64)
    for bad, why in ((b"<html>rate limited</html>", "not valid JSON"),
                     (json.dumps([_nest_by_hand(_good_flat(), "conv-7")]).encode(), "question counts differ")):
        monkeypatch.setattr(locomo.urllib.request, "urlopen", lambda url, timeout, b=bad: Resp(b))
        with pytest.raises(RuntimeError, match=f"not the LoCoMo release: .*{why}"):
            locomo.download_locomo(tmp_path / "dl2")
        assert not list((tmp_path / "dl2").iterdir())
