"""Paired rounds: the ratio's statistics, and the scorer's anchor, rematch and verification end to
end with the local process runner (real servers, real load generator)."""

from __future__ import annotations

import shutil
from datetime import datetime

import numpy as np
import pytest

from harness.scorer.base import Incumbent
from harness.scorer.paired import Contender, Series, bootstrap_median, paired, precise
from harness.scorer.record import Status, Verdict
from harness.scorer.runner import LocalRunner, LocalServer, _LocalDriver
from harness.scorer.scorer import BenchmarkScorer
from tests.scorer.conftest import needs_cargo, quick_scorer_config
from tests.scorer.submissions import write_stage1, write_variant


def test_ratio_is_the_median_of_round_ratios_with_a_bootstrap_interval():
    rng = np.random.default_rng(0)
    mine = Series(qps=[110.0, 220.0, 99.0, 330.0, 121.0])
    other = Series(qps=[100.0, 200.0, 100.0, 300.0, 110.0])
    p = paired(mine, other, against="anchor", against_tree="t", seconds=1.0, rng=rng)
    assert p is not None
    assert p.ratio == pytest.approx(1.1)  # ratios 1.1, 1.1, 0.99, 1.1, 1.1: drift cancels round by round
    assert p.low <= p.ratio <= p.high and p.low >= 0.99 and p.high <= 1.1
    assert p.rounds == 5 and p.qps == mine.qps and p.other_qps == other.qps
    # Raw QPS spread 3x across rounds; the ratio's interval stays narrow.
    assert max(mine.qps) / min(mine.qps) > 3 and p.high / p.low < 1.12


def test_too_few_rounds_give_no_ratio_and_failed_rounds_are_skipped():
    rng = np.random.default_rng(0)
    assert paired(Series(qps=[1.0, 2.0]), Series(qps=[1.0, 2.0]), against="a", against_tree="t", seconds=0,
                  rng=rng) is None
    p = paired(Series(qps=[10.0, 0.0, 10.0, 10.0]), Series(qps=[5.0, 5.0, 5.0, 5.0]), against="a", against_tree="t",
               seconds=0, rng=rng)
    assert p is not None and p.rounds == 3 and p.ratio == 2.0


def test_bootstrap_interval_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        x = rng.lognormal(0.0, 0.1, size=15)  # true median 1.0
        lo, hi = bootstrap_median(x, rng, samples=500)
        hits += lo <= 1.0 <= hi
    assert 175 <= hits <= 200  # percentile bootstrap of a median at n=15: a little conservative


