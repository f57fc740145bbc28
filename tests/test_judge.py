"""The LLM judge: labels and J aggregated as Mem0's evaluation computes them, an
OpenAI-compatible endpoint on loopback (batched), and judging as a pass over saved answers."""

import http.server
import json
import re
import threading
import time

import numpy as np
import pytest

from memr1_jax.agents.prompts import parse_judge_label
from memr1_jax.config import evaluation_defaults, override
from memr1_jax.eval.judge import JudgeError, OpenAIJudge, make_judge
from memr1_jax.eval.metrics import aggregate, judge_agreement
from memr1_jax.eval.run import evaluate


def mem0_label(content: str) -> int:
    """Mem0's ``evaluate_llm_judge`` on one response (evaluation/metrics/llm_judge.py):
    a code fence stripped, the JSON read, 1 if its label is "CORRECT" else 0."""
    m = re.search(r"```(?:json)?\s*(.*?)\s*```", content, re.S)
    return 1 if json.loads(m.group(1) if m else content.strip())["label"] == "CORRECT" else 0


def mem0_j(categories, labels):
    """Mem0's per-category J (``np.mean`` of the labels, category 5 skipped) and the overall mean."""
    per = {}
    for c, lab in zip(categories, labels):
        if int(c) != 5:
            per.setdefault(int(c), []).append(lab)
    return {c: float(np.mean(v)) for c, v in per.items()}, float(np.mean([x for v in per.values() for x in v]))


RESPONSES = ['{"label": "CORRECT"}', '{"label": "WRONG"}', '```json\n{"label": "CORRECT"}\n```',
             '{"reason": "same city", "label": "CORRECT"}', '{"label": "correct"}', '{"label": "Correct."}',
             '{"label": "WRONG", "note": "not CORRECT"}', '```\n{"label": "WRONG"}\n```']


def test_labels_and_j_aggregate_as_mem0_computes_them():
    rng = np.random.default_rng(0)
    contents = [RESPONSES[i] for i in rng.integers(0, len(RESPONSES), 200)]
    cats = rng.integers(1, 6, 200).tolist()
    ours = [parse_judge_label(c) for c in contents]
    assert ours == [mem0_label(c) for c in contents]
    records = [{"category": c, "f1": 0.0, "b1": 0.0, "em": 0.0, "j": j} for c, j in zip(cats, ours)]
    agg = aggregate(records)
    per, overall = mem0_j(cats, [mem0_label(c) for c in contents])
    assert {row["category"]: row["j"] for row in agg.values() if row["category"]} == pytest.approx(per, abs=1e-12)
    assert agg["overall"]["j"] == pytest.approx(overall, abs=1e-12)


def test_a_local_judge_loads_its_model_on_the_first_batch_and_batches_it():
    class Scripted:
        batches = []

        def complete(self, prompts, max_new_tokens=64):
            self.batches.append(len(prompts))
            return [RESPONSES[i % len(RESPONSES)] for i in range(len(prompts))]

    loads = []
    judge = make_judge("some-model", lambda name: loads.append(name) or Scripted())
    assert judge.name == "some-model" and loads == []
    labels = judge(["q"] * 8, ["g"] * 8, ["a"] * 8)
    assert labels == [mem0_label(r) for r in RESPONSES] and loads == ["some-model"] and Scripted.batches == [8]
    judge(["q"], ["g"], ["a"])
    assert loads == ["some-model"]


def test_judge_agreement_with_em_and_f1():
    # j 1 1 0 0 1 0 against EM 1 0 0 0 1 1: 4 of 6 agree; both say yes half the time, so chance
    # agreement is 0.5 and kappa (4/6 - 0.5) / 0.5 = 1/3. Against F1 >= 0.5 (1 1 0 0 1 0): all agree.
    recs = [{"category": 1, "j": j, "em": em, "f1": f1, "b1": 0.0} for j, em, f1 in
            [(1, 1, 1.0), (1, 0, 0.6), (0, 0, 0.2), (0, 0, 0.0), (1, 1, 1.0), (0, 1, 0.4)]]
    recs += [{"category": 5, "j": 1, "em": 0, "f1": 0.0, "b1": 0.0}, {"category": 2, "j": None, "em": 1, "f1": 1.0}]
    a = judge_agreement(recs)
    assert a["n"] == 6 and a["judge_positive"] == 0.5
    assert a["em"]["agreement"] == pytest.approx(4 / 6) and a["em"]["kappa"] == pytest.approx(1 / 3)
    assert a["f1>=0.5"] == {"agreement": 1.0, "kappa": 1.0, "positive": 0.5}
    assert judge_agreement([])["n"] == 0


