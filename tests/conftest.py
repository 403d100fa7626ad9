import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HWNAS_CACHE", str(ROOT / ".cache" / "test-hwnas"))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (public reference data); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (only in the project workspace)")
    return SHARED_DATA
