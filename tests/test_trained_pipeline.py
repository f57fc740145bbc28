"""The trained pipeline that ships with the package (``memr1_jax.trained``), the memory-r1
system that evaluates it, several systems compared in one command, and bank statistics."""

import json
import pathlib

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

import memr1_jax.trained as trained
from memr1_jax.config import ConfigError, evaluation_defaults, override
from memr1_jax.data import default_split, load_conversations
from memr1_jax.eval.bank_stats import bank_stats
from memr1_jax.eval.metrics import paired_bootstrap
from memr1_jax.eval.run import answer_model, evaluate, manager_model, pipeline
from memr1_jax.eval.systems import evaluate_systems
from memr1_jax.evaluate import system_configs
from memr1_jax.weights.adapters import read_config


def test_the_shipped_adapters_are_trained_adapters_of_their_model():
    """Each shipped adapter folder is a LoRA adapter over the model it is filed under, and was
    trained: LoRA's B matrices start at zero, so a nonzero B is what training left."""
    assert "smollm2-135m-instruct" in trained.available()
    tp = trained.trained_pipeline("smollm2-135m-instruct")
    for folder in map(pathlib.Path, (tp.answer_agent, tp.memory_manager)):
        cfg = read_config(folder)
        assert cfg["base_model"] == tp.model == "smollm2-135m-instruct"
        tensors = load_file(str(folder / "adapter.safetensors"))
        bs = [v for k, v in tensors.items() if k.endswith("/b")]
        assert bs and all(v.shape[0] == cfg["rank"] for v in bs)
        assert max(float(np.abs(v).max()) for v in bs) > 1e-3
    assert tp.settings["task.manager.output"] == "lines" and tp.settings["task.manager.constrained"] is True
    for part in ("answer_agent", "memory_manager"):
        assert tp.provenance[part]["command"].startswith("python -m memr1_jax.train --config configs/")
    with pytest.raises(ValueError, match=r"no trained Memory-R1 pipeline ships for model 'tiny-llama'.*smollm2"):
        trained.trained_pipeline("tiny-llama")
    with pytest.raises(ValueError, match="no trained"):
        trained.trained_pipeline("../smollm2-135m-instruct")


def test_memory_r1_configs_take_the_trained_settings_beneath_the_flags(tmp_path, capsys):
    cfgs, show = system_configs([])
    assert [c.eval.system for c in cfgs] == ["memory-r1", "memory-r1", "base", "rag"] and not show
    r1, r1_add_all, base, rag = cfgs
    assert r1_add_all == override(r1, {"eval.manager": "add-all"})   # memory-r1@add-all: only the banks differ
    settings = trained.trained_pipeline("smollm2-135m-instruct").settings
    assert override(r1, settings) == r1                     # every trained setting is in effect ...
    assert base == override(evaluation_defaults(), {"eval.system": "base"})   # ... and only for memory-r1
    assert answer_model(r1).endswith("answer_agent") and manager_model(r1).endswith("memory_manager")
    assert pipeline(r1) == "base" and manager_model(base) == "" and answer_model(rag) == "smollm2-135m-instruct"
    # flags win over the trained settings; one folder per system under --run-dir
    (r1,), _ = system_configs(["--system", "memory-r1", "--k-per-speaker", "7"])
    assert r1.task.answer.k_per_speaker == 7 and r1.task.answer.prompt == "compact"
    # ... and they hold over a config file too
    cfg_file = tmp_path / "ev.py"
    cfg_file.write_text("from memr1_jax.config import evaluation_defaults, override\n"
                        "def get_config():\n    return override(evaluation_defaults(), {'eval.limit': 5})\n")
    (r1, rag), _ = system_configs(["--config", str(cfg_file), "--system", "memory-r1,rag"])
    assert (r1.eval.limit, r1.task.answer.prompt, rag.task.answer.prompt) == (5, "compact", "full")
    cfgs, _ = system_configs(["--system", "rag,fullctx", "--run-dir", str(tmp_path)])
    assert [c.eval.run_dir for c in cfgs] == [str(tmp_path / "rag"), str(tmp_path / "fullctx")]
    with pytest.raises(ConfigError, match="memory-r1: no trained Memory-R1 pipeline ships for model 'tiny-llama'"):
        system_configs(["--model", "tiny-llama", "--system", "memory-r1,rag"])
    # the default comparison over a model without trained agents compares the others, and says so
    assert [c.eval.system for c in system_configs(["--model", "tiny-llama"])[0]] == ["base", "rag"]
    assert "no trained Memory-R1 pipeline ships for model 'tiny-llama'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'nope' is not one of"):
        system_configs(["--system", "rag,nope"])
    with pytest.raises(ConfigError, match="runs one system"):
        evaluate(override(evaluation_defaults(), {"eval.system": "base,rag"}))


def _tiny_pipeline(root, seed_answer: int, seed_manager: int):
    """A trained-pipeline folder for tiny-llama with random (nonzero) adapters."""
    from memr1_jax.models.registry import load_model
    from memr1_jax.rl import lora
    from memr1_jax.weights.adapters import save_adapters
    base = load_model("tiny-llama")
    folder = root / "tiny-llama"
    for name, seed in (("answer_agent", seed_answer), ("memory_manager", seed_manager)):
        ad = lora.init_adapters(base.params, lora.LoraConfig(rank=4, alpha=8.0), jax.random.PRNGKey(seed))
        ad = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(seed + 1), x.shape), ad)
        save_adapters(folder / name, jax.device_get(ad), "tiny-llama", 4, 8.0)
    settings = {"task.manager.output": "lines", "task.manager.constrained": True, "task.manager.max_new_tokens": 12,
                "task.answer.prompt": "compact", "task.answer.k_per_speaker": 2}
    (folder / "pipeline.json").write_text(json.dumps({"model": "tiny-llama", "answer_agent": "answer_agent",
                                                      "memory_manager": "memory_manager", "settings": settings}))
    return folder, settings


