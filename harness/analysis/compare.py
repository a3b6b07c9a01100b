"""Comparing runs on the same budget: each run is cut where it had spent the budget on one axis."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from harness.analysis.staircase import Staircase, best_curve  # noqa: E402
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


class ModelSummary(BaseModel):
    model: str
    runs: int
    best_valid_qps_mean: float | None
    best_valid_qps_spread: float | None  # standard deviation over the runs
    area_mean: float


class Comparison(BaseModel):
    axis: str
    budget: float | None
    threshold: float | None
    runs: list[RunAtBudget]
    models: list[ModelSummary]
    warnings: list[str]


def cut(sc: Staircase, axis: str, budget: float | None, threshold: float | None) -> RunAtBudget:
    pts = [p for p in sc.points if budget is None or p.at[axis] <= budget]
    top = best_valid(pts)
    best = top.qps if top else None
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
                       dataset=sorted({p.dataset for p in pts}))


def compare(staircases: list[Staircase], axis: str, budget: float | None, threshold: float | None) -> Comparison:
    runs = [cut(sc, axis, budget, threshold) for sc in staircases]
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
    return Comparison(axis=axis, budget=budget, threshold=threshold, runs=runs, models=models, warnings=warnings)


def plot_overlay(staircases: list[Staircase], axis: str, budget: float | None, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for sc in staircases:
        pts = [p for p in sc.points if budget is None or p.at[axis] <= budget]
        xs, ys = best_curve(pts, axis)
        if xs:
            ax.step(xs, ys, where="post", linewidth=2, label=f"{Path(sc.run_dir).name} ({sc.model})")
    if budget is not None:
        ax.axvline(budget, color="grey", linestyle=":", label=f"budget {budget:g}")
    ax.set_xlabel(axis)
    ax.set_ylabel("best valid QPS")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
