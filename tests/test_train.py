"""Rollouts -> RLBatch for both agents, and `memr1_jax.train` end to end (tiny model,
HashingTestEncoder). Rewards are checked with a scripted LLM whose outputs we choose;
batch layout with the real sampler on tiny-llama."""

import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest

from memr1_jax.agents.answer_agent import AnswerConfig, answer_reward
from memr1_jax.agents.llm import ChatLLM, Generation
from memr1_jax.agents.memory_manager import ManagerConfig, build_banks
from memr1_jax.agents.rollout import (AnswerItem, Episode, answer_rollouts, evidence_session,
                                      manager_episode_specs, manager_rollouts, manager_sensitive_specs,
                                      pack_episodes)
from memr1_jax.data import QA, Conversation, Session, Turn, default_split, load_conversations
from memr1_jax.memory import Retriever
from memr1_jax.memory.encoder import HashingTestEncoder
from memr1_jax.sampling.sampler import SamplingConfig

ENC = HashingTestEncoder()


@pytest.fixture(scope="module")
def train_conv():
    return default_split(load_conversations("embedded")).train[0]


@pytest.fixture(scope="module")
def tiny_llm():
    from memr1_jax.models.registry import load_model
    m = load_model("tiny-llama")
    return ChatLLM(cfg=m.cfg, params=m.params, tokenizer=m.tokenizer, batch_size=8, max_prompt_tokens=96)


class ScriptedLLM:
    """Stands in for ChatLLM: prompts are kept as text ids; `respond(prompt, sample)` decides."""

    def __init__(self, respond):
        self.respond = respond
        self.prompts: dict[int, str] = {}
        self.calls = []

    def chat_ids(self, text):
        key = len(self.prompts) + 10
        self.prompts[key] = text
        return [key, 1, 2]

    def generate_ids(self, ids, max_new_tokens=64, sampling=None, rng=None, num_samples=1, params=None,
                     constraints=None):
        self.calls.append((len(ids), num_samples, sampling, params))
        self.constraints = constraints
        out = []
        for p in ids:
            prompt = self.prompts[p[0]]
            for g in range(num_samples):
                text = self.respond(prompt, g)
                comp = [5] * (1 + len(text) % 4) + [0]
                out.append(Generation(text, list(p), comp, np.full(len(comp), -0.5, np.float32), True))
        return out


def _two_session_conv():
    """Session 1 says Ann lives in Paris; session 2 (the evidence) says she moved to Oslo."""
    s1 = Session(1, "1:00 pm on 1 May, 2023", (Turn("Ann", "D1:1", "I live in Paris."), Turn("Bob", "D1:2", "Nice.")),
                 observations={"Ann": (("Ann lives in Paris.", "D1:1"),), "Bob": (("Bob likes tea.", "D1:2"),)})
    s2 = Session(2, "1:00 pm on 9 June, 2023", (Turn("Bob", "D2:1", "News?"), Turn("Ann", "D2:2", "I moved to Oslo.")),
                 observations={"Ann": (("Ann has a cat.", "D2:2"), ("Ann moved to Oslo.", "D2:2"))})
    qa = QA("Where does Ann live now?", "Oslo", ("D2:2",), 4)
    return Conversation("syn-1", "Ann", "Bob", (s1, s2), (qa,))


