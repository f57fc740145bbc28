"""The memory environment: bank state, Memory Manager output parsing, encoder, retrieval, files.

bank         MemoryBank (jax pytree half + host half), MemoryOp, apply, stack_banks
ops_parser   parse_memory_ops (never raises), render_memories (prompt view + id map)
line_ops     the compact one-line-per-fact manager format: parse_line_ops (never raises), line_ops_regex
encoder      MiniLMEncoder / load_minilm (all-MiniLM-L6-v2 in Flax), HashingTestEncoder (tests only)
retrieval    exact_topk / exact_topk_group (jit, vmappable), Retriever (exact or ScaNN by size)
persistence  save_bank / load_bank (atomic, checksummed), BankFileError
"""

from memr1_jax.memory.bank import (ApplyReport, BankArrays, BankHost, EmbedFn, Event, HistoryEntry,
                                   MemoryBank, MemoryOp, OpResult, apply, bank_from_arrays,
                                   empty_bank, stack_banks)
from memr1_jax.memory.encoder import (BertConfig, HashingTestEncoder, MiniLMEncoder, SentenceBert,
                                      load_minilm, params_from_hf)
from memr1_jax.memory.ops_parser import ParseResult, parse_memory_ops, render_memories
from memr1_jax.memory.line_ops import line_decisions, line_ops_regex, parse_line_ops
from memr1_jax.memory.persistence import BankFileError, load_bank, save_bank
from memr1_jax.memory.retrieval import (RetrievalConfig, Retriever, SearchResult, build_scann,
                                        exact_topk, exact_topk_group, scann_params)

__all__ = [
    "ApplyReport", "BankArrays", "BankHost", "EmbedFn", "Event", "HistoryEntry", "MemoryBank",
    "MemoryOp", "OpResult", "apply", "bank_from_arrays", "empty_bank", "stack_banks",
    "BertConfig", "HashingTestEncoder", "MiniLMEncoder", "SentenceBert", "load_minilm",
    "params_from_hf", "ParseResult", "parse_memory_ops", "render_memories", "line_ops_regex",
    "parse_line_ops", "line_decisions", "BankFileError",
    "load_bank", "save_bank", "RetrievalConfig", "Retriever", "SearchResult", "build_scann",
    "exact_topk", "exact_topk_group", "scann_params",
]
