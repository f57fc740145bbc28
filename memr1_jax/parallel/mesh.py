"""Device meshes from config, mesh contexts for tracing, and multi-host start-up."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from memr1_jax import compile_cache
from memr1_jax.parallel.rules import DEFAULT_RULES, Rules, validate_rules

MESH_AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the (data, fsdp, tensor) mesh axes; at most one may be -1 (fill up with
    the remaining devices). ``rules`` is the logical-axis rule table."""
    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    rules: Rules = DEFAULT_RULES

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.tensor)
        if sum(s == -1 for s in sizes) > 1:
            raise ValueError(f"MeshConfig: at most one axis may be -1, got data={self.data}, "
                             f"fsdp={self.fsdp}, tensor={self.tensor}")
        for name, s in zip(MESH_AXES, sizes):
            if s != -1 and s < 1:
                raise ValueError(f"MeshConfig.{name}={s}: must be >= 1 or -1")
        object.__setattr__(self, "rules", validate_rules(self.rules, MESH_AXES))

    def resolved_shape(self, num_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        known = int(np.prod([s for s in sizes if s != -1]))
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(f"MeshConfig {sizes}: {num_devices} devices not divisible by {known}")
            sizes[sizes.index(-1)] = num_devices // known
        if int(np.prod(sizes)) != num_devices:
            raise ValueError(f"MeshConfig (data, fsdp, tensor)={tuple(sizes)} needs {int(np.prod(sizes))} "
                             f"devices, have {num_devices}")
        return tuple(sizes)


def make_mesh(cfg: MeshConfig = MeshConfig(), devices: Sequence | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over ``devices`` (default: all). Axes are Auto, so jit
    propagates shardings from inputs and constraints (GSPMD)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = cfg.resolved_shape(len(devices))
    try:
        from jax.experimental import mesh_utils
        dev = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # odd device counts / CPU: plain row-major layout
        dev = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(dev, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def shard_params(model_cfg, params, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """Places model parameters on ``mesh`` by their logical axes (a dimension the mesh axes do
    not divide is replicated on them)."""
    from memr1_jax.models.decoder import abstract_params
    from memr1_jax.parallel.rules import boxed_shardings
    if jax.process_count() > 1:   # from host values, the same on every process
        params = jax.tree.map(np.asarray, params)
    return jax.device_put(params, boxed_shardings(abstract_params(model_cfg), mesh, rules))


def mesh_devices(cfg: MeshConfig, devices: Sequence | None = None) -> list:
    """The devices a mesh of ``cfg`` spans: all of them when an axis is -1, else the first
    data x fsdp x tensor (so a 1x1x1 mesh runs on one device of many)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = (cfg.data, cfg.fsdp, cfg.tensor)
    if -1 in sizes:
        return devices
    n = int(np.prod(sizes))
    if n > len(devices):
        raise ValueError(f"mesh data={cfg.data} x fsdp={cfg.fsdp} x tensor={cfg.tensor} needs {n} devices, "
                         f"have {len(devices)}")
    return devices[:n]


def check_spans_processes(cfg: MeshConfig, num_devices: int, num_processes: int) -> None:
    """A run of several processes must put its mesh over every global device: an array on the
    devices of one process cannot be saved by all of them (orbax: "Cannot serialize host local
    jax.Array"), so without this check the run trains and then dies at its first checkpoint."""
    sizes = (cfg.data, cfg.fsdp, cfg.tensor)
    n = num_devices if -1 in sizes else int(np.prod(sizes))
    if num_processes > 1 and n != num_devices:
        raise ValueError(f"mesh.data={cfg.data} x mesh.fsdp={cfg.fsdp} x mesh.tensor={cfg.tensor} spans {n} of the "
                         f"{num_devices} devices of {num_processes} processes; a run of several processes must span "
                         f"them all: set --config.mesh.fsdp=-1 (or sizes whose product is {num_devices})")


@contextlib.contextmanager
def mesh_context(mesh: Mesh | None, rules: Rules | None = None):
    """Activates ``mesh`` and the logical rules so ``nn.with_logical_constraint`` in the
    model turns into sharding constraints while tracing. A no-op for mesh=None."""
    if mesh is None:
        yield
        return
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules if rules is not None else DEFAULT_RULES):
        yield


_DIST_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
_initialized = False


def _cluster_detected(env) -> bool:
    """A launcher jax.distributed.initialize() recognises by itself with several processes:
    a Cloud TPU pod slice (TPU_WORKER_HOSTNAMES lists > 1 host), Slurm, Open MPI."""
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    return (len(hosts) > 1 or int(env.get("SLURM_NTASKS", "1") or 1) > 1
            or int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1)


def maybe_initialize_distributed(env: dict | None = None, *, coordinator: str = "", num_processes: int = 1,
                                 process_id: int = 0, cpu_collectives: str = "gloo") -> bool:
    """Calls ``jax.distributed.initialize()`` when the run spans several processes.

    Explicit settings (``coordinator`` HOST:PORT and ``num_processes`` > 1) win; else
    JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES (> 1) + JAX_PROCESS_ID; else a cluster jax
    auto-detects (Cloud TPU pod slice, Slurm, Open MPI). ``cpu_collectives`` is the CPU
    backend's cross-process collectives (gloo), which CPU-only runs need and accelerators
    ignore. Returns True if it initialised (once per process). Must run before any other
    JAX call that touches devices. Several processes on the CPU backend run without the
    persistent compilation cache (see compile_cache).
    """
    global _initialized
    if _initialized:
        return True
    env = os.environ if env is None else env
    n = int(env.get("JAX_NUM_PROCESSES", "1") or 1)
    addr = next((env[k] for k in _DIST_ENV if env.get(k)), None)
    kwargs = None
    if coordinator and num_processes > 1:
        if not 0 <= process_id < num_processes:
            raise ValueError(f"distributed.process_id={process_id}: expected 0 .. {num_processes - 1}")
        kwargs = dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    elif addr and n > 1:
        if "JAX_PROCESS_ID" not in env:
            raise ValueError("JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES>1 set but JAX_PROCESS_ID missing")
        kwargs = dict(coordinator_address=addr, num_processes=n, process_id=int(env["JAX_PROCESS_ID"]))
    elif _cluster_detected(env):
        kwargs = {}
    if kwargs is None:
        return False
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(**kwargs)
    _initialized = True
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
        # JAX writes cache entries from process 0 only, and on CPU the other processes' keys differ:
        # a rerun would have process 0 load in a second what the others compile for 20 s, and gloo
        # gives a collective's latecomers a fixed 30 s. Every process compiles, in step.
        compile_cache.disable()
    return True