# ------------------------------------------------------------------ packing
def test_pack_episodes_layout():
    eps = [Episode((7, 8, 9), (4, 5, 2), (-0.1, -0.2, -0.3), 1.0, {}),
           Episode((6,), (3,), (-0.4,), 0.0, {}),
           Episode(tuple(range(10, 30)), (1, 1, 1, 1, 1, 2), (-1.0,) * 6, 0.5, {})]
    b = pack_episodes(eps, pad_id=0, min_bucket=16)
    p_len, r_len = 24, 16   # bucket(20) and bucket(6)
    assert b.tokens.shape == (3, p_len + r_len)
    tok, valid, resp = np.asarray(b.tokens), np.asarray(b.valid), np.asarray(b.response_mask)
    lp = np.asarray(b.sampler_logprobs)
    for i, e in enumerate(eps):
        # prompt ends exactly at p_len (left padding), completion starts there (right padding)
        assert tok[i, p_len - len(e.prompt_ids):p_len].tolist() == list(e.prompt_ids)
        assert tok[i, p_len:p_len + len(e.completion_ids)].tolist() == list(e.completion_ids)
        assert resp[i].sum() == len(e.completion_ids)
        assert np.flatnonzero(resp[i]).tolist() == list(range(p_len, p_len + len(e.completion_ids)))
        assert valid[i].sum() == len(e.prompt_ids) + len(e.completion_ids)
        np.testing.assert_allclose(lp[i][resp[i]], e.sampler_logprobs)
        assert np.all(lp[i][~resp[i]] == 0)
        # RoPE positions count valid tokens only
        assert np.asarray(b.positions)[i, p_len] == len(e.prompt_ids)
    np.testing.assert_allclose(np.asarray(b.rewards), [1.0, 0.0, 0.5])
    with pytest.raises(ValueError):
        pack_episodes([], pad_id=0)
    # a fixed response length keeps one shape whatever the samples' lengths
    fixed = pack_episodes(eps, pad_id=0, response_len=8)
    assert fixed.tokens.shape == (3, p_len + 8)
    assert np.array_equal(np.asarray(fixed.response_mask).sum(1), [3, 1, 6])
    with pytest.raises(ValueError, match="response_len"):
        pack_episodes(eps, pad_id=0, response_len=4)


# ------------------------------------------------------------------ answer agent
def test_answer_rollout_rewards_are_em_of_each_completion(train_conv):
    banks, _ = build_banks([train_conv], ENC, ManagerConfig(kind="add-all"), retriever=Retriever())
    qas = train_conv.questions[:2]
    golds = [q.answer for q in qas]
    # sample g answers the gold for g == 1 only, with the marker for g < 2
    def respond(prompt, g):
        gold = next(q.answer for q in qas if q.question in prompt)
        ans = gold if g == 1 else "something else entirely"
        return f"memories...\n**Answer:** {ans}" if g < 2 else ans
    llm = ScriptedLLM(respond)
    cfg = AnswerConfig(k_per_speaker=3, max_new_tokens=8)
    items = [AnswerItem(train_conv, q) for q in qas]
    eps = answer_rollouts(llm, "PARAMS", items, banks, ENC, Retriever(), cfg, 3, SamplingConfig(1.0),
                          jax.random.PRNGKey(0))
    assert len(eps) == 6 and llm.calls[0][1] == 3 and llm.calls[0][3] == "PARAMS"
    for i, e in enumerate(eps):
        q, g = i // 3, i % 3     # group-major rows
        assert e.info["question"] == qas[q].question and e.info["gold"] == golds[q]
        assert e.reward == answer_reward(e.info["completion"], golds[q], cfg)[0]
        assert e.reward == (1.0 if g == 1 else 0.0)
        assert e.info["marker"] == (g < 2)
        # the prompt is the Answer Agent prompt for this question with its retrieved memories
        prompt = llm.prompts[e.prompt_ids[0]]
        assert qas[q].question in prompt and "**Answer:**" in prompt and "Memories for user" in prompt
    # F1 shaping and the format penalty enter as configured
    shaped = AnswerConfig(k_per_speaker=3, f1_weight=0.5, format_penalty=0.25)
    assert answer_reward("**Answer:** Dublin city", "Dublin", shaped)[0] == pytest.approx(0.5 * 2 / 3)
    assert answer_reward("Dublin", "Dublin", shaped)[0] == pytest.approx(1.0 + 0.5 - 0.25)


