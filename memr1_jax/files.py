"""Files the project writes: names derived from untrusted ids, atomic replacement, locks.

* ``safe_name``: an id from a data file (a conversation's ``sample_id``) as a file name that
  cannot leave its folder (``../../x`` and the like), stays unique, and is readable when the
  id already is; ``child`` joins it and checks that the result lies inside the folder.
* ``atomic_write`` (and ``atomic_write_text`` / ``atomic_write_bytes`` / ``atomic_write_by_name`` /
  ``rewrite_lines`` over it) and ``atomic_folder``: the project's one write-then-rename. A temp
  beside the target (``.<name>.<pid>.<random>.tmp``), fsync of the data, ``os.replace``, fsync of
  the folder; any error removes the temp. A crash (kill -9) leaves the old file or the new one,
  never a mix; its orphaned temp is removed by the next write of the same target.
* ``folder_lock`` / ``entry_lock``: ``filelock`` locks (released by the OS when the holder
  dies, so a killed run never leaves a stale lock). One writer per run folder: a second
  run stops with ``FolderInUse``; one builder per cache entry: the others wait for it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pathlib
import re
import secrets
import shutil
import stat
from typing import IO, Callable, Iterable, Iterator

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


def _temp_name(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _remove_orphans(path: pathlib.Path) -> None:
    """Temps of earlier writes of ``path`` whose process is gone (killed before its rename)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        except (PermissionError, OverflowError):
            pass


def _fsync_file(path: os.PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_write(path: os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """A file open (``mode`` "wb" or "w") on a temp beside ``path``, written in the block (streamed
    writes welcome; ``f.name`` is the temp, for checks before it counts). A block that ends
    cleanly makes it ``path`` (flush, fsync, replace, fsync of the folder); one that raises
    leaves ``path`` as it was and removes the temp."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode {mode!r}: expected 'wb' or 'w'")
    path = pathlib.Path(path)
    _remove_orphans(path)
    tmp = _temp_name(path)
    try:
        with open(tmp, mode, encoding=encoding if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: os.PathLike, text: str) -> pathlib.Path:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return pathlib.Path(path)


def atomic_write_bytes(path: os.PathLike, data: bytes) -> pathlib.Path:
    with atomic_write(path) as f:
        f.write(data)
    return pathlib.Path(path)


def atomic_write_by_name(path: os.PathLike, write: Callable[[str], object]) -> pathlib.Path:
    """For a library that writes to a file name (``safetensors.numpy.save_file``): ``write(temp)``
    into ``atomic_write``'s temp. Such a library may put a new file of its own at that name
    (safetensors does, mode 0600), which the open handle's fsync would not cover: the file at the
    name is fsynced and given the mode ``open`` gave the temp."""
    with atomic_write(path) as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        write(f.name)
        os.chmod(f.name, mode)
        _fsync_file(f.name)
    return pathlib.Path(path)


@contextlib.contextmanager
def atomic_folder(folder: os.PathLike, overwrite: bool = True) -> Iterator[pathlib.Path]:
    """A temp folder beside ``folder``, filled in the block, then renamed to ``folder`` with every
    file fsynced first (readers never see a half-written folder). An existing ``folder`` is
    removed first with ``overwrite``, else kept (as when a concurrent writer got there first:
    theirs stays, this one's temp goes). Between that removal and the rename a crash leaves no
    folder, never a partial one."""
    folder = pathlib.Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(folder)
    tmp = _temp_name(folder)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        fsync_dir(tmp)
        if folder.exists() and overwrite:
            shutil.rmtree(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)   # a concurrent writer's folder stays
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder.parent)


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
