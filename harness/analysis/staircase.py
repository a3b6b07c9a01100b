"""The staircase of a run, read from its ledger: one point per scored submission, the best valid QPS
so far, and the transitions (jumps of the best beyond the measured noise after a plateau)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from harness.events import ScoreEvent
from harness.ledger import read_events
from harness.scorer.record import Verification
from harness.state import RunState, best_valid

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
    # Paired scoring (issue 14): the ratio to the anchor build with its 95% interval, the anchor's
    # own QPS in that scoring (the machine's drift), and for a claimed new best its verdict.
    relative_qps: float | None = None
    relative_low: float | None = None
    relative_high: float | None = None
    anchor_qps: float | None = None
    verdict: str | None = None  # confirmed | within_noise | None (not a claimed new best, or not checked)


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
    status: str = "running"  # ended, stopped (resumable), running (or killed: no process holds its lock)
    stop_reason: str | None = None
    imported: bool = False
    verified: Verification | None = None  # the top submissions rescored in paired rounds

    def best(self) -> Point | None:
        return best_valid(self.points)

    def verified_best(self) -> Point | None:
        """The best as the verification found it (highest ratio to the anchor), else ``best()``."""
        v = self.verified
        if v is not None and v.best_iteration is not None:
            for p in self.points:
                if p.iteration == v.best_iteration:
                    return p
        return self.best()


def load_staircase(run_dir: Path, *, jump: float | None = None) -> Staircase:
    """Read a run's ledger into a staircase. ``jump``: the relative rise of the best that counts as
    a transition (default: twice the measured noise, at least 5%)."""
    state = RunState()
    points: list[Point] = []
    best: float | None = None
    for e in read_events(Path(run_dir)):
        state.apply(e)
        if isinstance(e, ScoreEvent):
            s = e.score
            if s.valid and s.qps:
                best = max(best or 0.0, s.qps)
            points.append(point_of(e, state, best))
    return staircase_of(Path(run_dir), state, points, jump)


def staircase_of(run_dir: Path, state: RunState, points: list[Point], jump: float | None = None) -> Staircase:
    """A run's staircase from its state and its points (as ``load_staircase`` reads them, or as a
    reader that follows the ledger has built them so far)."""
    usage, start = state.usage, state.start
    spreads = [p.qps_spread - 1 for p in points if p.valid and p.qps_spread]
    noise = float(np.median(spreads)) if spreads else 0.05
    threshold = jump if jump is not None else max(MIN_JUMP, 2 * noise)
    return Staircase(run_dir=str(run_dir), name=start.name if start else run_dir.name,
                     model=start.label if start else "?", points=points,
                     transitions=find_transitions(points, threshold), noise=noise, threshold=threshold,
                     usage=usage.model_dump() | {"tokens": usage.tokens, "hours": usage.hours},
                     end_reason=state.end.reason if state.end else None, status=state.status,
                     stop_reason=state.stopped.reason if state.stopped else None,
                     imported=bool(start and start.imported), verified=state.verified)


def point_of(e: ScoreEvent, state: RunState, best: float | None) -> Point:
    """The staircase point of a score, with the run's state as of that score (its usage, the
    submission's message and diff) and the best valid QPS so far (this score included)."""
    s, usage = e.score, state.usage
    sub = state.submissions.get(e.iteration)
    hw = s.hardware
    return Point(
        iteration=e.iteration, status=s.status.value, valid=s.valid, qps=s.qps, recall=s.recall,
        qps_spread=s.qps_spread, message=sub.message if sub else "",
        files_changed=sub.files_changed if sub else 0, lines_added=sub.lines_added if sub else 0,
        lines_removed=sub.lines_removed if sub else 0, best_so_far=best,
        at={"iterations": float(e.iteration), "tool_calls": float(usage.tool_calls),
            "tokens": float(usage.tokens), "dollars": usage.dollars, "hours": usage.hours},
        hardware=f"{hw.cpu_model} server={hw.server_cpus} {hw.runner}", dataset=s.dataset,
        relative_qps=s.relative_qps, relative_low=s.anchor.low if s.anchor else None,
        relative_high=s.anchor.high if s.anchor else None,
        anchor_qps=float(np.median(s.anchor.other_qps)) if s.anchor and s.anchor.other_qps else None,
        verdict=s.step.verdict.value if s.step else None)


MIN_JUMP = 0.05  # the least rise of the best that is a transition


def find_transitions(points: list[Point], threshold: float) -> list[Transition]:
    """Iterations where the best valid QPS rose by more than ``threshold`` over the best before it
    (small gains do not add up to a transition); the first valid score is a transition from nothing.
    A rise whose rematch against the incumbent found it ``within_noise`` is never a transition:
    where steps carry verdicts, only confirmed ones count."""
    out: list[Transition] = []
    prev: float | None = None
    since = 0
    for p in points:
        cur = p.best_so_far
        if cur is not None and p.verdict == "within_noise" and prev is not None:
            since += 1
            prev = cur
            continue
        # A confirmed step has been told apart from the best before it in paired rounds: the noise
        # the threshold guards against is already ruled out, so only the least jump (5%) applies.
        least = MIN_JUMP if p.verdict == "confirmed" else threshold
        if cur is not None and (prev is None or cur > prev * (1 + least)):
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