def test_answer_batch_from_real_sampler(train_conv, tiny_llm):
    banks, _ = build_banks([train_conv], ENC, ManagerConfig(kind="add-all"), retriever=Retriever())
    cfg = AnswerConfig(k_per_speaker=2, max_new_tokens=6)
    items = [AnswerItem(train_conv, q) for q in train_conv.questions[:2]]
    eps = answer_rollouts(tiny_llm, tiny_llm.params, items, banks, ENC, Retriever(), cfg, 4,
                          SamplingConfig(temperature=1.0), jax.random.PRNGKey(3))
    assert len(eps) == 8
    for i in range(2):   # G rows per question share the prompt
        assert len({eps[i * 4 + g].prompt_ids for g in range(4)}) == 1
    assert eps[0].prompt_ids != eps[4].prompt_ids
    b = pack_episodes(eps, tiny_llm.tokenizer.pad_id)
    resp = np.asarray(b.response_mask)
    stop = set(tiny_llm.tokenizer.stop_ids)
    for i, e in enumerate(eps):
        assert resp[i].sum() == len(e.completion_ids) >= 1
        row = np.asarray(b.tokens)[i][resp[i]].tolist()
        assert row == list(e.completion_ids)
        if e.info["stopped"]:
            assert row[-1] in stop          # the stop token is trained on
        assert e.reward == answer_reward(e.info["completion"], e.info["gold"], cfg)[0]
    # the sampler's log-probs are the policy's: re-scoring reproduces them
    from memr1_jax.rl.update import compute_logprobs
    lp = compute_logprobs(tiny_llm.params, b, 8, model_cfg=tiny_llm.cfg, chunk_size=32)
    np.testing.assert_allclose(np.asarray(lp)[resp], np.asarray(b.sampler_logprobs)[resp], atol=2e-4)


def test_tempered_sampler_logprobs_are_the_policy_logprobs(train_conv, tiny_llm):
    """At temperature T the episodes carry log softmax(logits / T) (what the train loop uses
    as old log-probs): re-scoring the packed batch at T reproduces them, and they differ from
    the unscaled model's log-probs."""
    banks, _ = build_banks([train_conv], ENC, ManagerConfig(kind="add-all"), retriever=Retriever())
    cfg = AnswerConfig(k_per_speaker=2, max_new_tokens=6)
    items = [AnswerItem(train_conv, q) for q in train_conv.questions[:2]]
    eps = answer_rollouts(tiny_llm, tiny_llm.params, items, banks, ENC, Retriever(), cfg, 4,
                          SamplingConfig(temperature=0.7, scaled_logprobs=True), jax.random.PRNGKey(5))
    b = pack_episodes(eps, tiny_llm.tokenizer.pad_id)
    resp = np.asarray(b.response_mask)
    from memr1_jax.rl.update import compute_logprobs
    tempered = compute_logprobs(tiny_llm.params, b, 8, model_cfg=tiny_llm.cfg, chunk_size=32, temperature=0.7)
    np.testing.assert_allclose(np.asarray(tempered)[resp], np.asarray(b.sampler_logprobs)[resp], atol=2e-4)
    raw = compute_logprobs(tiny_llm.params, b, 8, model_cfg=tiny_llm.cfg, chunk_size=32)
    assert np.max(np.abs(np.asarray(raw)[resp] - np.asarray(b.sampler_logprobs)[resp])) > 1e-2


def test_item_answer_prompts_match_per_question_prompts():
    """Batched retrieval per conversation gives exactly the per-question prompts, in item order."""
    from memr1_jax.agents.answer_agent import answer_prompts
    from memr1_jax.agents.rollout import item_answer_prompts
    split = default_split(load_conversations("embedded"))
    convs = [split.train[0], split.validation[0]]
    banks, _ = build_banks(convs, ENC, ManagerConfig(kind="add-all"), retriever=Retriever())
    cfg = AnswerConfig(k_per_speaker=3)
    items = [AnswerItem(convs[i % 2], convs[i % 2].questions[i]) for i in range(6)]   # interleaved
    got = item_answer_prompts(items, banks, ENC, Retriever(), cfg)
    want = [answer_prompts(it.conv, banks[it.conv.id], [it.qa.question], ENC, Retriever(), cfg)[0] for it in items]
    assert got == want and len(set(got)) == 6


