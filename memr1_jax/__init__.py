"""memr1-jax: Memory-R1 (arXiv 2508.19828) in JAX/Flax."""

__version__ = "0.1.0"
