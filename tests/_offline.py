"""The one condition under which a test skips: something only the network could supply is absent
(a payload not cached with no package index reachable, the shared LoCoMo folder). Under ``CI=true``
that fails the test instead, and an integrity error (a checksum mismatch, a zip-slip member) always
fails it: only ``assets.AssetUnavailable`` counts as offline."""

import os

import pytest


def strict() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def offline(why: str):
    """Skips (or, under CI=true, fails) saying what is missing."""
    if strict():
        pytest.fail(f"CI=true and {why}", pytrace=False)
    pytest.skip(f"offline: {why}")


def fetched(fetch, spec):
    """``fetch(spec)`` (assets.fetch_payload / fetch_tree); offline only when no index answers."""
    from memr1_jax.assets import AssetUnavailable
    try:
        return fetch(spec)
    except AssetUnavailable as e:
        offline(f"{spec.name} is not cached and could not be downloaded: {str(e).splitlines()[0]}")
