"""Device meshes, logical-axis rules and shardings."""

from memr1_jax.parallel.mesh import MESH_AXES, MeshConfig, make_mesh, maybe_initialize_distributed, mesh_context
from memr1_jax.parallel.rules import (
    DEFAULT_RULES,
    batch_sharding,
    boxed_shardings,
    fit_spec,
    logical_to_sharding,
    match_shardings,
    replicated,
    validate_rules,
)

__all__ = [
    "DEFAULT_RULES", "MESH_AXES", "MeshConfig", "batch_sharding", "boxed_shardings", "fit_spec",
    "logical_to_sharding", "make_mesh", "match_shardings", "maybe_initialize_distributed", "mesh_context",
    "replicated", "validate_rules",
]
