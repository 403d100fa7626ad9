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


@pytest.fixture(scope="module")
def one_thread():
    """torch on one intra-op thread for a test module, restored after it: the networks in tests
    are tiny, and on a busy 2-core host two OpenMP threads make them crawl. A module uses it with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
