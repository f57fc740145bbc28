"""Jit-compiled batched sampling (prefill + `lax.while_loop` decode over a donated KV cache)."""

from memr1_jax.sampling.sampler import (SampleOutput, SamplingConfig, batch_bucket, bucket_size, decode,
                                        generate, pad_prompts, prefill, sample_tokens)

__all__ = ["SampleOutput", "SamplingConfig", "batch_bucket", "bucket_size", "decode", "generate",
           "pad_prompts", "prefill", "sample_tokens"]
