"""Files the project writes: names derived from untrusted ids, atomic replacement, locks.

* ``safe_name``: an id from a data file (a conversation's ``sample_id``) as a file name that
  cannot leave its folder (``../../x`` and the like), stays unique, and is readable when the
  id already is; ``child`` joins it and checks that the result lies inside the folder.
* ``atomic_write_text`` / ``rewrite_lines``: write a temp file beside the target, fsync,
  ``os.replace`` (a crash leaves the old or the new file, never a mix).
* ``folder_lock`` / ``entry_lock``: ``filelock`` locks (released by the OS when the holder
  dies, so a killed run never leaves a stale lock). One writer per run folder: a second
  run stops with ``FolderInUse``; one builder per cache entry: the others wait for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
from typing import Iterable, Iterator

import filelock

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def safe_name(identifier: str) -> str:
    """``identifier`` itself when it is a plain name (letters, digits, ``._-``, not starting
    with a dot, at most 100 characters), else its safe characters plus a hash of the whole."""
    if _SAFE.fullmatch(identifier) and ".." not in identifier:
        return identifier
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", identifier).strip("_")[:60] or "id"
    digest = hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{stem}-{digest}"


def child(folder: os.PathLike, identifier: str, suffix: str = "") -> pathlib.Path:
    """``folder / (safe_name(identifier) + suffix)``, checked to resolve inside ``folder``."""
    folder = pathlib.Path(folder)
    path = folder / (safe_name(identifier) + suffix)
    if folder.resolve() not in path.resolve().parents:
        raise ValueError(f"{identifier!r}: would be written outside {folder}")
    return path


def fsync_dir(folder: pathlib.Path) -> None:
    """Makes a rename inside ``folder`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: os.PathLike, text: str) -> pathlib.Path:
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def rewrite_lines(path: os.PathLike, lines: Iterable[str]) -> pathlib.Path:
    """Replaces a line-oriented file (JSONL) atomically with ``lines`` (without newlines)."""
    return atomic_write_text(path, "".join(x + "\n" for x in lines))


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: os.PathLike, what: str = "run folder", scaffolding: tuple[str, ...] = ()) -> Iterator[None]:
    """Exclusive use of ``folder`` (lock file ``folder/.lock``) for the block; raises
    ``FolderInUse`` at once if another process has it. A folder created here that the block
    leaves by an error holding nothing but ``scaffolding`` files is removed again."""
    folder = pathlib.Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(folder / ".lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise FolderInUse(f"{what} {folder} is in use by another process; wait for it to finish "
                          "or choose another folder") from None
    failed = True
    try:
        yield
        failed = False
    finally:
        lock.release()
        if failed and created and {p.name for p in folder.iterdir()} <= {".lock", *scaffolding}:
            for name in (*scaffolding, ".lock"):
                (folder / name).unlink(missing_ok=True)
            folder.rmdir()


@contextlib.contextmanager
def entry_lock(path: os.PathLike, timeout: float = 3600.0) -> Iterator[None]:
    """Exclusive build of the cache entry ``path`` (lock file beside it); waits for another
    builder, then the caller finds the entry built."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path.parent / f".{path.name}.lock"))
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        raise TimeoutError(f"waited {timeout:.0f} s for another process building {path}") from None
    try:
        yield
    finally:
        lock.release()
