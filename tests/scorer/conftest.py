import shutil

import pytest

from harness.config import ScorerConfig
from harness.datasets.sources import generate_dataset
from harness.datasets.store import DatasetStore


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """5,000 SIFT-like vectors, 300 hidden queries: brute force answers it in well under a second."""
    store = DatasetStore(tmp_path_factory.mktemp("data"))
    ds, _ = generate_dataset(store, "scorer-5k", n=5000, queries=300, dev_queries=50, seed=9)
    return ds


def quick_scorer_config(**kw) -> ScorerConfig:
    """Short limits, so that misbehaving submissions end in seconds."""
    base = dict(paired=False, passes=2, warmup_queries=20, pass_time_limit_s=10, request_timeout_s=3,
                warmup_timeout_s=8, start_timeout_s=10, load_timeout_s=60, benchmark_timeout_s=90,
                memory_limit="1g", pids_limit=128)
    return ScorerConfig(**(base | kw))


needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")