def test_answer_prompt_variants():
    from memr1_jax.agents.prompts import answer_template, render_answer_prompt
    from memr1_jax.config import ConfigError, default_config, evaluation_defaults, override
    acfg = default_config().task.answer
    assert acfg.prompt == "compact" and acfg.template == answer_template("compact")
    assert evaluation_defaults().task.answer.template == answer_template("full")
    text = render_answer_prompt("Where does Nora live now?", "Nora", ["- 1 May: Nora lives in Dublin"], "Felix",
                                [], template=acfg.template)
    assert "Nora lives in Dublin" in text and "(none)" in text and "**Answer:**" in text
    assert text.rstrip().endswith("Question: Where does Nora live now?")
    # the no-distillation ablation uses Mem0's prompt
    assert dataclasses.replace(acfg, distill=False).template is None
    with pytest.raises(ValueError, match="answer prompt 'short'"):
        AnswerConfig(prompt="short")
    with pytest.raises(ConfigError, match="task.answer.prompt.*answer prompt 'nosuch'"):
        override(default_config(), {"task.answer.prompt": "nosuch"}, from_strings=True)


# ------------------------------------------------------------------ memory manager
def test_manager_spec_uses_temporal_snapshot():
    conv = _two_session_conv()
    assert evidence_session(conv, conv.questions[0]) == (2, 0)
    assert evidence_session(conv, QA("q", "a", ("D9:9", "bogus"), 1)) is None
    specs = manager_episode_specs(conv, conv.questions, ENC, Retriever(), ManagerConfig(max_facts_per_step=4))
    (spec,) = specs
    # bank = add-all of the sessions before the evidence session only
    assert sorted(e["text"] for e in spec.bank.entries()) == ["Ann lives in Paris.", "Bob likes tea."]
    assert spec.state.facts == ("Ann has a cat.", "Ann moved to Oslo.")
    assert spec.state.speaker == 0 and spec.state.session == 2
    assert "Ann moved to Oslo." in spec.state.prompt and "Ann lives in Paris." in spec.state.prompt


def test_manager_rollout_reward_follows_the_bank():
    conv = _two_session_conv()
    cfg = ManagerConfig(max_facts_per_step=4, max_new_tokens=16, format_penalty=0.5)
    (spec,) = manager_episode_specs(conv, conv.questions, ENC, Retriever(), cfg)
    paris_id = next(k for k, v in spec.state.id_map.items())
    outputs = [
        # g=0: UPDATE Paris -> Oslo; g=1: ADD Oslo; g=2: NONE (bank still says Paris); g=3: garbage
        json.dumps({"memory": [{"id": str(paris_id), "text": "Ann moved to Oslo.", "event": "UPDATE",
                                "old_memory": "Ann lives in Paris."}]}),
        json.dumps({"memory": [{"id": "9", "text": "Ann moved to Oslo.", "event": "ADD"}]}),
        json.dumps({"memory": [{"id": str(paris_id), "text": "Ann lives in Paris.", "event": "NONE"}]}),
        "I think we should keep everything",
    ]

    def respond(prompt, g):
        if prompt.startswith("You are a smart memory manager"):
            return outputs[g]
        # frozen answer agent: answers Oslo iff a memory mentions Oslo
        return "**Answer:** Oslo" if "Oslo" in prompt else "**Answer:** Paris"

    llm = ScriptedLLM(respond)
    frozen = ScriptedLLM(respond)      # a separate frozen Answer Agent model
    eps = manager_rollouts(llm, "POLICY", frozen, "FROZEN", [spec], ENC, Retriever(), cfg,
                           AnswerConfig(k_per_speaker=5, max_new_tokens=8), 4, SamplingConfig(1.0),
                           jax.random.PRNGKey(0))
    assert [e.reward for e in eps] == [1.0, 1.0, 0.0, -0.5]
    assert eps[0].info["applied"] == ["UPDATE"] and eps[1].info["applied"] == ["ADD"]
    assert not eps[3].info["parsed"] and eps[0].info["parsed"]
    # the manager samples with the policy params; the answer agent runs greedy on the frozen ones
    assert llm.calls == [(1, 4, SamplingConfig(1.0), "POLICY")]
    assert len(frozen.calls) == 1
    assert frozen.calls[0][0] == 4 and frozen.calls[0][2].greedy and frozen.calls[0][3] == "FROZEN"
    # the snapshot bank itself is untouched by the episodes
    assert spec.bank.size == 2


