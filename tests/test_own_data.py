"""A user's own data: LoCoMo-format folders with other ids, split control, LongMemEval and
MSC files in their published formats, facts extracted from raw dialogue."""

import dataclasses
import json
import re

import pytest

from memr1_jax.agents.fact_extraction import (ExtractionConfig, extract_facts, extraction_requests,
                                              parse_facts)
from memr1_jax.agents.memory_manager import ManagerConfig, build_banks
from memr1_jax.config import ConfigError, evaluation_defaults, override
from memr1_jax.data import (default_split, detect_format, load_conversations, make_embedded_dataset,
                            question_records, write_flat)
from memr1_jax.data.locomo import LocomoFormatError, load_locomo
from memr1_jax.eval.run import evaluate
from memr1_jax.evaluate import main
from memr1_jax.memory import load_bank
from memr1_jax.memory.encoder import HashingTestEncoder


def _own_folder(tmp_path, names=("alpha", "beta", "gamma")):
    """Embedded conversations under ids that are not LoCoMo's."""
    convs = [dataclasses.replace(c, id=n) for c, n in zip(make_embedded_dataset(), names)]
    folder = tmp_path / "mine"
    write_flat(convs, folder)
    return folder, convs


# ------------------------------------------------------------------ split control

def test_data_without_the_paper_ids_is_all_test_with_a_note(tmp_path):
    folder, convs = _own_folder(tmp_path)
    split = default_split(load_locomo(folder))
    assert [c.id for c in split.test] == ["alpha", "beta", "gamma"] and not split.train and not split.validation
    assert "all 3 conversations are test" in split.note and "--train-ids" in split.note
    assert [c.id for c in split.all] == ["alpha", "beta", "gamma"]


def test_chosen_ids_split_the_data_and_unknown_ids_are_named(tmp_path):
    folder, _ = _own_folder(tmp_path)
    convs = load_locomo(folder)
    split = default_split(convs, "beta", " gamma ,")
    assert ([c.id for c in split.train], [c.id for c in split.validation], [c.id for c in split.test]) == (
        ["beta"], ["gamma"], ["alpha"])
    assert split.note == ""
    assert [c.id for c in split.all] == ["beta", "gamma", "alpha"]
    with pytest.raises(ValueError, match=r"train conversation id 'conv-26' not in the data \(it has alpha, beta, gamma\)"):
        default_split(convs, "conv-26")
    with pytest.raises(ValueError, match="overlap"):
        default_split(convs, "alpha", "alpha")


def test_locomo_ids_keep_the_paper_split(locomo_dir):
    split = default_split(load_locomo(locomo_dir))
    assert ([c.id for c in split.train], [c.id for c in split.validation], len(split.test)) == (
        ["conv-26"], ["conv-30"], 8)
    assert len(question_records(split.all)) == 1540   # 152 + 81 + 1307


