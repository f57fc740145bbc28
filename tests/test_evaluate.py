"""End to end `memr1_jax.evaluate` on the embedded dataset with the tiny random model:
outputs written, resume after an interruption, argument errors."""

import json

import pytest

from memr1_jax.config import evaluation_defaults, override
from memr1_jax.eval.metrics import score_answer
from memr1_jax.eval.run import bank_dir, default_run_dir, evaluate, pipeline
from memr1_jax.evaluate import main, parse_args


def _cfg(tmp_path, system, **kw):
    base = {"model.name": "tiny-llama", "eval.system": system, "eval.limit": 4, "rollout.gen_batch_size": 4,
            "eval.manager": "add-all", "task.answer.max_new_tokens": 8, "task.answer.k_per_speaker": 2,
            "eval.rag_chunk_tokens": 64, "eval.fullctx_tokens": 300, "eval.run_dir": str(tmp_path / system)}
    return override(evaluation_defaults(), {**base, **kw})


@pytest.mark.parametrize("system", ["base", "rag"])
def test_evaluate_writes_outputs_and_resumes(tmp_path, system, monkeypatch):
    cfg = _cfg(tmp_path, system)
    agg = evaluate(cfg, progress=False)
    run = tmp_path / system
    assert agg["overall"]["count"] == 4
    for name in ("metrics.json", "results.md", "results.png", "predictions.jsonl", "config.json"):
        assert (run / name).stat().st_size > 0, name
    lines = (run / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 4
    recs = [json.loads(line) for line in lines]
    for r in recs:   # stored scores are the metric functions' values for the stored prediction
        assert {k: r[k] for k in ("f1", "b1", "em", "locomo_f1")} == score_answer(r["prediction"], r["gold"], r["category"])
        assert r["j"] is None
    assert json.loads((run / "metrics.json").read_text())["results"]["overall"]["j"] is None

    # Interrupted run: the last line is torn. Resuming redoes only that question.
    torn = "\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2]
    (run / "predictions.jsonl").write_text(torn)
    from memr1_jax.agents.llm import ChatLLM
    asked, real = [], ChatLLM.generate_ids

    def spy(self, prompt_ids, *a, **kw):
        asked.extend(prompt_ids)
        return real(self, prompt_ids, *a, **kw)
    monkeypatch.setattr(ChatLLM, "generate_ids", spy)
    agg2 = evaluate(cfg, progress=False)
    assert agg2["overall"]["count"] == 4
    assert len(asked) == 1             # the answer model is asked the torn question only (banks cached)
    after = (run / "predictions.jsonl").read_text().splitlines()
    assert after[:3] == lines[:3]      # the intact lines are kept byte for byte
    keys = [json.loads(x)["key"] for x in after if x.strip().endswith("}")]
    assert sorted(keys) == sorted(r["key"] for r in recs)
    assert json.loads(after[-1]) == recs[3]   # greedy: the redone question's record is the same
    if system == "base":  # banks are cached beside the run and reused
        assert list((tmp_path / "banks").glob("*/*.bank"))


def test_evaluate_refuses_a_different_config_in_the_same_run_dir(tmp_path):
    evaluate(_cfg(tmp_path, "fullctx"), progress=False)
    with pytest.raises(ValueError, match="different config"):
        evaluate(_cfg(tmp_path, "fullctx", **{"task.answer.k_per_speaker": 3}), progress=False)


def test_cli_argument_errors(capsys):
    assert main(["--system", "nope"]) == 2
    assert "eval.system='nope'" in capsys.readouterr().err
    assert main(["--config.eval.limt=3"]) == 2
    assert "did you mean 'eval.limit'" in capsys.readouterr().err
    cfg, _ = parse_args(["--limit", "0", "--system", "checkpoint:/x/y"])
    assert cfg.eval.limit == 0 and pipeline(cfg) == "base"
    # flags are shorthands for run-config keys; dotted keys reach the rest, and win
    cfg, show = parse_args(["--k-per-speaker", "7", "--config.task.answer.k_per_speaker=9",
                            "--config.eval.rag_num_chunks=3", "--print_config"])
    assert (cfg.task.answer.k_per_speaker, cfg.eval.rag_num_chunks, show) == (9, 3, True)
    assert parse_args([])[0] == evaluation_defaults()


def test_manager_model_builds_the_banks_and_keys_their_cache(tmp_path, registry_loads, capsys):
    """--manager-model: that model builds the banks (logged per step in its own cache folder),
    --model still answers; without it the run folder name and bank key are unchanged."""
    loaded = registry_loads
    keys = {"eval.manager": "llm", "task.manager.max_new_tokens": 8, "eval.limit": 2}
    plain = _cfg(tmp_path, "base", **keys)
    other = _cfg(tmp_path, "base", **keys, **{"eval.manager_model": "tiny-qwen2",
                                              "eval.run_dir": str(tmp_path / "base_mm")})
    assert "manager" not in default_run_dir(plain).name
    assert default_run_dir(other) != default_run_dir(plain)
    assert "tiny-qwen2-manager" in default_run_dir(other).name
    assert bank_dir(other, tmp_path / "x") != bank_dir(plain, tmp_path / "x")
    # banks of the line-format manager are other banks; the JSON format keeps its older key
    lines = _cfg(tmp_path, "base", **keys, **{"task.manager.output": "lines"})
    assert bank_dir(lines, tmp_path / "x") != bank_dir(plain, tmp_path / "x")
    assert bank_dir(_cfg(tmp_path, "base", **keys, **{"task.manager.output": "json"}), tmp_path / "x") == \
        bank_dir(plain, tmp_path / "x")
    agg = evaluate(other, progress=False)
    assert agg["overall"]["count"] == 2
    assert loaded == ["tiny-llama", "tiny-qwen2"]
    steps = (bank_dir(other, tmp_path / "base_mm") / "manager_steps.jsonl").read_text().splitlines()
    assert steps and all("completion" in json.loads(s) for s in steps)
    # a manager that applied nothing is said to leave the banks empty, with the line format as the way out
    none_applied = not any(json.loads(s)["applied"] for s in steps)
    assert ("applied no operation" in capsys.readouterr().out) == none_applied
    assert parse_args(["--manager-model", "runs/x/hf"])[0].eval.manager_model == "runs/x/hf"
