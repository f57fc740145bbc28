"""The persistent compilation cache: a second process loads what the first compiled."""

import json
import os
import subprocess
import sys

import pytest

from memr1_jax import compile_cache

PROGRAM = """
import json, sys
import jax, jax.numpy as jnp
from memr1_jax import compile_cache
path = compile_cache.enable(sys.argv[1], min_compile_secs=0)
with compile_cache.counting() as n:
    x = jnp.arange(64 * 64, dtype=jnp.float32).reshape(64, 64) / 4096
    y = jax.jit(lambda a: jnp.tanh(a @ a.T).sum(axis=0))(x)
print(json.dumps({"path": path, "compiled": n.compiled, "loaded": n.loaded, "y": [float(v) for v in y]}))
"""


def _run(cache_dir):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)   # one device, as a user's process
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(cache_dir)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_instead_of_compiling(tmp_path):
    first = _run(tmp_path / "xla")
    assert first["path"] == str(tmp_path / "xla")
    assert first["compiled"] >= 1 and first["loaded"] == 0
    assert any((tmp_path / "xla").iterdir())
    second = _run(tmp_path / "xla")
    assert second["compiled"] == 0 and second["loaded"] >= 1
    assert second["y"] == first["y"]


def test_off_and_bad_folders(tmp_path, monkeypatch):
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.enable() is None
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=f"{compile_cache.ENV}: cannot create .*{blocker.name}"):
        compile_cache.enable(str(blocker / "xla"))