def test_manager_rollout_in_the_line_format_under_its_automaton():
    """output="lines", constrained: each spec's automaton (its shown ids, its number of facts) goes
    to the sampler; each line's operation is applied to the fact it names."""
    from memr1_jax.models.registry import load_model
    tiny = load_model("tiny-qwen2")
    conv = _two_session_conv()
    cfg = ManagerConfig(max_facts_per_step=4, max_new_tokens=16, output="lines", constrained=True)
    (spec,) = manager_episode_specs(conv, conv.questions, ENC, Retriever(), cfg)
    paris = next(k for k, v in spec.state.id_map.items() if spec.bank.text(v) == "Ann lives in Paris.")
    oslo = 1 + spec.state.facts.index("Ann moved to Oslo.")
    outputs = [f"{oslo}: UPDATE {paris}", f"{oslo}: ADD", f"{oslo}: NONE", f"{oslo}: DELETE {paris}"]

    def respond(prompt, g):
        if prompt.startswith("You manage a memory"):
            return outputs[g]
        return "**Answer:** Oslo" if "Oslo" in prompt else "**Answer:** Paris"

    llm = ScriptedLLM(respond)
    llm.tokenizer, llm.cfg = tiny.tokenizer, tiny.cfg
    eps = manager_rollouts(llm, "POLICY", ScriptedLLM(respond), "FROZEN", [spec], ENC, Retriever(), cfg,
                           AnswerConfig(k_per_speaker=5, max_new_tokens=8), 4, SamplingConfig(1.0),
                           jax.random.PRNGKey(0))
    assert [e.reward for e in eps] == [1.0, 1.0, 0.0, 0.0]
    assert [e.info["applied"] for e in eps] == [["UPDATE"], ["ADD"], [], ["DELETE"]]
    (auto,) = llm.constraints
    lines = "\n".join(f"{n}: NONE" for n in range(1, len(spec.state.facts) + 1))
    assert auto.accepts(tiny.tokenizer.encode(lines))
    assert not auto.accepts(tiny.tokenizer.encode(f"1: UPDATE {len(spec.state.id_map)}"))


def test_manager_sensitive_specs_keep_episodes_the_bank_decides():
    conv = _two_session_conv()
    pet = QA("Which pet does Ann have?", "cat", ("D2:2",), 1)
    conv = dataclasses.replace(conv, questions=conv.questions + (pet,))
    cfg = ManagerConfig(max_facts_per_step=4, f1_weight=1.0)
    specs = manager_episode_specs(conv, conv.questions, ENC, Retriever(), cfg)
    assert len(specs) == 2

    def respond(prompt, g):
        if "Which pet" in prompt:        # this frozen agent gets the pet wrong whatever the bank holds
            return "**Answer:** a dog"
        return "**Answer:** Oslo" if "Oslo" in prompt else "**Answer:** Paris"

    llm = ScriptedLLM(respond)
    kept, stats = manager_sensitive_specs(llm, "FROZEN", specs, ENC, Retriever(), cfg,
                                          AnswerConfig(k_per_speaker=5, max_new_tokens=8))
    assert [k.qa.question for k in kept] == ["Where does Ann live now?"]
    assert [(x["reward_add_all"], x["reward_unchanged"]) for x in stats] == [(2.0, 0.0), (0.0, 0.0)]
    assert llm.calls == [(4, 1, SamplingConfig(temperature=0.0), "FROZEN")]   # one greedy batch
    assert all(sp.bank.size == 2 for sp in specs)                              # snapshots untouched


