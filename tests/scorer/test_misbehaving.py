"""The misbehaving suite: every fault gets the right status and reason, in real containers,
while the harness stays up. Builds share one target cache, so after the first the builds are short."""

import time

import pytest

from harness.scorer.record import Status
from harness.scorer.scorer import BenchmarkScorer
from tests.scorer.conftest import quick_scorer_config
from tests.scorer.submissions import write_stage1, write_variant

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# variant -> (expected statuses, a phrase the reason must contain)
EXPECTED = {
    "compile_error": ({Status.BUILD_FAILED}, "cargo build --release failed"),
    "abort_on_search": ({Status.CRASHED}, "the server died"),
    "never_accepts": ({Status.START_TIMEOUT}, "did not accept TCP connections"),
    "wrong_k": ({Status.BAD_RESPONSE}, "wrong_k"),
    "duplicate_ids": ({Status.BAD_RESPONSE}, "duplicate_ids"),
    "random_ids": ({Status.INVALID}, "below the floor"),
    "same_ids": ({Status.CHEAT_SUSPECTED}, "got the same"),
    "wrong_distances": ({Status.BAD_RESPONSE}, "do not match"),
    "caches_results": ({Status.CHEAT_SUSPECTED}, "cached across passes"),
    "memory_flood": ({Status.OOM}, "memory limit"),
    "fork_bomb": ({Status.VALID, Status.CRASHED, Status.START_TIMEOUT}, ""),
    "log_flood": ({Status.VALID, Status.INVALID, Status.TIMEOUT}, ""),
    "endless_lazy_build": ({Status.TIMEOUT}, ""),
    "edited_read_only": ({Status.RULE_VIOLATION}, "src/main.rs differs"),
    "banned_crate": ({Status.RULE_VIOLATION}, "hnsw_rs"),
}


@pytest.fixture(scope="module")
def docker_scorer(small_dataset, sandbox_image):
    from harness.scorer.docker_runner import DockerRunner

    cfg = quick_scorer_config(image=sandbox_image, passes=3)
    # One named build cache for the suite (as a run has): the fast test profile's dependencies
    # are compiled once, not once per submission.
    return BenchmarkScorer(cfg, small_dataset, DockerRunner(cfg, build_cache="tests-misbehaving"))


def test_correct_brute_force_is_valid_in_containers(docker_scorer, tmp_path):
    s = docker_scorer.score(write_stage1(tmp_path / "ok"))
    assert s.status == Status.VALID, (s.reason, s.server_log_tail[-2000:])
    assert s.recall == 1.0 and s.hardware.runner == "docker" and s.hardware.image_id


@pytest.mark.parametrize("variant", list(EXPECTED))
def test_misbehaving_submission(variant, docker_scorer, tmp_path):
    statuses, phrase = EXPECTED[variant]
    t0 = time.monotonic()
    s = docker_scorer.score(write_variant(variant, tmp_path / variant), use_cache=False)
    assert s.status in statuses, (s.status, s.reason, s.server_log_tail[-1500:])
    assert phrase in s.reason
    assert s.reason and time.monotonic() - t0 < 240
    assert len(s.server_log_tail) <= docker_scorer.cfg.log_tail_bytes


def test_a_cache_worth_2x_is_caught_by_fresh_queries(sandbox_image, tmp_path_factory, tmp_path):
    """1,000 hidden queries (fresh pools of 83 per pass): the modest cache gains about 2x QPS, which
    the pass-QPS check lets through; the latency of remembered vs fresh queries does not."""
    from harness.datasets.sources import generate_dataset
    from harness.datasets.store import DatasetStore
    from harness.scorer.docker_runner import DockerRunner

    ds, _ = generate_dataset(DatasetStore(tmp_path_factory.mktemp("data1k")), "scorer-5k-1kq", n=5000,
                             queries=1000, dev_queries=50, seed=11)
    cfg = quick_scorer_config(image=sandbox_image, passes=3)
    scorer = BenchmarkScorer(cfg, ds, DockerRunner(cfg, build_cache="tests-misbehaving"))
    s = scorer.score(write_variant("caches_modestly", tmp_path / "cm"), use_cache=False)
    assert s.status == Status.CHEAT_SUSPECTED, (s.status, s.reason, [p.qps for p in s.passes])
    assert "faster than new ones" in s.reason  # the latency check's verdict, not the pass-QPS one's


def test_a_cache_on_too_small_a_set_earns_nothing(sandbox_image, tmp_path_factory, tmp_path):
    """200 hidden queries (fresh pools of 16 per pass, the latency check needs 20): the cache cannot be
    judged, so its repeated passes are not certified; the QPS is the first pass's, with a finding."""
    from harness.datasets.sources import generate_dataset
    from harness.datasets.store import DatasetStore
    from harness.scorer.docker_runner import DockerRunner
    from harness.scorer.record import QpsSource

    ds, _ = generate_dataset(DatasetStore(tmp_path_factory.mktemp("data200")), "scorer-5k-200q", n=5000,
                             queries=200, dev_queries=20, seed=15)
    cfg = quick_scorer_config(image=sandbox_image, passes=3)
    scorer = BenchmarkScorer(cfg, ds, DockerRunner(cfg, build_cache="tests-misbehaving"))
    s = scorer.score(write_variant("caches_results", tmp_path / "cr"), use_cache=False)
    qps = [p.qps for p in s.passes]
    assert s.status == Status.VALID and s.qps_source == QpsSource.FIRST_PASS, (s.status, s.reason, qps)
    assert s.qps == pytest.approx(qps[0], abs=0.01) and min(qps[1:]) > 2 * qps[0], qps
    assert s.findings and s.findings[0].startswith("QPS from pass 1 only"), s.findings


def test_a_server_finds_no_data_and_no_way_out(docker_scorer, tmp_path):
    """Nothing of the dataset, the hidden queries or the ground truth is in the server's container,
    and it reaches no network: it can only answer honestly."""
    s = docker_scorer.score(write_variant("snoops", tmp_path / "snoops"), use_cache=False)
    assert s.status == Status.VALID, (s.reason, s.server_log_tail[-1500:])
    assert "SNOOP files=[] reached=[]" in s.server_log_tail, s.server_log_tail[-1500:]
