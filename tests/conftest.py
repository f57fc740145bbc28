import os
import pathlib

import pytest

# Eight virtual CPU devices so mesh/sharding code is exercised on any machine.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

REPO = pathlib.Path(__file__).resolve().parents[1]
LOCOMO_DIR = REPO.parent / "shared" / "data" / "locomo10"


@pytest.fixture(scope="session")
def locomo_dir():
    if not LOCOMO_DIR.is_dir():
        pytest.skip(f"LoCoMo data not found at {LOCOMO_DIR} (shared folder absent)")
    return LOCOMO_DIR
