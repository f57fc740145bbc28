"""The memory service: Mem0's API over the Memory-R1 agents, as a library and over HTTP.

memory   Memory / MemoryConfig (``memr1_jax.Memory``): add, search, get, get_all, update, delete,
         delete_all, history, reset, answer
store    open_store / SQLStore: memories, embeddings and history in SQL, one transaction per write;
         MemoryStore (one SQLite file, the default) and store_postgres.PostgresStore (a postgresql:// URL)
values   what may enter the store (check_value) and how what is in it is read back (readable)
filters  Mem0's filter language (scope ids, metadata operators, AND / OR / NOT)
engine   Engine: a ChatLLM shared by many threads, concurrent requests generated as one batch
app      create_app: FastAPI app with Mem0's REST routes and OpenAI-compatible /v1 endpoints
"""

from memr1_jax.service.memory import Memory, MemoryConfig, MemoryNotFound
from memr1_jax.service.store import MemoryStore, StoreError

__all__ = ["Memory", "MemoryConfig", "MemoryNotFound", "MemoryStore", "StoreError"]