class _FakeChat(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions: CORRECT when the generated answer equals the
    gold one, else WRONG; every request recorded with its arrival time. ``script``: (status,
    headers) answers given first, one per request; ``poison``: a question always met with 500."""
    log: list = []
    lock = threading.Lock()
    script: list = []
    poison: str | None = None

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        gold = re.search(r"Gold answer: (.*)", prompt).group(1)
        gen = re.search(r"Generated answer: (.*)", prompt).group(1)
        question = re.search(r"Question: (.*)", prompt).group(1)
        with self.lock:
            self.log.append((time.monotonic(), self.headers.get("Authorization"), body["temperature"]))
            step = self.script.pop(0) if self.script else None
        if step is None and self.poison is not None and question.strip() == self.poison:
            step = (500, {})
        if step is not None:
            self.send_response(step[0])
            for k, v in step[1].items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        time.sleep(0.05)   # long enough that a batch sent one by one would be visibly serial
        label = "CORRECT" if gold.strip() == gen.strip() else "WRONG"
        payload = json.dumps({"choices": [{"message": {"content": f'{{"label": "{label}"}}'}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_endpoint():
    _FakeChat.log, _FakeChat.script, _FakeChat.poison = [], [], None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_judge_sends_a_batch_concurrently_and_keeps_the_order(fake_endpoint):
    judge = OpenAIJudge(fake_endpoint, "k-123", "judge-model", timeout=10, concurrency=8)
    golds = [f"answer {i}" for i in range(16)]
    answers = [g if i % 3 else "something else" for i, g in enumerate(golds)]
    t0 = time.monotonic()
    labels = judge(["q"] * 16, golds, answers)
    wall = time.monotonic() - t0
    assert labels == [0 if i % 3 == 0 else 1 for i in range(16)]
    assert len(_FakeChat.log) == 16 and all(a == "Bearer k-123" and t == 0 for _, a, t in _FakeChat.log)
    assert wall < 16 * 0.05 * 0.6, f"{wall:.2f} s: the batch was not sent concurrently"


def test_an_endpoint_that_fails_is_named():
    judge = OpenAIJudge("http://127.0.0.1:9/v1", "k", "m", timeout=2, retries=1, backoff=0.01)   # port 9: refused
    with pytest.raises(JudgeError, match=r"judge endpoint http://127.0.0.1:9/v1/chat/completions failed after 2 "
                                         r"attempts: .*refused"):
        judge(["q"], ["g"], ["a"])


def test_a_429_is_retried_after_what_retry_after_asks(fake_endpoint):
    _FakeChat.script = [(429, {"Retry-After": "1"})]
    judge = OpenAIJudge(fake_endpoint, "k", "m", timeout=10, backoff=0.01)
    assert judge(["q"], ["Paris"], ["Paris"]) == [1]
    assert len(_FakeChat.log) == 2 and _FakeChat.log[1][0] - _FakeChat.log[0][0] >= 1.0


def test_5xx_and_408_are_retried_with_backoff_and_a_400_is_not(fake_endpoint):
    _FakeChat.script = [(503, {}), (502, {}), (408, {}), (500, {})]
    judge = OpenAIJudge(fake_endpoint, "k", "m", timeout=10, backoff=0.01)
    assert judge(["q"], ["Paris"], ["Lyon"]) == [0] and len(_FakeChat.log) == 5
    _FakeChat.log, _FakeChat.script = [], [(400, {})]
    with pytest.raises(JudgeError, match=r"failed after 1 attempt: HTTP 400"):
        judge(["q"], ["Paris"], ["Lyon"])
    assert len(_FakeChat.log) == 1


def test_retries_are_bounded_and_the_error_names_the_url_without_secrets(fake_endpoint):
    _FakeChat.script = [(503, {"Retry-After": "3600"})] * 10   # an hour asked: waits max_wait
    judge = OpenAIJudge(fake_endpoint + "?api-key=secret", "k", "m", timeout=10, retries=3, backoff=0.01,
                        max_wait=0.05)
    t0 = time.monotonic()
    with pytest.raises(JudgeError) as err:
        judge(["q"], ["Paris"], ["Paris"])
    assert time.monotonic() - t0 < 5 and len(_FakeChat.log) == 4
    assert f"judge endpoint {fake_endpoint}/chat/completions failed after 4 attempts: HTTP 503" in str(err.value)
    assert "secret" not in str(err.value)
    with pytest.raises(ValueError, match="not in the URL"):
        OpenAIJudge("https://user:pw@judge.example/v1", "k", "m")


def test_one_failing_prompt_keeps_the_batchs_other_labels(fake_endpoint):
    _FakeChat.poison = "broken"
    judge = OpenAIJudge(fake_endpoint, "k", "m", timeout=10, retries=1, backoff=0.01)
    with pytest.raises(JudgeError, match="1 of 3 prompts") as err:
        judge(["q1", "broken", "q3"], ["a", "b", "c"], ["a", "b", "x"])
    assert err.value.failed == {1} and err.value.labels == [1, None, 0]


def test_judging_is_a_pass_over_saved_answers(tmp_path, fake_endpoint, monkeypatch, registry_loads):
    """A run judged later keeps its answers (same run folder, no model loaded) and fills J as Mem0 does."""
    base = {"model.name": "tiny-llama", "model.encoder": "hashing", "eval.system": "fullctx", "eval.limit": 6,
            "task.answer.max_new_tokens": 4, "eval.fullctx_tokens": 300, "eval.run_dir": str(tmp_path / "run")}
    plain = evaluate(override(evaluation_defaults(), base), progress=False)
    assert plain["overall"]["j"] is None
    before = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    registry_loads.clear()
    monkeypatch.setenv("MEMR1_JUDGE_BASE_URL", fake_endpoint)
    monkeypatch.setenv("MEMR1_JUDGE_API_KEY", "k")
    monkeypatch.setenv("MEMR1_JUDGE_MODEL", "judge-model")
    judged = evaluate(override(evaluation_defaults(), {**base, "eval.judge": "openai"}), progress=False)
    assert registry_loads == []            # nothing was answered again
    assert len(_FakeChat.log) == 6
    lines = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    last = {r["key"]: r for r in lines}
    assert [last[r["key"]]["prediction"] for r in before] == [r["prediction"] for r in before]
    want = [int(r["prediction"].strip() == r["gold"].strip()) for r in before]
    assert [last[r["key"]]["j"] for r in before] == want
    assert all(last[r["key"]]["judge"] == "openai:judge-model" for r in before)
    assert judged["overall"]["j"] == pytest.approx(sum(want) / len(want))
    assert judged["overall"]["f1"] == plain["overall"]["f1"]
    md = (tmp_path / "run" / "results.md").read_text()
    assert "LLM judge `openai:judge-model`" in md
    # judged again by the same judge: nothing is sent
    evaluate(override(evaluation_defaults(), {**base, "eval.judge": "openai"}), progress=False)
    assert len(_FakeChat.log) == 6


def test_a_judge_run_stopped_by_a_failing_endpoint_resumes_without_asking_again(tmp_path, fake_endpoint, monkeypatch,
                                                                               registry_loads):
    base = {"model.name": "tiny-llama", "model.encoder": "hashing", "eval.system": "fullctx", "eval.limit": 6,
            "task.answer.max_new_tokens": 4, "eval.fullctx_tokens": 300, "eval.run_dir": str(tmp_path / "run")}
    evaluate(override(evaluation_defaults(), base), progress=False)
    before = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    monkeypatch.setenv("MEMR1_JUDGE_BASE_URL", fake_endpoint)
    monkeypatch.setenv("MEMR1_JUDGE_API_KEY", "k")
    monkeypatch.setenv("MEMR1_JUDGE_MODEL", "judge-model")
    monkeypatch.setattr(OpenAIJudge.__init__, "__defaults__", (60.0, 8, 1, 0.01, 60.0))   # quick retries
    _FakeChat.poison = before[2]["question"].strip()
    poisoned = sum(r["question"].strip() == _FakeChat.poison for r in before)
    with pytest.raises(JudgeError):
        evaluate(override(evaluation_defaults(), {**base, "eval.judge": "openai"}), progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    last = {r["key"]: r for r in lines}
    labelled = sum(r.get("judge") == "openai:judge-model" for r in last.values())
    assert labelled == len(before) - poisoned   # the others' labels were saved
    _FakeChat.log, _FakeChat.poison = [], None
    judged = evaluate(override(evaluation_defaults(), {**base, "eval.judge": "openai"}), progress=False)
    assert len(_FakeChat.log) == poisoned                              # only the unlabelled asked again
    want = [int(r["prediction"].strip() == r["gold"].strip()) for r in before]
    assert judged["overall"]["j"] == pytest.approx(sum(want) / len(want))
