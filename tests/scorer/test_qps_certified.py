"""QPS is certified only from answers the scorer can vouch for (issue 15): where the caching check
cannot judge the repeated passes, the QPS is the first pass's, and the record says why; a pass too
short to time makes the QPS low-confidence. The whole scorer runs on a simulated server (no cargo,
no Docker): the judgement sees what a real load generator would write."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.datasets.sources import generate_dataset
from harness.datasets.store import DatasetStore
from harness.scorer.record import QpsConfidence, QpsSource, Score, Status
from harness.scorer.scorer import MIN_TIMED_PASS_S, BenchmarkScorer
from tests.scorer.conftest import quick_scorer_config
from tests.scorer.simulated import SimulatedRunner
from tests.scorer.submissions import write_stage1


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Hidden sets below (200) and above (1,000) the size at which the latency check judges."""
    store = DatasetStore(tmp_path_factory.mktemp("data"))
    return {q: generate_dataset(store, f"sim-{q}", n=2000, queries=q, dev_queries=10, dim=16, seed=q)[0]
            for q in (200, 1000)}


@pytest.fixture(scope="module")
def submission(tmp_path_factory):
    return write_stage1(tmp_path_factory.mktemp("sub") / "stage1")  # the simulated runner never builds it


def score(dataset, submission, *, cost_ms: float, hit: float = 1.0, seed: int = 0, **cfg) -> Score:
    config = quick_scorer_config(**({"passes": 3} | cfg))
    runner = SimulatedRunner(cost_ms=cost_ms, hit=hit, seed=seed)
    return BenchmarkScorer(config, dataset, runner).score(submission, use_cache=False)


def test_a_remembering_server_on_a_small_set_gets_its_first_pass(sets, submission):
    """200 hidden queries, 3 passes (fresh pools of 16, the check needs 20), passes of about 3.5 s:
    a cache 20x faster on repeats earns nothing; the record says why."""
    s = score(sets[200], submission, cost_ms=20, hit=0.05)
    qps = [p.qps for p in s.passes]
    assert min(qps[1:]) > 2.5 * qps[0], qps  # the repeated passes were far faster ... (under 3x: not flagged)
    assert s.status == Status.VALID, s.reason
    assert s.qps == pytest.approx(qps[0], rel=1e-3)  # ... and are not what is certified
    assert s.qps_source == QpsSource.FIRST_PASS and s.qps_confidence == QpsConfidence.NORMAL
    (finding,) = s.findings
    assert "QPS from pass 1 only" in finding and "could not judge the repeated passes" in finding
    assert "at least 240 queries (200 here)" in finding and "shortest pass lasted" in finding
    assert "pass 1 only" in s.reason  # the agent reads the reason
    assert s.p50_ms == pytest.approx(s.passes[0].p50_ms)  # latencies from the same pass


def test_a_gross_cache_on_a_small_set_with_long_passes_is_still_flagged(sets, submission):
    """The pass-QPS check (3x, passes of at least 1 s) still catches what it can."""
    s = score(sets[200], submission, cost_ms=100, hit=0.01)
    assert s.status == Status.CHEAT_SUSPECTED and "cached across passes" in s.reason, [p.qps for p in s.passes]


def test_a_remembering_server_on_a_small_set_with_short_passes(sets, submission):
    """Passes of about 0.2 s: no check can judge, the first pass is certified, with low confidence."""
    s = score(sets[200], submission, cost_ms=1, hit=0.05)
    assert s.status == Status.VALID, s.reason
    assert s.qps == pytest.approx(s.passes[0].qps, rel=1e-3) and s.qps < 0.5 * np.median([p.qps for p in s.passes])
    assert s.qps_source == QpsSource.FIRST_PASS and s.qps_confidence == QpsConfidence.LOW
    assert s.passes[0].elapsed_s < MIN_TIMED_PASS_S
    first, low = s.findings
    assert "under the 1 s the pass-QPS check needs" in first and low.startswith("low-confidence QPS: its pass lasted")
    assert "pass 1 only" in s.reason and "low confidence" in s.reason


def test_a_remembering_server_on_a_larger_set_is_cheat_suspected(sets, submission):
    s = score(sets[1000], submission, cost_ms=1, hit=0.05)
    assert s.status == Status.CHEAT_SUSPECTED and "faster than new ones" in s.reason, s.reason
    assert s.qps_source == QpsSource.ALL_PASSES


@pytest.mark.parametrize("seed", range(5))
def test_an_honest_server_on_a_small_set_keeps_its_qps(sets, submission, seed):
    s = score(sets[200], submission, cost_ms=20, seed=seed)
    median = float(np.median([p.qps for p in s.passes]))
    assert s.status == Status.VALID and not any("cached" in f for f in s.findings), s.reason
    assert s.qps_source == QpsSource.FIRST_PASS
    assert s.qps == pytest.approx(median, rel=0.1)  # within the noise of one pass


def test_an_honest_server_on_a_larger_set_is_certified_from_every_pass(sets, submission):
    s = score(sets[1000], submission, cost_ms=2)
    assert s.status == Status.VALID and s.findings == [], (s.reason, s.findings)
    assert s.qps_source == QpsSource.ALL_PASSES and s.qps_confidence == QpsConfidence.NORMAL
    assert s.qps == pytest.approx(float(np.median([p.qps for p in s.passes])), rel=1e-3)
    assert s.reason.endswith("QPS at recall@10 1.0000")


def test_a_fast_server_on_a_larger_set_is_low_confidence(sets, submission):
    """The check judges (fresh pools of 83), but every pass lasts about 0.2 s."""
    s = score(sets[1000], submission, cost_ms=0.25)
    assert s.status == Status.VALID and s.qps_source == QpsSource.ALL_PASSES
    assert s.qps_confidence == QpsConfidence.LOW
    (low,) = s.findings
    assert "the longest of its 3 passes lasted" in low and "about" in low


def test_one_pass_has_nothing_repeated(sets, submission):
    s = score(sets[200], submission, cost_ms=20, hit=0.05, passes=1)
    assert s.status == Status.VALID and s.qps_source == QpsSource.ALL_PASSES and s.findings == []


def test_a_kcores_score_has_no_caching_check(sets, submission):
    s = score(sets[200], submission, cost_ms=20, protocol="kcores", passes=1)
    assert s.status == Status.VALID and s.qps_source == QpsSource.ALL_PASSES and s.findings == []


def test_records_judged_by_older_rules_are_not_served(sets, submission, tmp_path, monkeypatch):
    import harness.scorer.scorer as scorer_module

    def make() -> BenchmarkScorer:
        return BenchmarkScorer(quick_scorer_config(passes=3), sets[200], SimulatedRunner(cost_ms=1),
                               cache_dir=tmp_path)

    now = make().cache_key("tree")
    monkeypatch.setattr(scorer_module, "JUDGEMENT_VERSION", scorer_module.JUDGEMENT_VERSION - 1)
    assert make().cache_key("tree") != now


def test_old_records_read_and_unset_fields_are_left_out(sets, submission):
    s = score(sets[1000], submission, cost_ms=2)
    data = json.loads(s.model_dump_json())
    assert data["qps_source"] == "all_passes" and data["qps_confidence"] == "normal"
    old = {k: v for k, v in data.items() if k not in ("qps_source", "qps_confidence")}
    back = Score.model_validate(old)
    assert back.qps_source is None and back.qps_confidence is None
    assert "qps_source" not in back.model_dump() and "qps_confidence" not in back.model_dump_json()
