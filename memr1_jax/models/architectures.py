"""Published architectures of the paper-scale backbones (from each model's config.json on
the Hugging Face hub), so a run can be planned (``benchmarks/memory_plan.py``) without the
weights; loading a model reads its own config."""

from __future__ import annotations

from memr1_jax.models.config import ModelConfig

ARCHITECTURES = {
    "qwen2.5-3b-instruct": ModelConfig(
        arch="qwen2", vocab_size=151936, num_layers=36, embed_dim=2048, num_heads=16, num_kv_heads=2,
        head_dim=128, mlp_dim=11008, rms_eps=1e-6, rope_theta=1e6, tie_embeddings=True, qkv_bias=True,
        max_seq_len=32768),
    "qwen2.5-7b-instruct": ModelConfig(
        arch="qwen2", vocab_size=152064, num_layers=28, embed_dim=3584, num_heads=28, num_kv_heads=4,
        head_dim=128, mlp_dim=18944, rms_eps=1e-6, rope_theta=1e6, tie_embeddings=False, qkv_bias=True,
        max_seq_len=32768),
    "llama3.1-8b-instruct": ModelConfig(
        arch="llama", vocab_size=128256, num_layers=32, embed_dim=4096, num_heads=32, num_kv_heads=8,
        head_dim=128, mlp_dim=14336, rms_eps=1e-5, rope_theta=500000.0, tie_embeddings=False,
        rope_scaling=(("rope_type", "llama3"), ("factor", 8.0), ("low_freq_factor", 1.0),
                      ("high_freq_factor", 4.0), ("original_max_position_embeddings", 8192)),
        max_seq_len=131072),
}
