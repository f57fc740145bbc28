"""Weight import/export: GGUF and HF safetensors <-> decoder parameter trees."""

from memr1_jax.weights.assemble import WeightLoadError
from memr1_jax.weights.gguf_loader import config_from_gguf, load_gguf
from memr1_jax.weights.gguf_writer import save_gguf
from memr1_jax.weights.safetensors_loader import (config_from_hf, config_to_hf, load_hf_checkpoint,
                                                  save_hf_checkpoint)

__all__ = ["WeightLoadError", "config_from_gguf", "config_from_hf", "config_to_hf", "load_gguf",
           "load_hf_checkpoint", "save_gguf", "save_hf_checkpoint"]
