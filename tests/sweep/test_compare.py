"""compare by sweep: runs grouped by configuration, the median and spread over seeds, ranking by the
relative QPS where every run has it (raw QPS otherwise), neighbours that cannot be told apart, and
each group's median staircase with its band."""

from __future__ import annotations

from pathlib import Path

from harness.analysis.compare import compare, group_band, plot_overlay
from harness.analysis.staircase import Point, Staircase


def staircase(name: str, scores: list[tuple[float | None, bool, tuple[float, float, float] | None]]) -> Staircase:
    """A run from (qps, valid, (relative, low, high) or None) per iteration."""
    points, best = [], None
    for i, (qps, valid, rel) in enumerate(scores, start=1):
        if valid and qps:
            best = max(best or 0.0, qps)
        points.append(Point(iteration=i, status="valid" if valid else "invalid", valid=valid, qps=qps, recall=0.99,
                            qps_spread=1.04, message="", best_so_far=best,
                            at={"iterations": float(i), "tool_calls": 5.0 * i, "tokens": 1000.0 * i,
                                "dollars": 0.1 * i, "hours": 0.01 * i},
                            hardware="cpu server=0 docker", dataset="tiny",
                            relative_qps=rel[0] if rel else None, relative_low=rel[1] if rel else None,
                            relative_high=rel[2] if rel else None))
    return Staircase(run_dir=f"/sweep/runs/{name}", name=name, model="m", points=points, transitions=[],
                     noise=0.04, threshold=0.08, usage={"tokens": 1000.0 * len(scores), "dollars": 0.1},
                     end_reason="budget")


def test_groups_by_seed_spread_and_ties_with_raw_qps() -> None:
    runs = [staircase("fast-s1", [(100, True, None), (900, True, None)]),
            staircase("fast-s2", [(100, True, None), (1000, True, None)]),
            staircase("fast-s3", [(1100, True, None)]),
            staircase("slow-s1", [(300, True, None), (200, False, None)]),
            staircase("slow-s2", [(350, True, None)]),
            staircase("mid-s1", [(850, True, None)]),
            staircase("mid-s2", [(950, True, None)])]
    groups = ["fast"] * 3 + ["slow"] * 2 + ["mid"] * 2
    result = compare(runs, "iterations", None, None, groups=groups, seeds=[1, 2, 3, 1, 2, 1, 2])
    assert result.metric == "best_valid_qps"
    by = {g.group: g for g in result.groups}
    assert by["fast"].median == 1000 and by["fast"].seeds == [1, 2, 3]
    assert by["fast"].best_valid_qps_min == 900 and by["fast"].best_valid_qps_max == 1100
    assert by["slow"].invalid_mean == 0.5
    assert [g.group for g in sorted(result.groups, key=lambda g: g.rank)] == ["fast", "mid", "slow"]
    # fast's seeds (about 900..1100) overlap mid's (about 850..950): no telling them apart; slow is apart.
    assert len(result.ties) == 1 and result.ties[0].startswith("fast and mid cannot be told apart")
    assert [r.rank for r in result.runs][:3] == [4, 2, 1]  # runs keep their order, ranked in place


def test_relative_qps_ranks_when_every_run_has_it() -> None:
    # Raw QPS says b is better (another machine, faster); paired ratios to the anchor say a is.
    a = staircase("a", [(500, True, (1.50, 1.45, 1.55))])
    b = staircase("b", [(900, True, (1.20, 1.15, 1.25))])
    c = staircase("c", [(600, True, (1.22, 1.18, 1.26))])
    result = compare([a, b, c], "iterations", None, None)
    assert result.metric == "relative_qps"
    assert [r.rank for r in result.runs] == [1, 3, 2]
    assert result.runs[0].relative_low == 1.45 and result.runs[0].relative_high == 1.55
    assert result.ties == ["c and b cannot be told apart at this budget: their paired 95% intervals overlap "
                           "(1.18..1.26 vs 1.15..1.25)"]
    # One run without the figure: the comparison falls back to raw QPS for all.
    mixed = compare([a, staircase("old", [(700, True, None)])], "iterations", None, None)
    assert mixed.metric == "best_valid_qps" and [r.rank for r in mixed.runs] == [2, 1]


def test_budget_cut_applies_before_grouping() -> None:
    runs = [staircase("x-s1", [(100, True, None), (1000, True, None)]), staircase("x-s2", [(200, True, None)])]
    result = compare(runs, "iterations", 1, None, groups=["x", "x"], seeds=[1, 2])
    assert result.groups[0].median == 150 and result.groups[0].best_valid_qps_max == 200


def test_group_band_is_the_median_and_range_of_step_curves(tmp_path: Path) -> None:
    grid, median, low, high = group_band([([1, 3], [10, 30]), ([2], [20]), ([1, 2, 3], [5, 6, 40])])
    assert list(grid) == [1, 2, 3]
    assert list(median) == [7.5, 10, 30] and list(low) == [5, 6, 20] and list(high) == [10, 20, 40]
    _, m, _, _ = group_band([([2], [20]), ([], [])])
    assert list(m) == [20]  # a run with no valid score yet does not pull the median
    runs = [staircase("x-s1", [(100, True, None), (1000, True, None)]), staircase("x-s2", [(200, True, None)])]
    png = plot_overlay(runs, "iterations", None, tmp_path / "c.png", groups=["x", "x"])
    assert png.stat().st_size > 5000
