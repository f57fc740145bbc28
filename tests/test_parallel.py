"""Meshes, logical rules and the sharded update (8 virtual CPU devices from conftest)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from _rl_toy import fresh_params, synthetic_batch, tiny
from memr1_jax.parallel import mesh as mesh_lib
from memr1_jax.parallel import rules as rules_lib
from memr1_jax.rl.train_state import RLConfig, init_sharded_train_state, init_train_state
from memr1_jax.rl.update import make_update_fn

needs8 = pytest.mark.usefixtures("eight_devices")


def test_mesh_config_resolution_and_errors():
    assert mesh_lib.MeshConfig(data=2, fsdp=-1, tensor=2).resolved_shape(8) == (2, 2, 2)
    assert mesh_lib.MeshConfig().resolved_shape(8) == (1, 8, 1)
    with pytest.raises(ValueError, match="at most one"):
        mesh_lib.MeshConfig(data=-1, fsdp=-1)
    with pytest.raises(ValueError, match="needs 6 devices"):
        mesh_lib.MeshConfig(data=2, fsdp=3, tensor=1).resolved_shape(8)
    with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
        mesh_lib.MeshConfig(rules=(("embed", "model"),))


def test_fit_spec_replicates_indivisible_dims():
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1, fsdp=-1, tensor=1), jax.devices()[:4])
    assert rules_lib.fit_spec(P("fsdp", None), (8, 3), mesh) == P("fsdp")
    assert rules_lib.fit_spec(P("fsdp"), (9,), mesh) == P()
    assert rules_lib.fit_spec(P(), (), mesh) == P()


def test_maybe_initialize_distributed_single_host_is_noop():
    assert mesh_lib.maybe_initialize_distributed({}) is False
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        mesh_lib.maybe_initialize_distributed({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"})


def _tree_diff(a, b):
    return max(float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@needs8
def test_sharded_update_equals_single_device():
    cfg = tiny(num_layers=1)
    batch = synthetic_batch(cfg, b=8, t=12, seed=4)
    rl = RLConfig(learning_rate=1e-2, group_size=4, beta=0.05, epochs=1, mini_batch_size=8,
                  micro_batch_size=4, logprob_chunk=4, adam_eps=1e-3)
    single = init_train_state(cfg, rl, fresh_params(cfg), jax.random.PRNGKey(3))
    up = make_update_fn(cfg, rl)
    for _ in range(2):
        single, m_single = up(single, batch)

    for shape in [(1, 8, 1), (2, 2, 2)]:
        mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(*shape))
        state = init_sharded_train_state(cfg, rl, fresh_params(cfg), jax.random.PRNGKey(3), mesh)
        up = make_update_fn(cfg, rl, mesh=mesh)
        for _ in range(2):
            state, m = up(state, batch)
        assert _tree_diff(state.params, single.params) < 1e-5, shape
        assert _tree_diff(state.opt_state, single.opt_state) < 1e-5, shape
        assert abs(float(m["pg_loss"]) - float(m_single["pg_loss"])) < 1e-5
        # Really sharded: specs follow the rules and each device holds a slice.
        gate = state.params["layers_0"]["mlp"]["gate_proj"]  # [embed 64, mlp 128]
        fsdp, tensor = shape[1], shape[2]
        assert gate.sharding.spec == P("fsdp", "tensor")
        assert {s.data.shape for s in gate.addressable_shards} == {(64 // fsdp, 128 // tensor)}
        mu = state.opt_state[1][0].mu["layers_0"]["mlp"]["gate_proj"]
        assert mu.sharding.spec == P("fsdp", "tensor")
        assert state.step.sharding.spec == P()
        q = state.params["layers_0"]["attn"]["q_proj"]  # [embed, heads 4, head_dim]
        assert {s.data.shape for s in q.addressable_shards} == {(64 // fsdp, 4 // tensor, 16)}
