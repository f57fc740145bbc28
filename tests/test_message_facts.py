"""The facts of a user's message and the service's defaults: sentences rewritten to the speaker,
grounding against inventions, the extraction's regex, the fallback that keeps what was said,
and the trained agents that ``Memory()`` loads by default."""

from __future__ import annotations

import types

import pytest

from memr1_jax import Memory, MemoryConfig
from memr1_jax.agents.grounding import answer_supported, grounded
from memr1_jax.agents.message_facts import facts_regex, sentence_facts, speaker_name
from memr1_jax.trained import ROOT


@pytest.mark.parametrize("message, facts", [
    ("I moved to Porto last week and I work as a glassblower.",
     ["Alice moved to Porto last week.", "Alice works as a glassblower."]),
    ("Actually I moved to Lisbon.", ["Alice moved to Lisbon."]),
    ("Please forget my gym locker code.", ["Alice asked to forget Alice's gym locker code."]),
    ("My sister Jo lives in Leeds and my friend Joe lives in York.",
     ["Alice's sister Jo lives in Leeds.", "Alice's friend Joe lives in York."]),
    ("Hi there! How are you?", []),
    ("Thanks, that helps a lot. Ok!", []),
    ("I'm vegetarian and I love hiking. What do you recommend?", ["Alice is vegetarian.", "Alice loves hiking."]),
    ("Big news: I moved from Austin to Denver in May 2023!", ["Alice moved from Austin to Denver in May 2023."]),
])
def test_sentences_become_facts_about_the_speaker(message, facts):
    assert sentence_facts(message, "Alice") == facts


def test_speaker_names_read_as_names_or_the_user():
    assert [speaker_name(x) for x in ("alice", "mary_jane", "McKenzie", "8f3a-22", "a@b.c", None)] == [
        "Alice", "Mary Jane", "McKenzie", "The user", "The user", "The user"]


def test_grounding_keeps_what_was_said_and_drops_inventions():
    said = "Actually I moved to Lisbon. My new locker code is 4471."
    assert grounded("Alice moved to Lisbon.", said, "Alice")
    assert grounded("Alice's locker code is 4471", said, "Alice")
    assert not grounded("Alice's move to Lisbon is not possible.", said, "Alice")   # "possible": never said
    assert not grounded("Alice's locker code is 4417", said, "Alice")              # numbers compare exactly
    assert not grounded("Alice", said, "Alice")                                      # says nothing
    memories = ["Alice lives in Oslo", "Alice's locker code is 4471"]
    assert answer_supported("Oslo", "Where does Alice live?", memories, ["Alice"])
    assert answer_supported("Yes", "Does Alice live in Oslo?", memories, ["Alice"])
    assert answer_supported("The code is 4471", "What is Alice's locker code?", memories, ["Alice"])
    assert not answer_supported("Alice drives a Toyota Corolla", "What car does Alice drive?", memories, ["Alice"])
    assert not answer_supported("It is 1234", "What is Alice's locker code?", memories, ["Alice"])
    # restating the question (with the speaker's name as the value) answers nothing
    assert not answer_supported("The car is the car that Alice drives.", "What car does Alice drive?", memories,
                                ["Alice"])
    assert not answer_supported("The name of Alice's dog is Alice.", "What is the name of Alice's dog?", memories,
                                ["Alice"])
    assert answer_supported("No", "Is Alice's locker code 1234?", memories, ["Alice"])


def test_the_extraction_regex_takes_facts_that_name_the_speaker():
    from memr1_jax.models.registry import load_model
    from memr1_jax.sampling.constraint import compile_regex
    tiny = load_model("tiny-qwen2")
    auto = compile_regex(facts_regex("Alice", 2), tiny.tokenizer, tiny.cfg.vocab_size)
    enc = tiny.tokenizer.encode
    assert auto.accepts(enc("Alice moved to Lisbon.\n\n"))
    assert auto.accepts(enc("Alice moved to Lisbon.\nAlice's code is 4471.\n\n"))
    for bad in ("Sam moved to Lisbon.\n\n", "Alice (7 May 2023): I moved\n\n", "Alice: I moved\n\n",
                "alice moved\n\n", "Alice moved.\nAlice sold it.\nAlice left.\n\n"):  # a name, a header, 3 lines
        assert not auto.accepts(enc(bad)), bad


class Extractor:
    """A backbone whose extraction answers ``reply`` (the manager is add-all)."""
    thread_safe = True

    def __init__(self, reply: str):
        self.reply = reply

    def generate(self, prompts, max_new_tokens=64, **kw):
        assert all("Turn the message into facts" in p for p in prompts)
        return [types.SimpleNamespace(text=self.reply) for _ in prompts]


