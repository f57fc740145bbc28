"""memr1-jax: Memory-R1 (arXiv 2508.19828) in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name):
    # ``from memr1_jax import Memory`` (as ``from mem0 import Memory``) without importing the
    # service's dependencies for every other use of the package.
    if name in ("Memory", "MemoryConfig"):
        from memr1_jax import service
        return getattr(service, name)
    raise AttributeError(f"module 'memr1_jax' has no attribute {name!r}")
