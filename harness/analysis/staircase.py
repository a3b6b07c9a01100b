"""The staircase of a run, read from its ledger: one point per scored submission, the best valid QPS
so far, and the transitions (jumps of the best beyond the measured noise after a plateau)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from harness.budget import Usage
from harness.ledger import Ledger

Axis = Literal["iterations", "tool_calls", "tokens", "dollars", "hours"]
AXES: tuple[str, ...] = ("iterations", "tool_calls", "tokens", "dollars", "hours")


class Point(BaseModel):
    iteration: int
    status: str
    valid: bool
    qps: float | None
    recall: float | None
    qps_spread: float | None
    message: str
    files_changed: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    best_so_far: float | None
    at: dict[str, float]  # the budget used when this score was recorded, on every axis
    hardware: str = ""
    dataset: str = ""


class Transition(BaseModel):
    iteration: int
    from_qps: float | None
    to_qps: float
    ratio: float | None
    plateau_iterations: int
    message: str
    lines_changed: int


class Staircase(BaseModel):
    run_dir: str
    name: str
    model: str
    points: list[Point]
    transitions: list[Transition]
    noise: float
    threshold: float
    usage: dict[str, float]
    end_reason: str | None
    imported: bool = False

    def best(self) -> Point | None:
        valid = [p for p in self.points if p.valid and p.qps]
        return max(valid, key=lambda p: p.qps or 0) if valid else None


def load_staircase(run_dir: Path, *, jump: float | None = None) -> Staircase:
    """Read a run's ledger into a staircase. ``jump``: the relative rise of the best that counts as
    a transition (default: twice the measured noise, at least 5%)."""
    ledger = Ledger(run_dir)
    events = list(ledger.events())
    ledger.close()
    usage = Usage()
    submissions: dict[int, dict[str, Any]] = {}
    points: list[Point] = []
    best: float | None = None
    start = next((e for e in events if e["type"] == "run_start"), {})
    end = next((e["reason"] for e in reversed(events) if e["type"] == "run_end"), None)
    for e in events:
        usage.add_event(e)
        if e["type"] == "submission":
            submissions[e["iteration"]] = e
        elif e["type"] == "score":
            s = e["score"]
            sub = submissions.get(e["iteration"], {})
            valid = s["status"] == "valid"
            if valid and s.get("qps"):
                best = max(best or 0.0, s["qps"])
            hw = s.get("hardware", {})
            points.append(Point(
                iteration=e["iteration"], status=s["status"], valid=valid, qps=s.get("qps"),
                recall=s.get("recall"), qps_spread=s.get("qps_spread"), message=sub.get("message", ""),
                files_changed=sub.get("files_changed", 0), lines_added=sub.get("lines_added", 0),
                lines_removed=sub.get("lines_removed", 0), best_so_far=best,
                at={"iterations": float(e["iteration"]), "tool_calls": float(usage.tool_calls),
                    "tokens": float(usage.tokens), "dollars": usage.dollars, "hours": usage.hours},
                hardware=f"{hw.get('cpu_model', '?')} server={hw.get('server_cpus', '?')} {hw.get('runner', '')}",
                dataset=s.get("dataset", "")))
    spreads = [p.qps_spread - 1 for p in points if p.valid and p.qps_spread]
    noise = float(np.median(spreads)) if spreads else 0.05
    threshold = jump if jump is not None else max(0.05, 2 * noise)
    return Staircase(run_dir=str(run_dir), name=start.get("name", Path(run_dir).name), model=start.get("model", "?"),
                     points=points, transitions=find_transitions(points, threshold), noise=noise,
                     threshold=threshold, usage=usage.model_dump() | {"tokens": usage.tokens, "hours": usage.hours},
                     end_reason=end, imported=bool(start.get("imported")))


def find_transitions(points: list[Point], threshold: float) -> list[Transition]:
    """Iterations where the best valid QPS rose by more than ``threshold`` over the best before it
    (small gains do not add up to a transition); the first valid score is a transition from nothing."""
    out: list[Transition] = []
    prev: float | None = None
    since = 0
    for p in points:
        cur = p.best_so_far
        if cur is not None and (prev is None or cur > prev * (1 + threshold)):
            out.append(Transition(iteration=p.iteration, from_qps=prev, to_qps=cur,
                                  ratio=round(cur / prev, 3) if prev else None, plateau_iterations=since,
                                  message=p.message, lines_changed=p.lines_added + p.lines_removed))
            since = 0
        else:
            since += 1
        prev = cur if cur is not None else prev
    return out


def best_curve(points: list[Point], axis: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for p in points:
        if p.best_so_far is not None:
            xs.append(p.at[axis])
            ys.append(p.best_so_far)
    return xs, ys
