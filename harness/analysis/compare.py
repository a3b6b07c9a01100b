"""Comparing runs on the same budget: each run is cut where it had spent the budget on one axis.

Runs are ranked by their best relative QPS (the ratio to the anchor build, measured in paired rounds:
it crosses machines and days) when every run has one, else by best valid QPS. Runs of a sweep are
also grouped by configuration: per group the median over its seeds, their spread, and whether the
group can be told apart from the next one at this budget (their intervals do not overlap).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from harness.analysis.staircase import Point, Staircase, best_curve  # noqa: E402
from harness.state import best_valid  # noqa: E402


class RunAtBudget(BaseModel):
    run: str
    model: str
    cut_at: float | None
    points: int
    best_valid_qps: float | None
    first_reaching: int | None  # first iteration whose best reached the threshold
    area: float  # area under the best-so-far curve up to the cut, divided by the cut (a mean level)
    invalid: int
    tokens: float
    dollars: float
    hours: float
    hardware: list[str]
    dataset: list[str]
    # Paired scoring: the best valid point by relative QPS, with its 95% interval.
    best_relative_qps: float | None = None
    relative_low: float | None = None
    relative_high: float | None = None
    qps_spread: float | None = None  # max/min over the timed passes of the best valid point
    group: str | None = None
    seed: int | None = None
    rank: int = 0  # 1 = best, by the comparison's metric (runs keep the order they were given in)


class ModelSummary(BaseModel):
    model: str
    runs: int
    best_valid_qps_mean: float | None
    best_valid_qps_spread: float | None  # standard deviation over the runs
    area_mean: float


class GroupSummary(BaseModel):
    """One configuration of a sweep over its seeds, cut at the budget."""

    group: str
    runs: int
    seeds: list[int]
    metric: str  # relative_qps or best_valid_qps
    median: float | None  # of the metric over the seeds
    low: float | None  # the interval the group is compared with: the seeds' spread (min..max, and each
    high: float | None  # run's own paired interval) or, for one seed, that run's own interval
    best_valid_qps_median: float | None
    best_valid_qps_min: float | None
    best_valid_qps_max: float | None
    area_median: float
    invalid_mean: float
    tokens_mean: float
    dollars_mean: float
    hardware: list[str]
    rank: int = 0


class Comparison(BaseModel):
    axis: str
    budget: float | None
    threshold: float | None
    runs: list[RunAtBudget]
    models: list[ModelSummary]
    warnings: list[str]
    metric: str = "best_valid_qps"  # what runs and groups are ranked by
    groups: list[GroupSummary] = []
    # Neighbours in the ranking (runs, or groups for a sweep) whose intervals overlap: at this budget
    # the data cannot tell which is better.
    ties: list[str] = []


def cut(sc: Staircase, axis: str, budget: float | None, threshold: float | None) -> RunAtBudget:
    pts = [p for p in sc.points if budget is None or p.at[axis] <= budget]
    top = best_valid(pts)
    best = top.qps if top else None
    paired = [p for p in pts if p.valid and p.relative_qps is not None]
    rel = max(paired, key=lambda p: p.relative_qps or 0.0) if paired else None
    first = next((p.iteration for p in pts if threshold and (p.best_so_far or 0) >= threshold), None)
    xs, ys = best_curve(pts, axis)
    end = budget if budget is not None else (pts[-1].at[axis] if pts else 0.0)
    area = 0.0
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        nxt = xs[i + 1] if i + 1 < len(xs) else end
        area += y * max(0.0, nxt - x)
    last = pts[-1].at if pts else {"tokens": 0.0, "dollars": 0.0, "hours": 0.0}
    return RunAtBudget(run=sc.run_dir, model=sc.model, cut_at=budget, points=len(pts), best_valid_qps=best,
                       first_reaching=first, area=area / end if end else 0.0,
                       invalid=sum(1 for p in pts if not p.valid), tokens=last["tokens"], dollars=last["dollars"],
                       hours=last["hours"], hardware=sorted({p.hardware for p in pts}),
                       dataset=sorted({p.dataset for p in pts}), best_relative_qps=rel.relative_qps if rel else None,
                       relative_low=rel.relative_low if rel else None, relative_high=rel.relative_high if rel else None,
                       qps_spread=top.qps_spread if top else None)


def _metric(r: RunAtBudget, metric: str) -> float | None:
    return r.best_relative_qps if metric == "relative_qps" else r.best_valid_qps


def _interval(r: RunAtBudget, metric: str) -> tuple[float, float] | None:
    """A run's own interval: its paired rounds' 95% interval, or for raw QPS the spread of its passes
    around their median (max/min = s: the median's neighbourhood qps/sqrt(s)..qps*sqrt(s))."""
    if metric == "relative_qps":
        if r.best_relative_qps is None:
            return None
        return (r.relative_low if r.relative_low is not None else r.best_relative_qps,
                r.relative_high if r.relative_high is not None else r.best_relative_qps)
    if r.best_valid_qps is None:
        return None
    half = (r.qps_spread or 1.0) ** 0.5
    return r.best_valid_qps / half, r.best_valid_qps * half


def _rank(values: list[float | None]) -> list[int]:
    def key(i: int) -> float:
        v = values[i]
        return -v if v is not None else float("inf")

    order = sorted(range(len(values)), key=key)
    ranks = [0] * len(values)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return ranks


def _ties(names: list[str], medians: list[float | None], intervals: list[tuple[float, float] | None],
          why: str) -> list[str]:
    """Neighbours in the ranking whose intervals overlap."""
    order = [i for i in sorted(range(len(names)), key=lambda i: -(medians[i] or 0.0)) if medians[i] is not None]
    out = []
    for a, b in zip(order, order[1:], strict=False):
        ia, ib = intervals[a], intervals[b]
        if ia and ib and ib[1] >= ia[0]:
            out.append(f"{names[a]} and {names[b]} cannot be told apart at this budget: {why} overlap "
                       f"({ia[0]:,.3g}..{ia[1]:,.3g} vs {ib[0]:,.3g}..{ib[1]:,.3g})")
    return out


def group_summary(group: str, rs: list[RunAtBudget], metric: str) -> GroupSummary:
    values = [v for r in rs if (v := _metric(r, metric)) is not None]
    own = [iv for r in rs if (iv := _interval(r, metric))]
    low = min([*values, *(iv[0] for iv in own)], default=None)
    high = max([*values, *(iv[1] for iv in own)], default=None)
    bests = [r.best_valid_qps for r in rs if r.best_valid_qps is not None]
    return GroupSummary(
        group=group, runs=len(rs), seeds=sorted(r.seed for r in rs if r.seed is not None), metric=metric,
        median=float(np.median(values)) if values else None, low=low, high=high,
        best_valid_qps_median=float(np.median(bests)) if bests else None, best_valid_qps_min=min(bests, default=None),
        best_valid_qps_max=max(bests, default=None), area_median=float(np.median([r.area for r in rs])),
        invalid_mean=float(np.mean([r.invalid for r in rs])), tokens_mean=float(np.mean([r.tokens for r in rs])),
        dollars_mean=float(np.mean([r.dollars for r in rs])), hardware=sorted({h for r in rs for h in r.hardware}))


def compare(staircases: list[Staircase], axis: str, budget: float | None, threshold: float | None, *,
            groups: list[str] | None = None, seeds: list[int | None] | None = None) -> Comparison:
    """Runs cut at the budget; ``groups``/``seeds`` (one per staircase) group a sweep's runs by configuration."""
    runs = [cut(sc, axis, budget, threshold) for sc in staircases]
    for i, r in enumerate(runs):
        r.group = groups[i] if groups else None
        r.seed = seeds[i] if seeds else None
    paired = bool(runs) and all(r.best_relative_qps is not None for r in runs if r.best_valid_qps is not None) \
        and any(r.best_relative_qps is not None for r in runs)
    metric = "relative_qps" if paired else "best_valid_qps"
    for r, rank in zip(runs, _rank([_metric(r, metric) for r in runs]), strict=True):
        r.rank = rank
    why = "their paired 95% intervals" if paired else "the spreads of their timed passes"
    ties = _ties([Path(r.run).name for r in runs], [_metric(r, metric) for r in runs],
                 [_interval(r, metric) for r in runs], why) if not groups else []
    group_rows: list[GroupSummary] = []
    if groups:
        members: dict[str, list[RunAtBudget]] = defaultdict(list)
        for r in runs:
            members[r.group or "?"].append(r)
        group_rows = [group_summary(g, rs, metric) for g, rs in members.items()]
        for g, rank in zip(group_rows, _rank([g.median for g in group_rows]), strict=True):
            g.rank = rank
        ties = _ties([g.group for g in group_rows], [g.median for g in group_rows],
                     [(g.low, g.high) if g.low is not None and g.high is not None else None for g in group_rows],
                     "the spreads across their seeds (and their runs' own intervals)")
    by_model: dict[str, list[RunAtBudget]] = defaultdict(list)
    for r in runs:
        by_model[r.model].append(r)
    models = []
    for model, rs in by_model.items():
        bests = [r.best_valid_qps for r in rs if r.best_valid_qps is not None]
        models.append(ModelSummary(model=model, runs=len(rs),
                                   best_valid_qps_mean=float(np.mean(bests)) if bests else None,
                                   best_valid_qps_spread=float(np.std(bests)) if len(bests) > 1 else None,
                                   area_mean=float(np.mean([r.area for r in rs]))))
    warnings = []
    hardware = {h for r in runs for h in r.hardware}
    if len(hardware) > 1:
        warnings.append(f"runs were scored on different hardware: {sorted(hardware)}")
    datasets = {d for r in runs for d in r.dataset}
    if len(datasets) > 1:
        warnings.append(f"runs were scored on different datasets: {sorted(datasets)}")
    short = [r.run for r, sc in zip(runs, staircases, strict=True)
             if budget is not None and sc.points and sc.points[-1].at[axis] < budget and sc.end_reason]
    if short:
        warnings.append(f"these runs ended before spending the budget: {short}")
    return Comparison(axis=axis, budget=budget, threshold=threshold, runs=runs, models=models, warnings=warnings,
                      metric=metric, groups=group_rows, ties=ties)


def relative_curve(points: list[Point], axis: str) -> tuple[list[float], list[float]]:
    """The best valid relative QPS so far, at each point that has one."""
    xs, ys, best = [], [], None
    for p in points:
        if p.valid and p.relative_qps is not None:
            best = max(best or 0.0, p.relative_qps)
        if best is not None:
            xs.append(p.at[axis])
            ys.append(best)
    return xs, ys


def _curve(pts: list[Point], axis: str, relative: bool) -> tuple[list[float], list[float]]:
    return relative_curve(pts, axis) if relative else best_curve(pts, axis)


def group_band(curves: list[tuple[list[float], list[float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                         np.ndarray]:
    """The median and the min..max of step curves on the union of their x values (a run counts from
    its first valid score on)."""
    grid = np.array(sorted({x for xs, _ in curves for x in xs}))
    values = np.full((len(curves), len(grid)), np.nan)
    for i, (xs, ys) in enumerate(curves):
        if xs:
            idx = np.searchsorted(np.array(xs), grid, side="right") - 1
            values[i] = np.where(idx >= 0, np.array(ys)[np.clip(idx, 0, None)], np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return grid, np.nanmedian(values, axis=0), np.nanmin(values, axis=0), np.nanmax(values, axis=0)


def plot_overlay(staircases: list[Staircase], axis: str, budget: float | None, path: Path,
                 groups: list[str] | None = None, relative: bool = False) -> Path:
    """Each run's staircase; with ``groups`` (a sweep), each group's median staircase over its seeds
    with the band from the lowest to the highest seed. ``relative``: the ratio to the anchor."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    cut_pts = [[p for p in sc.points if budget is None or p.at[axis] <= budget] for sc in staircases]
    if groups:
        members: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(groups):
            members[g].append(i)
        for g, idx in members.items():
            grid, median, low, high = group_band([_curve(cut_pts[i], axis, relative) for i in idx])
            if len(grid):
                line = ax.step(grid, median, where="post", linewidth=2, label=f"{g} (median of {len(idx)})")
                ax.fill_between(grid, low, high, step="post", alpha=0.2, color=line[0].get_color())
    else:
        for sc, pts in zip(staircases, cut_pts, strict=True):
            xs, ys = _curve(pts, axis, relative)
            if xs:
                ax.step(xs, ys, where="post", linewidth=2, label=f"{Path(sc.run_dir).name} ({sc.model})")
    if budget is not None:
        ax.axvline(budget, color="grey", linestyle=":", label=f"budget {budget:g}")
    ax.set_xlabel(axis)
    ax.set_ylabel("best valid QPS relative to the anchor" if relative else "best valid QPS")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