def test_memory_r1_is_the_checkpoint_pipeline_with_the_shipped_adapters(tmp_path, monkeypatch):
    """--system memory-r1 answers exactly as the explicit route does: checkpoint:<answer adapter>
    with --manager-model <manager adapter> and the same settings."""
    monkeypatch.setattr(trained, "ROOT", tmp_path / "trained")
    folder, _ = _tiny_pipeline(tmp_path / "trained", 10, 20)
    common = ["--model", "tiny-llama", "--encoder", "hashing", "--limit", "3", "--batch-size", "4",
              "--answer-max-new-tokens", "6", "--manager-max-new-tokens", "12"]
    (r1,), _ = system_configs(common + ["--system", "memory-r1", "--run-dir", str(tmp_path / "r1")])
    (explicit,), _ = system_configs(common + [
        "--system", f"checkpoint:{folder / 'answer_agent'}", "--manager-model", str(folder / "memory_manager"),
        "--run-dir", str(tmp_path / "explicit"), "--config.task.manager.output=lines",
        "--config.task.manager.constrained=true", "--answer-prompt", "compact", "--k-per-speaker", "2"])
    evaluate(r1, progress=False)
    evaluate(explicit, progress=False)
    read = lambda d: [(p["key"], p["completion"]) for p in map(json.loads, (d / "predictions.jsonl").open())]  # noqa: E731
    assert read(tmp_path / "r1") == read(tmp_path / "explicit") and len(read(tmp_path / "r1")) == 3
    m1 = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "explicit" / "metrics.json").read_text())
    assert m1["banks"] == m2["banks"] and m1["banks"]["observations"] > 0


def test_systems_are_compared_on_the_same_questions(tmp_path, capsys):
    """The comparison table's differences are the paired bootstrap of the runs' own per-question
    F1; add-all banks keep every observation (ADDs = memories = observations, coverage 100%)."""
    cfgs, _ = system_configs(["--system", "base,rag", "--model", "tiny-llama", "--encoder", "hashing",
                              "--limit", "4", "--manager", "add-all", "--answer-max-new-tokens", "6",
                              "--k-per-speaker", "2", "--run-dir", str(tmp_path)])
    table = evaluate_systems(cfgs, progress=False)
    assert (tmp_path / "base" / "comparison.md").read_text().strip() == table
    rows = [r.split(" | ") for r in table.splitlines()[2:]]
    # the banks' manager is named where it is not the LLM (rag has no banks)
    assert [r[0].lstrip("| ") for r in rows] == ["base@add-all (n=4)", "rag (n=4)"]
    preds = {s: {json.loads(x)["key"]: json.loads(x)["f1"] for x in (tmp_path / s / "predictions.jsonl").open()}
             for s in ("base", "rag")}
    keys = sorted(preds["base"])
    ref = paired_bootstrap([100 * preds["base"][k] for k in keys], [100 * preds["rag"][k] for k in keys])
    assert f"{ref['mean']:+.2f} [{ref['lo']:+.2f}, {ref['hi']:+.2f}]" in rows[1]
    banks = json.loads((tmp_path / "base" / "metrics.json").read_text())["banks"]
    conv = next(c for c in default_split(load_conversations("embedded")).test
                if c.id == json.loads(next((tmp_path / "base" / "predictions.jsonl").open()))["conversation_id"])
    distinct = {(sp, f.strip()) for s in conv.sessions for sp, fs in s.observations.items() for f, _ in fs}
    assert banks["adds"] == banks["memories"] == len(distinct) > 0   # add-all skips only exact duplicates
    assert banks["covered"] == banks["observations"] == sum(len(fs) for s in conv.sessions
                                                            for fs in s.observations.values())
    assert banks["updates"] == banks["deletes"] == 0 and banks["coverage"] == 1.0
    assert "rag" in capsys.readouterr().out


def test_bank_stats_count_operations_and_covered_observations():
    from memr1_jax.memory import MemoryOp, apply, empty_bank
    from memr1_jax.memory.bank import Event
    from memr1_jax.memory.encoder import make_encoder
    conv = load_conversations("embedded")[0]
    facts = [f for s in conv.sessions for fs in s.observations.values() for f, _ in fs]
    enc = make_encoder("hashing")
    bank = empty_bank(enc.dim)
    # an observation kept with other case and spacing counts; an unrelated memory does not
    bank, _ = apply(bank, [MemoryOp(Event.ADD, text=f"  {facts[0].upper()} "), MemoryOp(Event.ADD, text=facts[1]),
                           MemoryOp(Event.ADD, text="something said nowhere")], embed_fn=enc)
    ids = sorted(bank.host.texts)
    bank, _ = apply(bank, [MemoryOp(Event.UPDATE, target_id=ids[1], text=facts[1] + " and more"),
                           MemoryOp(Event.DELETE, target_id=ids[2])], embed_fn=enc)
    s = bank_stats(conv, bank)
    assert (s["adds"], s["updates"], s["deletes"], s["memories"]) == (3, 1, 1, 2)
    want = sum(1 for f in facts if f.lower() in (facts[0].lower(), facts[1].lower()))
    assert s["observations"] == len(facts) and s["covered"] == want >= 2
