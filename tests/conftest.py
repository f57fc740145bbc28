import os
import pathlib

import pytest

# Eight virtual CPU devices so mesh/sharding code is exercised on any machine.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# mem0ai (the mem0-oss tests) reports usage to PostHog unless told not to: tests stay off the network.
os.environ["MEM0_TELEMETRY"] = "False"
# The entry points' persistent compilation cache stays off: tests do not write to ~/.cache and
# do not load executables an earlier run left there (tests/test_compile_cache.py turns it on;
# shared_compile_cache below gives a module its own fresh folder).
os.environ["MEMR1_COMPILE_CACHE"] = "off"

REPO = pathlib.Path(__file__).resolve().parents[1]
# The shared LoCoMo folder beside the checkout, or wherever MEMR1_LOCOMO_DIR says (a clone elsewhere).
LOCOMO_DIR = pathlib.Path(os.environ.get("MEMR1_LOCOMO_DIR") or REPO.parent / "shared" / "data" / "locomo10")


@pytest.fixture(scope="session")
def locomo_dir():
    from _offline import offline
    if not LOCOMO_DIR.is_dir():
        offline(f"the LoCoMo data is not at {LOCOMO_DIR} (shared folder absent; MEMR1_LOCOMO_DIR names another)")
    return LOCOMO_DIR


@pytest.fixture
def eight_devices():
    """The mesh tests' 8 devices (XLA_FLAGS above); a caller's own XLA_FLAGS may give fewer."""
    import jax
    if jax.device_count() < 8:
        from _offline import strict
        why = (f"needs 8 (virtual) devices, {jax.device_count()} here: XLA_FLAGS="
               f"{os.environ.get('XLA_FLAGS')!r} replaced tests/conftest.py's")
        if strict():
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The SmolLM2-135M-Instruct GGUF, fetched (or cached) through the project's registry."""
    from _offline import fetched
    from memr1_jax import assets
    return fetched(assets.fetch_payload, assets.SMOLLM2_135M_GGUF)


@pytest.fixture(scope="module")
def shared_compile_cache(tmp_path_factory):
    """A compilation cache for the module's ``python -m memr1_jax.*`` subprocesses: each launch
    after the first loads the programs an earlier one compiled (the same executables, so
    the same results) instead of compiling them again."""
    path = tmp_path_factory.mktemp("xla")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMR1_COMPILE_CACHE", str(path))
        yield path


@pytest.fixture
def registry_loads(monkeypatch):
    """Names passed to ``ChatLLM.from_registry`` during the test (the models still load)."""
    from memr1_jax.agents.llm import ChatLLM
    loaded = []
    real = ChatLLM.from_registry.__func__

    def spy(cls, name, **kw):
        loaded.append(name)
        return real(cls, name, **kw)

    monkeypatch.setattr(ChatLLM, "from_registry", classmethod(spy))
    return loaded


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster for this test process (skipped, saying why, only where no
    PostgreSQL binaries exist)."""
    from memr1_jax.service.pg_cluster import LocalCluster, binaries_missing
    why = binaries_missing()
    if why:
        pytest.skip(why)
    cluster = LocalCluster().start()
    yield cluster
    cluster.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_spec(request, tmp_path):
    """Where a test's memory store lives: an SQLite file, or a fresh database on the cluster."""
    if request.param == "sqlite":
        return str(tmp_path / "m.db")
    return request.getfixturevalue("pg_cluster").create_database()
