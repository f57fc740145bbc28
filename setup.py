"""memr1-jax: Memory-R1 in JAX/Flax."""

from setuptools import find_packages, setup

# A tested jax/flax pair (see README); other packages pinned to what CI ran with.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "numpy>=2.0,<3",
    "sentencepiece>=0.2.0",
    "tokenizers>=0.20",
    "gguf>=0.17",
    "safetensors>=0.4",
    "jinja2>=3.1",
    "scann==1.4.2",
    "tensorflow-datasets>=4.9.9",  # array_record + data_source path only; TensorFlow is never needed
    "array_record>=0.5",
    "ml_collections>=1.0",
    "tqdm>=4.60",
    "matplotlib>=3.8",
    "nltk>=3.8",
    "protobuf>=4",
    "filelock>=3.12",  # one writer per run folder and cache entry
    # the memory service (python -m memr1_jax.serve)
    "fastapi>=0.115",
    "uvicorn>=0.30",
    "outlines-core==0.2.14",  # constrained decoding: JSON schema -> token automaton
]

EXTRAS = {
    "tpu": ["jax[tpu]==0.10.2"],
    # the memory service's PostgreSQL store (--store postgresql://...)
    "postgres": ["psycopg[binary]>=3.2", "psycopg-pool>=3.2"],
    "gpu": ["jax[cuda12]==0.10.2"],
    # Test-only references: PyTorch (CPU build) + transformers for logit parity.
    "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "torch==2.13.0", "transformers>=4.50",
             "accelerate>=1.0",
             # the notebooks in notebooks/, executed by tests/test_notebooks.py
             "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29", "matplotlib-inline>=0.1",
             # the memory service's tests: HTTP clients, and real Mem0's dependencies for the mem0-oss
             # tests. mem0ai itself goes in with --no-deps (.ci/run, README): it pins protobuf<7, and
             # sentencepiece's generated code needs protobuf>=7.
             "httpx>=0.27", "openai>=1.40", "qdrant-client>=1.12", "posthog>=3.5", "sqlalchemy>=2.0",
             "pytz>=2024.1",
             # the PostgreSQL store's tests (a throwaway cluster from the machine's initdb / pg_ctl)
             "psycopg[binary]>=3.2", "psycopg-pool>=3.2"],
}
# benchmarks/train_step.py's peer: TRL's GRPOTrainer with a peft LoRA (and what TRL imports).
EXTRAS["bench"] = EXTRAS["test"] + ["trl==1.16.0", "peft>=0.17", "datasets>=3.0"]

setup(
    name="memr1-jax",
    version="0.1.0",
    description="Memory-R1 (arXiv 2508.19828) in JAX/Flax: RL-trained memory manager and answer agents",
    packages=find_packages(include=["memr1_jax", "memr1_jax.*"]),
    # the trained agents that ship with the package (python -m memr1_jax.evaluate --system memory-r1)
    package_data={"memr1_jax.trained": ["*/pipeline.json", "*/*/adapter_config.json", "*/*/adapter.safetensors"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