@pytest.mark.parametrize("reply, stored", [
    ("Alice moved to Lisbon.\nAlice works as a glassblower.", ["Alice moved to Lisbon.", "Alice works as a glassblower."]),
    # invented (nothing of it said) or empty: the message's own sentences, nothing dropped
    ("Alice's move to Lisbon is not possible.", ["Alice moved to Lisbon.", "Alice works as a glassblower."]),
    ("", ["Alice moved to Lisbon.", "Alice works as a glassblower."]),
    # one grounded fact: that one, the invention dropped
    ("Alice works as a glassblower.\nAlice owns three cats.", ["Alice works as a glassblower."]),
])
def test_add_stores_grounded_facts_or_the_messages_sentences(tmp_path, reply, stored):
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "manager": "add-all", "extraction": "model"},
               llm=Extractor(reply))
    out = m.add([{"role": "user", "content": "Actually I moved to Lisbon and I work as a glassblower."},
                 {"role": "assistant", "content": "Lisbon is lovely, I live in Rome."}], user_id="alice")
    assert [r["memory"] for r in out["results"]] == stored      # the assistant's words are not the user's facts
    assert sorted(x["memory"] for x in m.get_all(user_id="alice")["results"]) == sorted(stored)


def test_the_default_sentence_extraction_needs_no_model(tmp_path):
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "manager": "add-all"})   # the default
    out = m.add("I moved to Porto last week. My locker code is 4471.", user_id="bob")
    assert [r["memory"] for r in out["results"]] == ["Bob moved to Porto last week.", "Bob's locker code is 4471."]
    assert m.loaded_llm is None


def test_defaults_are_the_shipped_trained_agents_and_their_settings():
    cfg, note = MemoryConfig().resolved()
    folder = ROOT / "smollm2-135m-instruct"
    assert (cfg.manager_model, cfg.answer_model) == (str(folder / "memory_manager"), str(folder / "answer_agent"))
    assert (cfg.manager_output, cfg.constrained, cfg.answer_prompt, cfg.answer_k) == ("lines", True, "compact", 5)
    assert "Memory Manager" in note and "memory_manager" in note
    # what the user sets wins over the agents' settings
    mine, _ = MemoryConfig(answer_k=12, manager_model="x").resolved()
    assert (mine.answer_k, mine.manager_model, mine.answer_model) == (12, "x", str(folder / "answer_agent"))
    raw, note = MemoryConfig(agents="untrained").resolved()
    assert (raw.manager_model, raw.answer_model, raw.manager_output, raw.answer_k) == (
        "smollm2-135m-instruct", "smollm2-135m-instruct", "json", 30)
    # a model without shipped agents: its untrained weights, said in one line
    other, note = MemoryConfig(llm="qwen2.5-coder-0.5b-instruct").resolved()
    assert other.manager_model == other.answer_model == "qwen2.5-coder-0.5b-instruct"
    assert note.startswith("no trained Memory-R1 agents ship for 'qwen2.5-coder-0.5b-instruct'") and "\n" not in note


def test_a_pipeline_folder_as_agents(tmp_path):
    with pytest.raises(ValueError, match="agents='nowhere'.*no pipeline.json"):
        MemoryConfig(agents="nowhere").resolved()
    with pytest.raises(ValueError, match="over 'smollm2-135m-instruct', llm is 'tiny-qwen2'"):
        MemoryConfig(llm="tiny-qwen2", agents=str(ROOT / "smollm2-135m-instruct")).resolved()
    with pytest.raises(ValueError, match="extraction='magic'"):
        MemoryConfig(extraction="magic")
    # a pipeline's manager step settings (facts a step, relatedness floor) fill what the user leaves unset
    import json
    (tmp_path / "pipeline.json").write_text(json.dumps({
        "model": "smollm2-135m-instruct", "answer_agent": "a", "memory_manager": "m",
        "settings": {"task.manager.max_facts_per_step": 1, "task.manager.min_score": 0.7}}))
    cfg, _ = MemoryConfig(agents=str(tmp_path)).resolved()
    assert (cfg.manager_max_facts, cfg.manager_min_score, cfg.manager_model) == (1, 0.7, "m")
    mine, _ = MemoryConfig(agents=str(tmp_path), manager_min_score=-1.0, manager_max_facts=3).resolved()
    assert (mine.manager_max_facts, mine.manager_min_score) == (3, -1.0)
    raw, _ = MemoryConfig(agents="untrained").resolved()
    assert (raw.manager_max_facts, raw.manager_min_score) == (4, None)


def test_a_first_add_keeps_every_fact_without_asking_the_manager(tmp_path):
    class Nothing:     # a manager that keeps nothing: it must not be asked while nothing is shown
        thread_safe, calls = True, 0

        def generate(self, prompts, max_new_tokens=64, **kw):
            Nothing.calls += 1
            return [types.SimpleNamespace(text="1: NONE\n2: NONE") for _ in prompts]
    # both facts in one step, every memory shown: the manager is asked as soon as there is one
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "constrained": False, "manager_max_facts": 2,
                "manager_min_score": -1.0}, manager_llm=Nothing())
    out = m.add("I moved to Porto last week and I work as a glassblower.", user_id="alice")
    assert [r["memory"] for r in out["results"]] == ["Alice moved to Porto last week.", "Alice works as a glassblower."]
    assert Nothing.calls == 0
    assert m.add("I moved to Lisbon and I work as a baker.", user_id="alice")["results"] == []   # now it decides
    assert Nothing.calls == 1
