"""memr1-jax: Memory-R1 in JAX/Flax."""

from setuptools import find_packages, setup

# A tested jax/flax pair (see README); other packages pinned to what CI ran with.
# tests/test_install.py checks this list against the package's own imports.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "numpy>=2.0,<3",
    "ml_dtypes>=0.5",   # bfloat16 in safetensors files
    "sentencepiece>=0.2.0",
    # sentencepiece's sentencepiece_model_pb2 (read for GGUF / .model vocabularies) is protobuf
    # 7.36.1 gencode and refuses an older runtime; sentencepiece itself does not declare it.
    "protobuf>=7.36.1,<8",
    "tokenizers>=0.20",
    "gguf>=0.17",
    "safetensors>=0.4",
    "jinja2>=3.1",
    "scann==1.4.2",
    "tqdm>=4.60",
    "matplotlib>=3.8",
    "nltk>=3.8",
    "filelock>=3.12",  # one writer per run folder and cache entry
    "tensorboardX>=2.6",  # TensorBoard events of a training run, without TensorFlow
    # the memory service (python -m memr1_jax.serve)
    "fastapi>=0.115",
    "starlette>=0.40",
    "pydantic>=2.7",
    "uvicorn>=0.30",
    "outlines-core==0.2.14",  # constrained decoding: JSON schema -> token automaton
]

# Declared but never imported by name: what the package needs at run time all the same.
RUNTIME_ONLY = {
    "jaxlib": "jax's compiler and CPU backend",
    "protobuf": "sentencepiece's generated model code (see its pin)",
}

# Imports of optional features -> the extra that installs them (None: installed by hand, README).
OPTIONAL_IMPORTS = {
    "psycopg": "postgres", "psycopg_pool": "postgres",
    "wandb": "wandb",
    "huggingface_hub": "hub",
    "tensorflow_datasets": "tfds",
    "mem0": None,   # pip install --no-deps mem0ai==2.2.1: it pins protobuf<7 (sentencepiece needs 7)
}

EXTRAS = {
    "tpu": ["jax[tpu]==0.10.2"],
    "gpu": ["jax[cuda12]==0.10.2"],
    # the memory service's PostgreSQL store (--store postgresql://...)
    "postgres": ["psycopg[binary]>=3.2", "psycopg-pool>=3.2"],
    # Weights & Biases curves (logging.wandb=offline|online)
    "wandb": ["wandb>=0.19"],
    # registry presets downloaded from the Hugging Face hub instead of a local folder
    "hub": ["huggingface_hub>=0.24"],
    # tensorflow-datasets builders of the question sets (array_record files, data_source reads);
    # optional: train and evaluate read the JSON directly (README "Data", measured there)
    "tfds": ["tensorflow-datasets>=4.9.9", "array_record>=0.5"],
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
             # TensorBoard's own reader of the run's events
             "tensorboard>=2.16",
             # the service driven from its own OpenAPI schema (tests/test_service_schema.py)
             "schemathesis>=4.30"],
}
# The tests exercise every optional feature.
EXTRAS["test"] += EXTRAS["postgres"] + EXTRAS["wandb"] + EXTRAS["hub"] + EXTRAS["tfds"]
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
