"""A sweep directory and what to do with each of its runs.

```
SWEEP/
  sweep.yaml          the sweep file as resolved (paths absolute, --set applied)
  sweep.jsonl         the sweep's record (harness.sweep.record)
  configs/<run>.yaml  every run's resolved config (seed and name set)
  runs/<run>/         every run: an ordinary run directory (on Ray: the head's current copy)
  logs/<run>.log      what each run's process printed, all its launches appended
```

:meth:`Sweep.jobs` reads every run's own ledger: a run that ended is left alone, one that started
is resumed, one that never started (no ``run_start``) is started, so ``sweep resume`` after a kill
at any moment neither repeats nor loses a run.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel

from harness.config import config_to_yaml
from harness.ledger import lock_holder, read_events
from harness.state import RunState
from harness.sweep.record import (
    RunExit,
    SweepEnd,
    SweepRecord,
    SweepResume,
    SweepStart,
    SweepState,
    _SweepEvent,
    read_sweep_events,
    this_host,
)
from harness.sweep.spec import PlannedRun, SweepSpec, plan

RUNS, CONFIGS, LOGS, TRASH = "runs", "configs", "logs", "trash"


@dataclass(frozen=True)
class Job:
    """One launch to make: start or resume one run."""

    run: PlannedRun
    action: Literal["start", "resume"]
    config_path: Path
    run_dir: Path
    log_path: Path


class Executor(Protocol):
    @property
    def name(self) -> Literal["local", "ray"]: ...

    def run(self, jobs: list[Job], sweep: Sweep) -> None:
        """Launch every job (as many at once as allowed), recording launches and exits on ``sweep``,
        until all have exited or the sweep is told to stop."""


class SweepRow(BaseModel):
    run_id: str
    group: str
    seed: int
    status: str  # ended, stopped, running (PID .. on ..), interrupted, not started
    end_reason: str | None
    iterations: int
    best_valid_qps: float | None
    node: str
    launches: int
    last_exit: str | None
    path: str


class SweepSummary(BaseModel):
    sweep_dir: str
    name: str
    status: Literal["ended", "stopped"]
    runs: list[SweepRow]


class Sweep:
    def __init__(self, sweep_dir: Path, record: SweepRecord, state: SweepState, spec: SweepSpec) -> None:
        self.dir, self.record, self.state, self.spec = Path(sweep_dir), record, state, spec
        self._lock = threading.Lock()

    # -- creating and opening ---------------------------------------------------------------------

    @classmethod
    def create(cls, spec: SweepSpec, run_sets: list[str], sweep_dir: Path) -> Sweep:
        """Plan every run (a wrong config fails here, before anything is written) and record the plan."""
        planned = plan(spec, run_sets)
        sweep_dir = Path(sweep_dir)
        if (sweep_dir / "sweep.jsonl").is_file() and (sweep_dir / "sweep.jsonl").stat().st_size:
            raise FileExistsError(f"{sweep_dir} already holds a sweep: use `staircase sweep resume {sweep_dir}`")
        record = SweepRecord(sweep_dir)
        try:
            (sweep_dir / CONFIGS).mkdir(exist_ok=True)
            (sweep_dir / RUNS).mkdir(exist_ok=True)
            for run, cfg in planned:
                (sweep_dir / CONFIGS / f"{run.run_id}.yaml").write_text(config_to_yaml(cfg))
            spec_data = spec.model_dump(mode="json")
            (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(spec_data, sort_keys=False))
            sweep = cls(sweep_dir, record, SweepState(), spec)
            sweep.add(SweepStart(name=spec.name, spec=spec_data, runs=[r for r, _ in planned], host=this_host()))
        except BaseException:
            record.close()
            raise
        return sweep

    @classmethod
    def open(cls, sweep_dir: Path) -> Sweep:
        sweep_dir = Path(sweep_dir)
        if SweepState.read(sweep_dir).start is None:
            raise FileNotFoundError(f"{sweep_dir}: not a sweep directory (no sweep_start in sweep.jsonl)")
        record = SweepRecord(sweep_dir)  # fails at once while another process drives it
        state = SweepState.read(sweep_dir)
        assert state.start is not None
        return cls(sweep_dir, record, state, SweepSpec.model_validate(state.start.spec))

    def add(self, event: _SweepEvent) -> None:
        """Record an event (thread-safe: an executor may report from several threads)."""
        with self._lock:
            self.state.apply(self.record.append(event))

    def close(self) -> None:
        self.record.close()

    # -- what to do -------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.dir / RUNS / run_id

    def jobs(self) -> list[Job]:
        """The launches the sweep still needs, read from the runs' own ledgers."""
        out = []
        for run_id, rec in self.state.runs.items():
            d = self.run_dir(run_id)
            state = RunState.from_events(read_events(d))
            if rec.launches and (not rec.exits or rec.exits[-1].seq < rec.launches[-1].seq):
                # The sweep died while this launch ran: its outcome, as the run's ledger tells it.
                ended = state.end is not None
                self.add(RunExit(run_id=run_id, status="ended" if ended else "lost", node=rec.node,
                                 detail=state.end.reason if state.end else
                                 "no exit recorded: the sweep's process died while it ran"))
            if state.end is not None:
                continue
            if state.start is None and d.exists():
                # Killed while the run was being created, before its first event: nothing of value is
                # in it, but nothing is deleted either.
                trash = self.dir / TRASH / f"{run_id}-{time.strftime('%Y%m%d-%H%M%S')}"
                trash.parent.mkdir(exist_ok=True)
                shutil.move(str(d), trash)
            out.append(Job(run=rec.planned, action="resume" if state.start is not None else "start",
                           config_path=self.dir / CONFIGS / f"{run_id}.yaml", run_dir=d,
                           log_path=self.dir / LOGS / f"{run_id}.log"))
        return out

    def execute(self, executor: Executor, *, resumed: bool = False) -> SweepSummary:
        """Launch what is left to do and wait for it; the summary says whether every run ended."""
        import os

        try:
            if resumed:
                self.add(SweepResume(host=this_host(), pid=os.getpid(), executor=executor.name))
            (self.dir / LOGS).mkdir(exist_ok=True)
            jobs = self.jobs()
            if jobs:
                executor.run(jobs, self)
            summary = sweep_summary(self.dir, self.state)
            if summary.status == "ended" and self.state.end is None:
                self.add(SweepEnd(runs=len(summary.runs)))
            return summary
        finally:
            self.close()

    def exited(self, job: Job, node: str, exit_code: int | None, lost: str | None = None) -> RunExit:
        """Record how a launch ended, judged by the run's own ledger first, then the exit code."""
        state = RunState.from_events(read_events(job.run_dir))
        detail = ""
        status: Literal["ended", "stopped", "failed", "lost"]
        if state.end is not None:
            status, detail = "ended", state.end.reason
        elif lost is not None:
            status, detail = "lost", lost
        elif exit_code == 3 or state.stopped is not None:
            status, detail = "stopped", state.stopped.reason if state.stopped else "exit status 3"
        else:
            status, detail = "failed", _log_tail(job.log_path) or f"exit status {exit_code}"
        event = RunExit(run_id=job.run.run_id, status=status, node=node, exit_code=exit_code, detail=detail[-2000:])
        self.add(event)
        return event


