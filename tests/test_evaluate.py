"""End to end `memr1_jax.evaluate` on the embedded dataset with the tiny random model:
outputs written, resume after an interruption, argument errors."""

import json

import pytest

from memr1_jax.eval.metrics import score_answer
from memr1_jax.evaluate import EvalConfig, evaluate, main, parse_args


def _cfg(tmp_path, system, **kw):
    base = dict(model="tiny-llama", system=system, limit=4, batch_size=4, manager="add-all",
                answer_max_new_tokens=8, k_per_speaker=2, rag_chunk_tokens=64,
                fullctx_tokens=300, run_dir=str(tmp_path / system))
    return EvalConfig(**{**base, **kw})


@pytest.mark.parametrize("system", ["base", "rag"])
def test_evaluate_writes_outputs_and_resumes(tmp_path, system):
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
    agg2 = evaluate(cfg, progress=False)
    assert agg2["overall"]["count"] == 4
    keys = [json.loads(x)["key"] for x in (run / "predictions.jsonl").read_text().splitlines()
            if x.strip().endswith("}")]
    assert sorted(keys) == sorted(r["key"] for r in recs)
    if system == "base":  # banks are cached beside the run and reused
        assert list((tmp_path / "banks").glob("*/*.bank"))


def test_evaluate_refuses_a_different_config_in_the_same_run_dir(tmp_path):
    evaluate(_cfg(tmp_path, "fullctx"), progress=False)
    with pytest.raises(ValueError, match="different config"):
        evaluate(_cfg(tmp_path, "fullctx", k_per_speaker=3), progress=False)


def test_cli_argument_errors(capsys):
    assert main(["--system", "nope"]) == 2
    assert "--system 'nope'" in capsys.readouterr().err
    cfg = parse_args(["--limit", "0", "--system", "checkpoint:/x/y"])
    assert cfg.limit is None and cfg.pipeline == "base"


def test_manager_model_builds_the_banks_and_keys_their_cache(tmp_path, registry_loads):
    """--manager-model: that model builds the banks (logged per step in its own cache folder),
    --model still answers; without it the run folder name and bank key are unchanged."""
    loaded = registry_loads
    plain = _cfg(tmp_path, "base", manager="llm", manager_max_new_tokens=8, limit=2)
    other = _cfg(tmp_path, "base", manager="llm", manager_max_new_tokens=8, limit=2, manager_model="tiny-qwen2",
                 run_dir=str(tmp_path / "base_mm"))
    assert "manager_model" not in json.dumps(str(plain.default_run_dir()))
    assert other.default_run_dir() != plain.default_run_dir()
    assert "tiny-qwen2-manager" in other.default_run_dir().name
    assert other.bank_dir(tmp_path / "x") != plain.bank_dir(tmp_path / "x")
    agg = evaluate(other, progress=False)
    assert agg["overall"]["count"] == 2
    assert loaded == ["tiny-llama", "tiny-qwen2"]
    steps = (other.bank_dir(tmp_path / "base_mm") / "manager_steps.jsonl").read_text().splitlines()
    assert steps and all("completion" in json.loads(s) for s in steps)
    assert parse_args(["--manager-model", "runs/x/hf"]).manager_model == "runs/x/hf"
