"""Tokenizers (GGUF / HF folders / sentencepiece) and chat templates."""

from memr1_jax.text.chat_templates import (QWEN25_DEFAULT_SYSTEM, SMOLLM2_DEFAULT_SYSTEM,
                                           ChatTemplateError, render_chat)
from memr1_jax.text.gguf_meta import read_gguf_header, read_gguf_metadata
from memr1_jax.text.tokenizer import (HFTokenizer, SentencePieceTokenizer, StreamDecoder,
                                      Tokenizer, TokenizerInfo, load_sentencepiece_model,
                                      load_tokenizer, load_tokenizer_from_gguf,
                                      load_tokenizer_from_hf_dir)

__all__ = [
    "ChatTemplateError", "HFTokenizer", "QWEN25_DEFAULT_SYSTEM", "SMOLLM2_DEFAULT_SYSTEM",
    "SentencePieceTokenizer", "StreamDecoder", "Tokenizer", "TokenizerInfo",
    "load_sentencepiece_model", "load_tokenizer", "load_tokenizer_from_gguf",
    "load_tokenizer_from_hf_dir", "read_gguf_header", "read_gguf_metadata", "render_chat",
]