def _log_tail(path: Path, n: int = 1500) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - n))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def sweep_summary(sweep_dir: Path, state: SweepState | None = None) -> SweepSummary:
    """Every run of the sweep as its ledger and the sweep's record show it now (read-only: safe on a
    live sweep)."""
    state = state or SweepState.read(sweep_dir)
    if state.start is None:
        raise FileNotFoundError(f"{sweep_dir}: not a sweep directory (no sweep_start in sweep.jsonl)")
    rows = []
    for run_id, rec in state.runs.items():
        d = Path(sweep_dir) / RUNS / run_id
        rs = RunState.from_events(read_events(d))
        if rs.start is None:
            status = "not started"
        elif rs.end is not None:
            status = "ended"
        elif rs.stopped is not None:
            status = "stopped"
        else:
            holder = lock_holder(d)
            launch = rec.launches[-1] if rec.launches else None
            if holder:
                status = f"running (PID {holder.get('pid')} on {holder.get('host')})"
            elif launch and (not rec.exits or rec.exits[-1].seq < launch.seq) and launch.executor == "ray":
                status = f"running (on node {launch.node[:12]})"  # the head's copy lags its node
            else:
                status = "interrupted"
        best = rs.best()
        last = rec.exits[-1] if rec.exits else None
        rows.append(SweepRow(run_id=run_id, group=rec.planned.group, seed=rec.planned.seed, status=status,
                             end_reason=rs.end.reason if rs.end else None, iterations=rs.usage.iterations,
                             best_valid_qps=best.qps if best else None, node=rec.node, launches=len(rec.launches),
                             last_exit=f"{last.status}: {last.detail[:80]}" if last else None, path=str(d)))
    done = all(r.status == "ended" for r in rows)
    return SweepSummary(sweep_dir=str(sweep_dir), name=state.start.name, status="ended" if done else "stopped",
                        runs=rows)


def planned_groups(sweep_dir: Path) -> dict[str, Any]:
    """run_id -> (group, seed) for a sweep directory (compare groups runs with it)."""
    for e in read_sweep_events(sweep_dir):
        if isinstance(e, SweepStart):
            return {p.run_id: p for p in e.runs}
    raise FileNotFoundError(f"{sweep_dir}: not a sweep directory (no sweep_start in sweep.jsonl)")