def test_cli_evaluates_a_folder_with_other_ids(tmp_path, capsys, monkeypatch):
    """The issue's command: ``--data <folder with other ids> --split all --system rag``."""
    folder, convs = _own_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    rc = main(["--data", str(folder), "--split", "all", "--system", "rag", "--model", "tiny-llama",
               "--encoder", "hashing", "--limit", "0", "--batch-size", "8", "--answer-max-new-tokens", "4",
               "--config.eval.rag_chunk_tokens=64"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "all 3 conversations are test" in out.err
    n = len(question_records(convs))
    assert re.search(rf"^overall\s+{n}\s", out.out, re.M), out.out
    run = next((tmp_path / "runs" / "evaluate").glob("mine-all-rag-*"))
    keys = {json.loads(line)["conversation_id"] for line in (run / "predictions.jsonl").read_text().splitlines()}
    assert keys == {"alpha", "beta", "gamma"}
    # an id that is not there: a clear error, exit 2
    assert main(["--data", str(folder), "--train-ids", "conv-26", "--model", "tiny-llama"]) == 2
    assert "'conv-26' not in the data (it has alpha, beta, gamma)" in capsys.readouterr().err


def test_training_takes_chosen_ids_and_names_the_keys_without_them(tmp_path):
    from memr1_jax.tasks.base import load_backbone
    folder, _ = _own_folder(tmp_path)
    cfg = override(evaluation_defaults(), {"data.path": str(folder), "model.name": "tiny-llama",
                                           "model.encoder": "hashing"})
    with pytest.raises(ValueError, match="data.train_ids and data.validation_ids.*alpha, beta, gamma"):
        load_backbone(cfg)
    chosen = load_backbone(override(cfg, {"data.train_ids": "beta", "data.validation_ids": "alpha"}))
    assert ([c.id for c in chosen.split.train], [c.id for c in chosen.split.validation],
            [c.id for c in chosen.split.test]) == (["beta"], ["alpha"], ["gamma"])


def test_config_refuses_unknown_split_format_and_facts():
    for key, value in (("eval.split", "everything"), ("data.format", "csv"), ("data.facts", "guess")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            override(evaluation_defaults(), {key: value})


def test_own_questions_may_carry_a_type_instead_of_a_category(tmp_path):
    conv = {"speaker_a": "Ann", "speaker_b": "Bo",
            "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "I moved to Lisbon."}],
            "session_1_date_time": "1 May 2024",
            "qa": [{"question": "Where does Ann live?", "answer": "Lisbon", "question_type": "location"},
                   {"question": "When?", "answer": "May", "category": 2}]}
    (tmp_path / "ann.json").write_text(json.dumps(conv))
    (c,) = load_locomo(tmp_path)
    assert [(q.category, q.label) for q in c.questions] == [(0, "location"), (2, "temporal")]
    assert len(question_records([c])) == 2
    del conv["qa"][0]["question_type"]
    (tmp_path / "ann.json").write_text(json.dumps(conv))
    with pytest.raises(LocomoFormatError, match=r"ann.json: key 'qa\[0\].category': missing \(a LoCoMo category"):
        load_locomo(tmp_path)


# ------------------------------------------------------------------ LongMemEval and MSC

def _longmemeval_items():
    """Three questions in LongMemEval's published layout (longmemeval_oracle.json / _s_cleaned.json)."""
    def sess(*turns):
        return [{"role": r, "content": t, **({"has_answer": True} if h else {})} for r, t, h in turns]
    return [
        {"question_id": "e47becba", "question_type": "single-session-user",
         "question": "What degree did I graduate with?", "answer": "Business Administration",
         "question_date": "2023/05/30 (Tue) 23:40",
         "haystack_session_ids": ["sharegpt_1", "answer_280352e9"],
         "haystack_dates": ["2023/05/20 (Sat) 02:21", "2023/05/22 (Mon) 10:01"],
         "haystack_sessions": [sess(("user", "Any tips for sourdough?", False), ("assistant", "Feed it daily.", False)),
                               sess(("user", "I graduated with a degree in Business Administration.", True),
                                    ("assistant", "Congratulations!", False))],
         "answer_session_ids": ["answer_280352e9"]},
        {"question_id": "0a995998", "question_type": "knowledge-update",
         "question": "How many bikes do I own now?", "answer": 4, "question_date": "2023/06/01 (Thu) 09:00",
         "haystack_session_ids": ["answer_a", "answer_b"],
         "haystack_dates": ["2023/05/01 (Mon) 08:00", "2023/05/25 (Thu) 18:30"],
         "haystack_sessions": [sess(("user", "I own three bikes.", False)),
                               sess(("user", "I just bought a fourth bike!", False))],
         "answer_session_ids": ["answer_a", "answer_b"]},
        {"question_id": "gpt4_2655b836_abs", "question_type": "temporal-reasoning",
         "question": "How many days before my trip did I buy a tent?", "answer": "The information is not enough",
         "question_date": "2023/07/01 (Sat) 12:00", "haystack_session_ids": ["s1"],
         "haystack_dates": ["2023/06/10 (Sat) 12:00"],
         "haystack_sessions": [sess(("user", "I am planning a trip.", False))], "answer_session_ids": []},
    ]


def _msc_lines():
    """Two episodes in MemGPT's MSC-Self-Instruct layout (msc_self_instruct.jsonl)."""
    return [
        {"personas": [["I like hiking."], ["I have a dog."]],
         "previous_dialogs": [
             {"personas": [[], []], "time_num": 3, "time_unit": "days",
              "dialog": [{"text": "Hi! I went hiking in the Alps."}, {"text": "Nice, my dog Rex loves hikes."}]},
             {"personas": [[], []], "time_num": 5, "time_unit": "hours",
              "dialog": [{"text": "Rex is sick today."}, {"text": "Oh no, I hope he gets better."}]}],
         "dialog": [{"id": "Speaker 1", "text": "How is your dog doing?"}, {"id": "Speaker 2", "text": "Better!"}],
         "init_personas": [["I like hiking."], ["I have a dog."]],
         "self_instruct": {"B": "What is the name of your dog?", "A": "Rex"}},
        {"previous_dialogs": [{"dialog": [{"text": "I teach math."}, {"text": "I am a nurse."}]}],
         "dialog": [], "self_instruct": {"B": "What subject do I teach?", "A": "Math"}},
    ]


def _write_samples(tmp_path):
    lme = tmp_path / "longmemeval_oracle.json"
    lme.write_text(json.dumps(_longmemeval_items()))
    msc = tmp_path / "msc_self_instruct.jsonl"
    msc.write_text("\n".join(json.dumps(x) for x in _msc_lines()) + "\n")
    return lme, msc


def test_longmemeval_loads_one_conversation_per_question(tmp_path):
    lme, _ = _write_samples(tmp_path)
    assert detect_format(lme) == "longmemeval"
    convs = load_conversations(lme)
    assert [c.id for c in convs] == ["e47becba", "0a995998", "gpt4_2655b836_abs"]
    c = convs[0]
    assert (c.speaker_a, c.speaker_b) == ("user", "assistant")
    assert [s.date_time for s in c.sessions] == ["2023/05/20 (Sat) 02:21", "2023/05/22 (Mon) 10:01"]
    assert c.sessions[1].turns[0].text == "I graduated with a degree in Business Administration."
    (q,) = c.questions
    assert q.question == "Current date: 2023/05/30 (Tue) 23:40. What degree did I graduate with?"
    assert (q.category, q.label, q.answer, q.evidence) == (0, "single-session-user", "Business Administration",
                                                           ("D2:1",))
    # no turn marked has_answer: every turn of the answer sessions is evidence; numbers become text
    assert convs[1].questions[0].evidence == ("D1:1", "D2:1") and convs[1].questions[0].answer == "4"
    assert convs[2].questions[0].label == "temporal-reasoning"


def test_msc_loads_one_conversation_per_episode(tmp_path):
    _, msc = _write_samples(tmp_path)
    assert detect_format(msc) == "msc"
    convs = load_conversations(msc)
    assert [c.id for c in convs] == ["msc-1", "msc-2"]
    c = convs[0]
    assert [s.date_time for s in c.sessions] == ["session 1 (3 days gap)", "session 2 (5 hours gap)", "session 3"]
    assert [(t.speaker, t.text) for t in c.sessions[0].turns] == [
        ("Speaker 1", "Hi! I went hiking in the Alps."), ("Speaker 2", "Nice, my dog Rex loves hikes.")]
    (q,) = c.questions
    assert (q.question, q.answer, q.label) == ("What is the name of your dog?", "Rex", "dmr")
    assert len(convs[1].sessions) == 1   # an empty current dialog adds no session


@pytest.mark.parametrize("fmt,mutate,where", [
    ("longmemeval", lambda d: d[0].pop("question_type"), r"\[0\]\.question_type': missing"),
    ("longmemeval", lambda d: d[1]["haystack_dates"].pop(), r"\[1\]': 2 haystack_sessions but 1 haystack_dates"),
    ("longmemeval", lambda d: d[0]["haystack_sessions"][1][0].__setitem__("role", "bot"),
     r"\[0\]\.haystack_sessions\[1\]\[0\]\.role': expected 'user' or 'assistant'"),
    ("msc", lambda d: d[1].pop("self_instruct"), r"line 2: key 'self_instruct'"),
    ("msc", lambda d: d[0]["previous_dialogs"][0]["dialog"].append({"txt": "x"}),
     r"line 1: previous_dialogs\[0\]\.dialog\[2\]\.text"),
])
def test_malformed_longmemeval_and_msc_files_name_the_key(tmp_path, fmt, mutate, where):
    data = _longmemeval_items() if fmt == "longmemeval" else _msc_lines()
    mutate(data)
    path = tmp_path / ("x.json" if fmt == "longmemeval" else "x.jsonl")
    path.write_text(json.dumps(data) if fmt == "longmemeval" else "\n".join(json.dumps(x) for x in data))
    with pytest.raises(LocomoFormatError, match=where):
        load_conversations(path)


@pytest.mark.parametrize("which", ["longmemeval", "msc"])
def test_longmemeval_and_msc_evaluate_with_per_type_tables(tmp_path, which):
    lme, msc = _write_samples(tmp_path)
    cfg = override(evaluation_defaults(), {
        "data.path": str(lme if which == "longmemeval" else msc), "eval.split": "all", "eval.system": "fullctx",
        "eval.limit": 0, "model.name": "tiny-llama", "model.encoder": "hashing", "task.answer.max_new_tokens": 4,
        "eval.fullctx_tokens": 300, "eval.run_dir": str(tmp_path / which)})
    agg = evaluate(cfg, progress=False)
    if which == "longmemeval":
        assert list(agg) == ["single-session-user", "knowledge-update", "temporal-reasoning", "overall"]
    else:
        assert list(agg) == ["dmr", "overall"]
    assert agg["overall"]["count"] == (3 if which == "longmemeval" else 2)
    assert all(row["locomo_f1"] is None for row in agg.values())   # LoCoMo's per-category rule does not apply
    md = (tmp_path / which / "results.md").read_text()
    assert "| dmr |" in md or "| single-session-user |" in md


# ------------------------------------------------------------------ fact extraction

def test_fact_parser_survives_garbage():
    assert parse_facts('Sure! {"facts": ["Ann moved to Lisbon", "Ann likes tea", "Ann likes tea"]} ok') == [
        "Ann moved to Lisbon", "Ann likes tea"]
    assert parse_facts('["Bo is a nurse"]') == ["Bo is a nurse"]
    assert parse_facts("- Ann has a cat\n2. Ann runs daily\nno list here") == ["Ann has a cat", "Ann runs daily"]
    assert parse_facts('{"facts": [1, 2]} {"facts": []}') == []
    for junk in ["", "{", '{"facts": "x"}', "[[[[", "\x00\ud800", "{" * 5000, '{"facts": ["' + "x" * 400 + '"]}']:
        assert parse_facts(junk) == []
    assert len(parse_facts(json.dumps({"facts": [f"fact {i}" for i in range(50)]}), max_facts=12)) == 12


class ScriptedExtractor:
    """Stands in for the extracting model: for each prompt, one fact per line of the focus
    speaker, ``<speaker> said: <text>`` (read back from the prompt), in the JSON the prompt asks for."""

    def __init__(self):
        self.prompts = []

    def complete(self, prompts, max_new_tokens=64):
        self.prompts += prompts
        out = []
        for p in prompts:
            speaker = re.search(r"worth remembering about (.+?) from", p).group(1)
            lines = p.split("):\n", 1)[1].splitlines()
            facts = [f"{speaker} said: {ln.split(': ', 1)[1]}" for ln in lines if ln.startswith(f"{speaker}: ")]
            out.append("Here you go:\n" + json.dumps({"facts": facts}))
        return out


def _raw(conv):
    """The conversation with its observations removed: raw dialogue only."""
    return dataclasses.replace(conv, sessions=tuple(dataclasses.replace(s, observations={}) for s in conv.sessions))


def test_extraction_builds_banks_from_raw_dialogue(tmp_path):
    conv = _raw(make_embedded_dataset()[0])
    assert not any(s.observations for s in conv.sessions)
    cfg = ExtractionConfig(turns_per_call=4)
    reqs = extraction_requests(conv, cfg)
    assert all(r.speaker in (conv.speaker_a, conv.speaker_b) for r in reqs)
    llm = ScriptedExtractor()
    (got,) = extract_facts([conv], llm, cfg, cache_root=tmp_path / "facts", extractor="scripted")
    assert len(llm.prompts) == len(reqs)
    # every speaker turn became a fact of that speaker, in its session, citing its window
    for s_raw, s in zip(conv.sessions, got.sessions):
        for sp in (conv.speaker_a, conv.speaker_b):
            want = [f"{sp} said: {t.text}" for t in s_raw.turns if t.speaker == sp]
            facts = s.observations.get(sp, ())
            assert [f for f, _ in facts] == want
            for (f, ref), t in zip(facts, [t for t in s_raw.turns if t.speaker == sp]):
                assert t.dia_id in (ref if isinstance(ref, tuple) else (ref,))
    enc = HashingTestEncoder()
    banks, stats = build_banks([got], enc, ManagerConfig(kind="add-all", max_facts_per_step=4))
    bank = banks[conv.id]
    stored = {(bank.get(i)["text"], bank.get(i)["timestamp"]) for i in bank.ids()}
    first_said = {}   # the embedded dialogue repeats some lines; the bank keeps a text once
    for s in conv.sessions:
        for t in s.turns:
            first_said.setdefault(f"{t.speaker} said: {t.text}", s.date_time)
    assert stored == set(first_said.items())
    assert stats.ops["ADD"] + stats.skipped_ops == sum(len(s.turns) for s in conv.sessions)

    # cached: a second call asks the model nothing, and gives the same conversation
    again = ScriptedExtractor()
    assert extract_facts([conv], again, cfg, cache_root=tmp_path / "facts", extractor="scripted") == (got,)
    assert again.prompts == []
    # another extractor is asked afresh, into a cache of its own
    other = ScriptedExtractor()
    extract_facts([conv], other, cfg, cache_root=tmp_path / "facts", extractor="another")
    assert len(other.prompts) == len(reqs)
    assert len(list((tmp_path / "facts").glob("*/*.facts.json"))) == 2
    # a damaged cache file is extracted again, with a warning naming it
    for f in (tmp_path / "facts").glob("*/*.facts.json"):
        f.write_text("{not json")
    fresh = ScriptedExtractor()
    with pytest.warns(UserWarning, match=r"facts\.json: unreadable extracted facts"):
        assert extract_facts([conv], fresh, cfg, cache_root=tmp_path / "facts", extractor="scripted") == (got,)
    assert len(fresh.prompts) == len(reqs)


class ScriptedPipeline:
    """A tiny ChatLLM for answers, the scripted extractor for extraction prompts."""

    def __init__(self, llm):
        self.llm, self.extractor = llm, ScriptedExtractor()
        self.tokenizer, self.mesh, self.batch_size = llm.tokenizer, llm.mesh, llm.batch_size

    def complete(self, prompts, max_new_tokens=64, **kw):
        if all("worth remembering about" in p for p in prompts):
            return self.extractor.complete(prompts, max_new_tokens)
        return self.llm.complete(prompts, max_new_tokens=max_new_tokens, **kw)


def test_evaluation_on_raw_dialogue_builds_banks_from_extracted_facts(tmp_path):
    from memr1_jax.agents.llm import ChatLLM
    folder = tmp_path / "raw"
    write_flat([_raw(c) for c in make_embedded_dataset()], folder)
    cfg = override(evaluation_defaults(), {
        "data.path": str(folder), "data.facts": "extract", "eval.system": "base", "eval.manager": "add-all",
        "eval.limit": 3, "model.name": "tiny-llama", "model.encoder": "hashing", "task.answer.max_new_tokens": 4,
        "task.answer.k_per_speaker": 2, "eval.run_dir": str(tmp_path / "run")})
    llm = ScriptedPipeline(ChatLLM.from_registry("tiny-llama", batch_size=8))
    agg = evaluate(cfg, progress=False, answer_llm=llm)
    assert agg["overall"]["count"] == 3
    assert llm.extractor.prompts   # facts were extracted ...
    (bank_path,) = (tmp_path / "run" / "banks").glob("*.bank")   # ... into the one bank needed
    bank = load_bank(bank_path)
    assert bank.size > 0
    assert list((tmp_path / "run" / "facts").glob("*/*.facts.json"))


def test_training_on_raw_dialogue_extracts_the_facts_of_its_conversations(tmp_path):
    from memr1_jax.tasks.base import load_backbone
    folder = tmp_path / "raw"
    convs = [dataclasses.replace(_raw(c), id=n) for c, n in zip(make_embedded_dataset(), ("alpha", "beta", "gamma"))]
    write_flat(convs, folder)
    cfg = override(evaluation_defaults(), {
        "data.path": str(folder), "data.train_ids": "alpha", "data.validation_ids": "beta", "data.facts": "extract",
        "data.facts_cache": str(tmp_path / "facts"), "model.name": "tiny-llama", "model.encoder": "hashing"})
    b = load_backbone(cfg)
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "facts").glob("*/*.facts.json"))
    assert cached == ["alpha", "beta"]   # the test conversation is not the trainer's
    # the split's conversations carry what the cache holds (the random tiny model's facts, if any)
    for conv in b.split.train + b.split.validation:
        (path,) = (tmp_path / "facts").glob(f"*/{conv.id}-*.facts.json")
        data = json.loads(path.read_text())
        n_cached = sum(len(v) for by in data["facts"].values() for v in by.values())
        assert n_cached == sum(len(f) for s in conv.sessions for f in s.observations.values())