# ------------------------------------------------------------------ end to end
TINY = {"model.name": "tiny-llama", "model.encoder": "hashing", "data.val_limit": 2,
        "rollout.max_prompt_tokens": 96, "task.answer.max_new_tokens": 6, "task.manager.max_new_tokens": 8,
        "eval.after_training": False, "rl.learning_rate": 1e-3}


def _tiny_run(tmp_path, config, **over):
    from memr1_jax.train import parse_args, train
    args = ["--config", f"configs/{config}.py", "--config.steps=2", "--config.eval_every=2",
            f"--config.run_dir={tmp_path / config}"]
    args += [f"--config.{k}={v}" for k, v in {**TINY, **over}.items()]
    cfg, _ = parse_args(args)
    summary = train(cfg)
    run = pathlib.Path(summary["run_dir"])
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:
        assert np.isfinite(m["reward_mean"]) and m["response_length"] > 0
    assert (run / "curves.png").stat().st_size > 1000
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "2").is_dir()
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and all("completion" in s and "reward" in s for s in samples)
    val = [json.loads(x) for x in (run / "validation.jsonl").read_text().splitlines()]
    assert [v["step"] for v in val] == [0, 2]
    return summary, run, lines


def test_train_answer_grpo_end_to_end(tmp_path):
    summary, run, lines = _tiny_run(tmp_path, "answer_agent_grpo_cpu", **{
        "eval.after_training": True, "eval.limit": 2, "eval.base_too": False, "rl.beta": 0.05})
    assert "kl_old_ref" in lines[0]
    # exported weights load back (the tiny byte tokenizer has no reloadable file format, so
    # the weights are read directly): they are the validation-selected ones
    from memr1_jax.models.registry import load_model
    from memr1_jax.weights.safetensors_loader import load_hf_checkpoint
    cfg, params = load_hf_checkpoint(summary["hf"])
    assert cfg.num_layers == 2
    base = np.asarray(load_model("tiny-llama").params["layers_1"]["attn"]["q_proj"])
    same = np.allclose(np.asarray(params["layers_1"]["attn"]["q_proj"]), base, atol=1e-6)
    assert same == (summary["best"]["step"] == 0)
    assert (pathlib.Path(summary["hf"]) / "memr1_tokenizer.json").exists()
    assert (run / "final_eval.md").read_text().count("| trained |") >= 1
    assert (run / "eval_trained" / "predictions.jsonl").exists()

    # --export: a saved checkpoint -> hf/ (for runs stopped early). Default step: the best
    # validated one saved (step 0 is never saved), else the latest: here step 2 either way.
    from memr1_jax.train import main
    end_hf = pathlib.Path(summary["hf"]).rename(run / "hf_end")
    assert main(["--export", str(run)]) == 0
    _, exported = load_hf_checkpoint(run / "hf")
    q = lambda p: np.asarray(p["layers_1"]["attn"]["q_proj"])  # noqa: E731
    assert not np.allclose(q(exported), base, atol=1e-6)          # LoRA of step 2 merged in
    if summary["best"]["step"] == 2:
        np.testing.assert_allclose(q(exported), q(load_hf_checkpoint(end_hf)[1]), atol=1e-6)
    # ... and the LoRA adapters alone: a model name that loads as the base with them merged
    assert ("adapter" in summary) == (summary["best"]["step"] > 0)
    adapted = load_model(str(run / "adapter"))
    np.testing.assert_allclose(q(adapted.params), q(exported), atol=1e-6)
    assert main(["--export", str(run), "--step", "7"]) == 2       # names the steps on disk
    assert main(["--export", str(tmp_path / "nope")]) == 2


