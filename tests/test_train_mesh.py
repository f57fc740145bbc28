"""The trainer, sampler and evaluation over a device mesh (8 virtual CPU devices from
conftest) give what one device gives."""

import json

import jax
import numpy as np
import pytest

from memr1_jax.config import load_config_file, override

needs8 = pytest.mark.usefixtures("eight_devices")
MESHES = {"data8": (8, 1, 1), "fsdp8": (1, 8, 1), "2x2x2": (2, 2, 2)}


def _train(run_dir, mesh):
    from memr1_jax.train import train
    data, fsdp, tensor = mesh
    cfg = override(load_config_file("configs/tiny_cpu.py"), {
        "steps": 2, "run_dir": str(run_dir), "export_hf": False,
        "mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor})
    summary = train(cfg)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows, summary["validation"]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("one") / "run", (1, 1, 1))


@needs8
# 2 x 2 x 2 uses every mesh axis at once and runs by default; the single-axis meshes run with -m slow.
@pytest.mark.parametrize("name", [pytest.param("data8", marks=pytest.mark.slow),
                                  pytest.param("fsdp8", marks=pytest.mark.slow), "2x2x2"])
def test_tiny_training_on_a_mesh_matches_one_device(tmp_path, one_device, name):
    rows, val = _train(tmp_path / "run", MESHES[name])
    ref_rows, ref_val = one_device
    assert [r["step"] for r in rows] == [1, 2]
    for got, want in zip(rows, ref_rows):
        assert set(got) == set(want)
        assert want["grad_norm"] > 0
        for key in want:
            # 1e-5 relative; the absolute floor covers quantities that are 0 in exact
            # arithmetic (ppo_kl ~ 1e-8 here), whose relative error is float noise.
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=f"{name}: {key}")
    assert [v["score"] for v in val] == [v["score"] for v in ref_val]


@needs8
def test_sharded_sampler_generates_the_single_device_tokens():
    from memr1_jax.models.registry import load_model
    from memr1_jax.parallel.mesh import MeshConfig, make_mesh, mesh_context, shard_params
    from memr1_jax.parallel.rules import DEFAULT_RULES, batch_sharding
    from memr1_jax.sampling.sampler import SamplingConfig, generate, prefill
    m = load_model("tiny-llama")
    prompts = [list(range(5, 5 + n)) for n in (3, 9, 14, 6, 11, 2, 8, 12)]
    kw = dict(max_new_tokens=10, stop_ids=[], sampling=SamplingConfig(temperature=0.0))
    ref = generate(m.cfg, m.params, prompts, **kw)
    for shape in ((8, 1, 1), (2, 2, 2), (1, 8, 1)):
        mesh = make_mesh(MeshConfig(*shape))
        params = shard_params(m.cfg, m.params, mesh, DEFAULT_RULES)
        out = generate(m.cfg, params, prompts, mesh=mesh, rules=DEFAULT_RULES, **kw)
        np.testing.assert_array_equal(out.tokens, ref.tokens)
        np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)
    # GRPO groups (2 samples of each of 4 prompts, the prompt's keys stored once) on a mesh
    sc = SamplingConfig(temperature=1.0)
    grouped = dict(max_new_tokens=10, stop_ids=[], sampling=sc, num_samples=2, rng=jax.random.PRNGKey(4))
    ref = generate(m.cfg, m.params, prompts[:4], **grouped)
    mesh = make_mesh(MeshConfig(2, 2, 2))
    params = shard_params(m.cfg, m.params, mesh, DEFAULT_RULES)
    out = generate(m.cfg, params, prompts[:4], mesh=mesh, rules=DEFAULT_RULES, **grouped)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)
    # the KV cache is split by batch (data x fsdp) on the mesh
    params = shard_params(m.cfg, m.params, mesh, DEFAULT_RULES)
    tokens = jax.device_put(np.ones((8, 16), np.int32), batch_sharding(mesh, (8, 16), DEFAULT_RULES))
    with mesh_context(mesh, DEFAULT_RULES):
        state = prefill(m.cfg, params, tokens, tokens > 0, cache_len=32)
    spec = state["cache"]["layers"][0]["k"].sharding.spec
    assert spec[0] == ("data", "fsdp"), spec


@needs8
def test_evaluate_on_a_mesh_matches_one_device(tmp_path):
    from memr1_jax.config import evaluation_defaults
    from memr1_jax.eval.run import evaluate
    preds = {}
    for name, mesh in (("one", (1, 1, 1)), ("mesh", (2, 2, 2))):
        cfg = override(evaluation_defaults(), {
            "model.name": "tiny-llama", "model.encoder": "hashing", "eval.system": "base", "eval.limit": 4, "eval.manager": "add-all",
            "task.answer.max_new_tokens": 6, "task.answer.k_per_speaker": 2, "rollout.gen_batch_size": 4,
            "eval.run_dir": str(tmp_path / name), "mesh.data": mesh[0], "mesh.fsdp": mesh[1], "mesh.tensor": mesh[2]})
        evaluate(cfg, progress=False)
        preds[name] = [json.loads(x)["completion"] for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
    assert preds["one"] == preds["mesh"] and len(preds["one"]) == 4
