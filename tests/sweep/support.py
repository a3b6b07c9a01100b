"""Sweeps for the tests: a tiny dataset, a scripted base config, a sweep file whose runs are the
stand-in driver (tests/sweep/driver.py: the real loop, a local sandbox, a stub scorer that holds
the machine's scorer slot), and the checks every test makes on a finished sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from harness.datasets.sources import generate_dataset
from harness.datasets.store import DatasetStore
from harness.events import IterationEnd, RunEnd, ScoreEvent, Submission
from harness.ledger import read_events
from harness.sweep.record import SweepState

REPO_ROOT = Path(__file__).resolve().parents[2]
DRIVER = [sys.executable, "-m", "tests.sweep.driver"]


def write_sweep(tmp: Path, *, seeds: list[int], iterations: dict[str, int], concurrency: int | None = None,
                executor: str = "local", extra: dict[str, Any] | None = None) -> Path:
    """A sweep file: one group per entry of ``iterations`` (its name -> max_iterations) x ``seeds``."""
    store = DatasetStore(tmp / "data")
    if not store.exists("tiny"):
        generate_dataset(store, "tiny", n=300, queries=10, dev_queries=5, dim=8, seed=1)
    (tmp / "base.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": "tiny", "data_dir": str(tmp / "data")},
        "model": {"provider": "scripted", "script": "reference"}}))
    spec: dict[str, Any] = {
        "name": "t", "seeds": seeds, "executor": executor, "run_command": DRIVER, "concurrency": concurrency,
        "runs": [{"config": "base.yaml", "name": g, "set": [f"budget.max_iterations={n}"]}
                 for g, n in iterations.items()]}
    spec.update(extra or {})
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def env(tmp: Path, score_s: float = 0.3) -> dict[str, str]:
    """The environment of a sweep's processes: a slot directory of the test's own (so that other
    scorings on the machine neither wait for it nor delay it), the stub scoring's length."""
    return os.environ | {"STAIRCASE_SLOT_DIR": str(tmp / "slots"), "SWEEP_STUB_SCORE_S": str(score_s),
                         "PYTHONPATH": str(REPO_ROOT)}


def staircase(*args: str, tmp: Path, timeout: float = 240, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO_ROOT, env=env(tmp), text=True,
                          capture_output=True, timeout=timeout, **kw)


def check_runs_whole(sweep_dir: Path, iterations: dict[str, int]) -> dict[str, list[ScoreEvent]]:
    """Every run ended exactly once, each of its iterations submitted, scored and ended exactly once;
    the sweep recorded exactly one `ended` exit per run. Returns each run's scores."""
    state = SweepState.read(sweep_dir)
    scores = {}
    for run_id, rec in state.runs.items():
        events = list(read_events(sweep_dir / "runs" / run_id))
        n = iterations[rec.planned.group]
        assert [e.reason for e in events if isinstance(e, RunEnd)] == [f"max_iterations: {n} of {n} used"], run_id
        for kind in (IterationEnd, Submission, ScoreEvent):
            its = [e.iteration for e in events if isinstance(e, kind)]  # type: ignore[attr-defined]
            assert its == list(range(1, n + 1)), (run_id, kind.__name__, its)
        assert [x.status for x in rec.exits].count("ended") == 1, (run_id, rec.exits)
        assert rec.exits[-1].status == "ended"
        scores[run_id] = [e for e in events if isinstance(e, ScoreEvent)]
    return scores


def slot_intervals(scores: dict[str, list[ScoreEvent]]) -> list[tuple[datetime, datetime, str, str]]:
    """(from, to, slot, run) of every measured (not cached) score, in time order."""
    out = []
    for run_id, evs in scores.items():
        for e in evs:
            s = e.score
            if s.cached:
                continue
            assert s.slot and s.measured_from and s.measured_to, (run_id, e.iteration)
            out.append((datetime.fromisoformat(s.measured_from), datetime.fromisoformat(s.measured_to), s.slot,
                        run_id))
    return sorted(out)


def assert_no_overlap(intervals: list[tuple[datetime, datetime, str, str]]) -> None:
    by_slot: dict[str, list[tuple[datetime, datetime, str, str]]] = {}
    for iv in intervals:
        by_slot.setdefault(iv[2], []).append(iv)
    for slot, ivs in by_slot.items():
        for a, b in zip(ivs, ivs[1:], strict=False):
            assert b[0] >= a[1], f"{slot}: {a[3]} measured until {a[1]}, {b[3]} from {b[0]}"