@pytest.mark.rust
@needs_cargo
@pytest.mark.flaky(reruns=1)
def test_anchor_rematch_and_verification_with_real_servers(small_dataset, tmp_path, monkeypatch):
    fast = write_stage1(tmp_path / "fast")
    slow = write_variant("twice_as_slow", tmp_path / "slow")
    same = tmp_path / "same"
    shutil.copytree(fast, same)
    (same / "src" / "db.rs").write_text((same / "src" / "db.rs").read_text() + "\n// the same code, another tree\n")
    cfg = quick_scorer_config(paired=True, pair_rounds=6, pair_round_s=0.3, anchor=str(fast), passes=2)
    runner = LocalRunner()
    logs: list[str] = []
    sc = BenchmarkScorer(cfg, small_dataset, runner, cache_dir=tmp_path / "cache", log=logs.append)
    try:
        # The first valid score: measured against the anchor (here the fast crate itself), no step.
        s1 = sc.score(slow)
        assert s1.status == Status.VALID, s1.reason
        assert s1.anchor is not None and s1.relative_qps == s1.anchor.ratio and s1.step is None
        assert s1.anchor.rounds == 6 and len(s1.anchor.qps) == len(s1.anchor.other_qps) == 6
        assert s1.anchor.low <= s1.relative_qps <= s1.anchor.high
        assert s1.relative_qps < 0.8  # every search done twice
        assert "paired" in s1.phase_seconds and "x the anchor" in s1.reason
        assert s1.slot and s1.measured_from and s1.measured_to
        assert datetime.fromisoformat(s1.measured_from) <= datetime.fromisoformat(s1.measured_to)
        anchor_server = sc._anchor.server if sc._anchor else None

        # A new best: rematched against the kept incumbent (the slow one's server), confirmed.
        inc = Incumbent(path=slow, tree=s1.tree_hash, qps=s1.qps or 0.0, label="iteration 1", iteration=1)
        s2 = sc.score(fast, incumbent=inc)
        assert s2.status == Status.VALID and s2.step is not None, s2.reason
        assert s2.step.verdict == Verdict.CONFIRMED and s2.step.against_iteration == 1
        assert s2.step.paired.ratio > 1.3 and s2.step.paired.low > 1.0
        assert s2.step.paired.against == "iteration 1" and s2.step.paired.against_tree == s1.tree_hash
        assert sc._anchor is not None and sc._anchor.server is anchor_server  # built and loaded once
        assert sc._kept is not None and sc._kept.tree == s2.tree_hash  # the new best now waits for the next step

        # The same code claiming a step over itself: within noise.
        inc2 = Incumbent(path=fast, tree=s2.tree_hash, qps=1.0, label="iteration 2", iteration=2)
        s3 = sc.score(same, incumbent=inc2)
        assert s3.step is not None and s3.step.verdict == Verdict.WITHIN_NOISE, s3.step
        assert s3.step.paired.low <= 1.0 <= s3.step.paired.high

        # A cached record is not served for a claimed step: the rematch needs its server.
        inc3 = Incumbent(path=same, tree=s3.tree_hash, qps=1.0, label="iteration 3", iteration=3)
        s4 = sc.score(slow, incumbent=inc3)
        assert not s4.cached and s4.step is not None
        assert sc.score(slow).cached  # not claiming: the cached record is fine (and has no step)
        assert sc.score(slow).step is None

        # Every pass so far went through a `loadgen rounds` session per contender.
        assert not [m for m in logs if "one load generator per pass" in m]

        # The verification: the fast crate is the verified best, told apart from the slow one, here
        # with one load generator per pass (as where no session can be opened), and rounds that
        # stop at the minimum once the ratios are known well enough.
        monkeypatch.setattr(_LocalDriver, "spawn", lambda *a, **kw: _Gone())
        sc.cfg = cfg.model_copy(update={"pair_min_rounds": 3, "pair_precision": 0.9})
        v = sc.verify([Incumbent(path=slow, tree=s1.tree_hash, qps=1, label="iteration 1", iteration=1),
                       Incumbent(path=fast, tree=s2.tree_hash, qps=1, label="iteration 2", iteration=2)])
        assert v.best == "iteration 2" and v.best_iteration == 2 and v.told_apart
        assert [m for m in logs if "one load generator per pass" in m]
        assert v.best_vs_next is not None and v.best_vs_next.rounds == 3
        assert v.best_vs_next is not None and v.best_vs_next.against == "iteration 1" and v.best_vs_next.low > 1
        assert all(e.relative is not None and e.recall == 1.0 for e in v.entries)
        servers = [c.server for c in (sc._anchor, sc._kept) if c is not None]
    finally:
        sc.close()
    assert servers and all(isinstance(s, LocalServer) and not s.alive() for s in servers)


class _Gone:
    """A load generator that exited at once: no session can be opened."""

    def alive(self) -> bool:
        return False

    def stop(self) -> None:
        pass


def test_precise_asks_every_ratio_to_the_first_to_be_known_within_the_precision():
    rng = np.random.default_rng(0)
    cs = [Contender(label, "t", None, 1.0) for label in ("me", "anchor", "rival")]  # type: ignore[arg-type]
    out = {"me": Series(qps=[100.0] * 8), "anchor": Series(qps=[50.0, 51, 49, 50, 50.5, 49.5, 50, 50]),
           "rival": Series(qps=[100.0, 60, 140, 90, 110, 70, 130, 100])}
    assert precise(out, cs[:2], 0.02, rng)  # 2.0 within 1%
    assert not precise(out, cs, 0.02, rng)  # the rival's ratio is still spread
    assert precise(out, cs, 0.5, rng)
    out["anchor"].qps = out["anchor"].qps[:2]
    assert not precise(out, cs[:2], 0.5, rng)  # fewer than 3 rounds: unknown