@pytest.mark.slow  # ~50 s; the default suite keeps answer/GRPO and manager/PPO end to end
def test_train_answer_ppo_end_to_end(tmp_path):
    _, _, lines = _tiny_run(tmp_path, "answer_agent_ppo_cpu", **{"lora.rank": 0})
    assert "vf_loss" in lines[0] and "explained_variance" in lines[0]


@pytest.mark.slow
def test_train_manager_grpo_end_to_end(tmp_path):
    _, run, lines = _tiny_run(tmp_path, "memory_manager_grpo_cpu")
    assert "parse_rate" in lines[0]
    s = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert s["agent"] == "manager" and s["facts"]


def test_train_manager_ppo_end_to_end(tmp_path):
    _, run, lines = _tiny_run(tmp_path, "memory_manager_ppo_cpu", **{"eval.after_training": True, "eval.limit": 2})
    assert "vf_loss" in lines[0]
    # final evaluation: the trained manager built the banks, its steps are logged
    assert (run / "eval_trained" / "banks" / "manager_steps.jsonl").exists()
    assert (run / "eval_base" / "predictions.jsonl").exists()
    # validation counts the operations the greedy manager applied (collapse to NONE shows there)
    val = [json.loads(x) for x in (run / "validation.jsonl").read_text().splitlines()]
    assert all(0 <= v["adds"] <= v["applied"] for v in val)


def test_answer_agent_banks_built_by_a_separate_manager_model(registry_loads):
    """Stage 2 of the paper: the Answer Agent trains on banks a (trained) manager built;
    ``bank_manager_model`` names that manager, the backbone builds them otherwise."""
    from memr1_jax.config import default_config, override
    from memr1_jax.tasks import AnswerTask, load_backbone
    loaded = registry_loads
    cfg = override(default_config(), {**TINY, "task.bank": "llm"})
    backbone = load_backbone(cfg)
    loaded.clear()
    logs = []
    named = dataclasses.replace(backbone, cfg=override(cfg, {"task.bank_manager_model": "tiny-qwen2"}))
    task = AnswerTask(named, logs.append)
    assert loaded == ["tiny-qwen2"] and "llm, tiny-qwen2" in logs[0]
    convs = {it.conv.id for it in task.train_items + task.val_items}
    assert convs <= set(task.banks)
    loaded.clear()
    AnswerTask(backbone, logs.append)
    assert loaded == []          # the backbone itself built them


def test_train_manager_sensitive_pool_examines_a_random_subset(tmp_path):
    """The filter looks at ``sensitive_pool`` episodes, records both rewards of each, and a
    filter that keeps nothing is an error naming the option (not an empty training run)."""
    # The random tiny model scores 0 on every bank: no episode is sensitive, so the run must stop.
    with pytest.raises(ValueError, match=r"none of the 3 training episodes examined .*raise task.sensitive_pool"):
        _tiny_run(tmp_path, "memory_manager_grpo_cpu", **{"task.sensitive_only": True,
                                                          "task.sensitive_pool": 3})
    stats = [json.loads(x) for x in
             (tmp_path / "memory_manager_grpo_cpu" / "sensitive_episodes.jsonl").read_text().splitlines()]
    assert len(stats) == 3 and len({s["question"] for s in stats}) == 3
    assert all({"reward_add_all", "reward_unchanged"} <= set(s) for s in stats)
    assert all(s["reward_add_all"] == s["reward_unchanged"] for s in stats)   # why none was kept


