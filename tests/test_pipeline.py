"""``python -m memr1_jax.pipeline``: the staged training (manager, then the Answer Agent on the
trained manager's banks) and the comparison, end to end with the tiny model."""

import json
import pathlib

import pytest

from memr1_jax.config import ConfigError
from memr1_jax.pipeline import apply_overrides, linked, load_stages, main
from memr1_jax.trained import load_pipeline

TINY = '''
from memr1_jax.config import evaluation_defaults, load_config_file, override

def get_stages():
    tiny = load_config_file("{root}/configs/tiny_cpu.py")
    manager = override(tiny, {{"name": "m", "task.agent": "manager", "task.manager.output": "lines",
                               "task.manager.constrained": True, "task.manager.max_new_tokens": 12,
                               "rollout.old_logprobs_from_sampler": False, "steps": 1, "eval_every": 1}})
    answer = override(tiny, {{"name": "a", "steps": 1, "eval_every": 1}})
    evaluation = override(evaluation_defaults(), {{
        "model.name": "tiny-llama", "model.encoder": "hashing", "eval.system": "memory-r1,base,rag",
        "eval.limit": 3, "task.answer.max_new_tokens": 6, "task.answer.k_per_speaker": 2,
        "task.manager.max_new_tokens": 8, "eval.rag_chunk_tokens": 64}})
    return {{"manager": manager, "answer": answer, "evaluation": evaluation}}
'''


@pytest.fixture()
def tiny_file(tmp_path):
    path = tmp_path / "pipeline_tiny.py"
    path.write_text(TINY.format(root=pathlib.Path(__file__).resolve().parents[1]))
    return path


def test_overrides_reach_one_stage_or_all_and_the_stages_are_linked(tiny_file, tmp_path):
    stages = apply_overrides(load_stages(str(tiny_file)), [("manager.steps", "5"), ("seed", "3")])
    assert (stages["manager"].steps, stages["answer"].steps) == (5, 1)
    assert {c.seed for c in stages.values()} == {3}
    s = linked(stages, tmp_path, "runs/x/adapter")
    a = s["answer"]
    assert (a.task.bank, a.task.bank_manager_model, a.task.manager) == ("llm", "runs/x/adapter",
                                                                        s["manager"].task.manager)
    assert (s["manager"].run_dir, a.run_dir) == (str(tmp_path / "manager"), str(tmp_path / "answer"))
    with pytest.raises(ConfigError, match="answer stage's model.name 'tiny-qwen2' differs"):
        linked(apply_overrides(stages, [("answer.model.name", "tiny-qwen2")]), tmp_path)
    (tmp_path / "bad.py").write_text("def get_config():\n    return None\n")
    with pytest.raises(ConfigError, match="defines no get_stages"):
        load_stages(str(tmp_path / "bad.py"))


def test_the_shipped_pipeline_configs_link_their_stages(tmp_path):
    paths = sorted(pathlib.Path("configs/pipelines").glob("*.py"))
    assert paths
    for path in paths:
        s = linked(apply_overrides(load_stages(str(path)), [("data.path", "../shared/data/locomo10")]), tmp_path, "x")
        assert s["manager"].task.agent == "manager" and s["answer"].task.bank_manager_model == "x"
        assert "memory-r1" in s["evaluation"].eval.systems and s["evaluation"].eval.limit >= 300
        assert {c.data.path for c in s.values()} == {"../shared/data/locomo10"}


def test_the_staged_pipeline_runs_end_to_end_and_resumes(tiny_file, tmp_path, capsys):
    root = tmp_path / "run"
    assert main(["--config", str(tiny_file), "--run-dir", str(root)]) == 0
    out = capsys.readouterr().out
    p = load_pipeline(root / "trained")
    # stage 2 trained on banks the stage-1 manager built: its config names stage 1's agent
    answer_cfg = json.loads((root / "answer" / "config.json").read_text())
    assert answer_cfg["task"]["bank"] == "llm" and answer_cfg["task"]["bank_manager_model"] == p.memory_manager
    assert p.settings["task.manager.output"] == "lines" and p.settings["task.answer.prompt"] == "compact"
    # the evaluation compared the trained pipeline with each baseline on the same questions
    table = (root / "comparison.md").read_text().splitlines()
    assert [r.split(" | ")[0].lstrip("| ").split(" (")[0] for r in table[2:]] == [
        f"memory-r1:{root / 'trained'}", "base", "rag"]
    r1 = json.loads((root / "evaluation" / "memory-r1" / "config.json").read_text())
    assert r1["manager"]["output"] == "lines" and r1["answer"]["prompt"] == "compact"
    assert "the staged pipeline" in out
    # a second run reuses every stage: nothing is trained or answered again
    kept = [*root.rglob("predictions.jsonl"), *root.glob("*/train.log")]
    mtimes = {f: f.stat().st_mtime_ns for f in kept}
    assert len(kept) == 5
    assert main(["--config", str(tiny_file), "--run-dir", str(root)]) == 0
    assert "3 already answered" in capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in kept} == mtimes
