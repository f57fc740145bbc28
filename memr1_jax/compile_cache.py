"""A persistent XLA compilation cache for the entry points, and a count of what compiled.

A second `python -m memr1_jax.evaluate` or `train` with the same shapes loads its
executables from disk instead of compiling them again (the sampler's prefill and decode,
the update step: about 6-40 s each on a 2-core CPU). JAX keys each entry by the program,
its compile options, the devices and the jax/jaxlib versions, so a stale entry is never used.

``MEMR1_COMPILE_CACHE`` picks the folder (default ``~/.cache/memr1_jax/xla``); ``off``
turns the cache off. Programs that compile in under ``min_compile_secs`` are not stored.
``parallel.mesh.maybe_initialize_distributed`` calls ``disable()`` when several CPU processes
form a run (see there).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import jax

ENV = "MEMR1_COMPILE_CACHE"
DEFAULT_DIR = os.path.join("~", ".cache", "memr1_jax", "xla")
MAX_BYTES = 4 << 30          # JAX evicts least recently used entries beyond this
_OFF = ("off", "0", "none", "false")

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"   # compiled or loaded from the cache
_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def enable(directory: str | None = None, min_compile_secs: float = 1.0) -> str | None:
    """Point JAX's persistent compilation cache at `directory` (else $MEMR1_COMPILE_CACHE,
    else the default). Returns the folder, or None when the cache is off."""
    value = directory if directory is not None else os.environ.get(ENV, DEFAULT_DIR)
    if value.strip().lower() in _OFF or not value.strip():
        return None
    path = os.path.abspath(os.path.expanduser(value))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{ENV}: cannot create the compilation cache folder {path}: {e}") from e
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path


def disable() -> None:
    """Turns the persistent cache off for the rest of the process (before its first compile)."""
    jax.config.update("jax_enable_compilation_cache", False)


@dataclass
class CompileCount:
    """Programs JAX handed to XLA since `counting()` began: ``programs`` in all, ``loaded`` of
    them from the persistent cache; ``seconds`` is their total time (compiling or loading)."""
    programs: int = 0
    loaded: int = 0
    seconds: float = 0.0

    @property
    def compiled(self) -> int:
        return self.programs - self.loaded


_lock = threading.Lock()
_counts: list[CompileCount] = []
_listening = False


def _on_duration(event: str, seconds: float, **_):
    if event == _COMPILE_EVENT:
        with _lock:
            for c in _counts:
                c.programs += 1
                c.seconds += seconds


def _on_event(event: str, **_):
    if event == _HIT_EVENT:
        with _lock:
            for c in _counts:
                c.loaded += 1


class counting:
    """``with counting() as n: ...`` -> n.compiled, n.loaded, n.seconds for the block."""

    def __enter__(self) -> CompileCount:
        global _listening
        with _lock:
            if not _listening:
                jax.monitoring.register_event_duration_secs_listener(_on_duration)
                jax.monitoring.register_event_listener(_on_event)
                _listening = True
            self.count = CompileCount()
            _counts.append(self.count)
        return self.count

    def __exit__(self, *exc):
        with _lock:
            _counts.remove(self.count)
        return False