def _shrunk(path: pathlib.Path, run_dir: str = ""):
    """A shipped config with only sizes and the model shrunk (its own algorithm, LoRA or full
    fine-tuning, KL, remat, re-scored old log-probs, task; FSDP where its mesh has it)."""
    from memr1_jax.config import load_config_file, override
    cfg = load_config_file(path)
    # FSDP over 2 of the paper configs' devices: the sharded path, at a fraction of 8's compile time
    # The changing-facts configs keep their data: their gold operations exist only there.
    return override(cfg, {**TINY, "mesh.fsdp": min(cfg.mesh.fsdp, 2, jax.device_count()),
                          "data.path": cfg.data.path if cfg.data.path in ("changing", "changing-people") else "embedded",
                          "task.frozen_answer_model": "", "data.val_limit": 1, "steps": 1, "export_hf": False,
                          "rollout.questions_per_step": 1, "rollout.gen_batch_size": 4,
                          "rl.group_size": 1 if cfg.task.manager_sft else 2,
                          "rl.mini_batch_size": None, "rl.micro_batch_size": None, "task.answer.k_per_speaker": 2,
                          "task.sensitive_only": False, "run_dir": run_dir, "name": "shrunk", "target": "",
                          # gold completions in the byte tokenizer: one token a character
                          **({"task.manager.max_new_tokens": 48} if cfg.task.manager_sft else {})})


def _distinct_configs() -> list[pathlib.Path]:
    """One config per distinct shrunk run: the paper configs differ from each other mostly in
    the model and target, which shrinking replaces, so each distinct run executes once."""
    from memr1_jax.config import to_json
    seen = {}
    for path in sorted(pathlib.Path("configs").glob("*.py")):
        seen.setdefault(to_json(_shrunk(path)), path)
    return list(seen.values())


def test_every_shipped_config_loads_and_shrinks():
    paths = sorted(pathlib.Path("configs").glob("*.py"))
    assert len(paths) >= 17 and all(_shrunk(p).steps == 1 for p in paths)
    assert len(_distinct_configs()) >= 4     # answer / manager x GRPO / PPO at least


@pytest.mark.parametrize("path", _distinct_configs(), ids=lambda p: p.stem)
def test_every_distinct_shipped_config_runs_one_step_on_the_tiny_model(tmp_path, path):
    """Each distinct shipped config (``_distinct_configs``) through one training step."""
    from memr1_jax.train import train
    cfg = _shrunk(path, str(tmp_path / path.stem))
    summary = train(cfg)
    (row,) = [json.loads(x) for x in (tmp_path / path.stem / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 1 and np.isfinite(row["pg_loss"]) and row["response_tokens"] > 0
    assert ("vf_loss" in row) == (cfg.rl.algorithm == "ppo")
    assert ("kl_old_ref" in row) == (cfg.rl.beta != 0)
    assert [v["step"] for v in summary["validation"]] == [0, 1]


def test_manager_task_frozen_answer_model(registry_loads, monkeypatch):
    """``task.frozen_answer_model`` names the model whose greedy answers reward the manager;
    by default it is the backbone's untrained weights, never the policy's."""
    from memr1_jax.config import load_config_file, override
    from memr1_jax.tasks import ManagerTask, load_backbone
    cfg = override(load_config_file("configs/memory_manager_grpo_cpu.py"), TINY)
    backbone = load_backbone(cfg)
    registry_loads.clear()
    default = ManagerTask(backbone, lambda m: None)
    assert default.answer_llm.params is backbone.llm.params and registry_loads == []
    named = ManagerTask(dataclasses.replace(backbone, cfg=override(cfg, {"task.frozen_answer_model": "tiny-qwen2"})),
                        lambda m: None)
    assert registry_loads == ["tiny-qwen2"] and named.answer_llm.cfg != backbone.llm.cfg
    calls = []
    for who, llm in (("policy", backbone.llm), ("frozen", named.answer_llm)):
        real = llm.generate_ids

        def spy(ids, *a, _who=who, _real=real, **kw):
            calls.append((_who, kw.get("params"), kw["sampling"].greedy))
            return _real(ids, *a, **kw)
        monkeypatch.setattr(llm, "generate_ids", spy)
    policy = jax.tree.map(lambda x: x * 1.0, backbone.llm.params)
    eps = named.rollouts(policy, named.train_items[:1], jax.random.PRNGKey(0), 2, 1.0)
    assert len(eps) == 2
    assert [c[0] for c in calls] == ["policy", "frozen"]
    assert calls[0][1] is policy and not calls[0][2]
    assert calls[1][1] is named.answer_llm.params and calls[1][2]
