"""The sweep's own record, ``SWEEP/sweep.jsonl``: which runs exist, where each was launched, how each
attempt ended. Append-only, one typed event per line, fsynced; one writer at a time (``SWEEP/.lock``,
the same lock and torn-line repair as a run's ledger). The runs' own ledgers stay the truth about
the runs: this record says what the sweep did with them.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from harness.ledger import RunLocked, _lines, _repair_tail, _take_lock
from harness.sweep.spec import PlannedRun

SWEEP_EVENTS = "sweep.jsonl"
SWEEP_LOCK = ".lock"


class _SweepEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    seq: int = -1
    ts: float = 0.0


class SweepStart(_SweepEvent):
    type: Literal["sweep_start"] = "sweep_start"
    name: str
    spec: dict[str, Any]
    runs: list[PlannedRun]
    host: str = ""


class SweepResume(_SweepEvent):
    type: Literal["sweep_resume"] = "sweep_resume"
    host: str = ""
    pid: int = 0
    executor: str = ""


class RunLaunch(_SweepEvent):
    """A run handed to a process: started (``start``) or continued (``resume``) there."""

    type: Literal["run_launch"] = "run_launch"
    run_id: str
    action: Literal["start", "resume"]
    executor: Literal["local", "ray"]
    node: str  # the host name (local) or the Ray node id
    host: str = ""
    pid: int | None = None
    moved_from: str | None = None  # Ray: the node that died with this run


class RunCopy(_SweepEvent):
    """Ray: the head's copy of a run refreshed from its node (at an iteration's end, and last at its exit)."""

    type: Literal["run_copy"] = "run_copy"
    run_id: str
    node: str
    iterations: int
    bytes: int


class RunExit(_SweepEvent):
    """How one launch ended. ``ended``: the run reached its end; ``stopped``: it stopped resumably
    (a signal, an outage); ``failed``: its process failed; ``lost``: its node died."""

    type: Literal["run_exit"] = "run_exit"
    run_id: str
    status: Literal["ended", "stopped", "failed", "lost"]
    node: str = ""
    exit_code: int | None = None
    detail: str = ""


class SweepEnd(_SweepEvent):
    type: Literal["sweep_end"] = "sweep_end"
    runs: int


SweepEvent = Annotated[SweepStart | SweepResume | RunLaunch | RunCopy | RunExit | SweepEnd,
                       Field(discriminator="type")]
_ADAPTER: TypeAdapter[SweepEvent] = TypeAdapter(SweepEvent)


class SweepLocked(RuntimeError):
    """Another process drives this sweep."""


class SweepRecord:
    """The one writer of a sweep's record."""

    def __init__(self, sweep_dir: Path) -> None:
        self.dir = Path(sweep_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / SWEEP_EVENTS
        try:
            self._lock_fd: int | None = _take_lock(self.dir / SWEEP_LOCK)
        except RunLocked as e:
            raise SweepLocked(str(e).replace("one process writes a run", "one process drives a sweep")) from None
        try:
            _repair_tail(self.path)
            self._seq = sum(1 for _ in _lines(self.path))
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def append(self, event: _SweepEvent) -> SweepEvent:
        assert self._fd is not None, "the sweep record is closed"
        event = event.model_copy(update={"seq": self._seq, "ts": round(time.time(), 3)})
        line = event.model_dump_json().encode() + b"\n"
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self._seq += 1
        return _ADAPTER.validate_json(line)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def read_sweep_events(sweep_dir: Path) -> Iterator[SweepEvent]:
    """The sweep's events, oldest first; read-only (safe while the sweep runs)."""
    for raw in _lines(Path(sweep_dir) / SWEEP_EVENTS):
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        yield _ADAPTER.validate_python(data)


@dataclass
class RunRecord:
    planned: PlannedRun
    launches: list[RunLaunch] = field(default_factory=list)
    exits: list[RunExit] = field(default_factory=list)
    copies: int = 0
    last_copy: RunCopy | None = None

    @property
    def node(self) -> str:
        return self.launches[-1].node if self.launches else ""


@dataclass
class SweepState:
    start: SweepStart | None = None
    runs: dict[str, RunRecord] = field(default_factory=dict)
    resumes: int = 0
    end: SweepEnd | None = None

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepState:
        state = cls()
        for e in read_sweep_events(sweep_dir):
            state.apply(e)
        return state

    def apply(self, e: SweepEvent) -> None:
        match e:
            case SweepStart():
                self.start = e
                self.runs = {p.run_id: RunRecord(p) for p in e.runs}
            case SweepResume():
                self.resumes += 1
            case RunLaunch():
                self.runs[e.run_id].launches.append(e)
            case RunExit():
                self.runs[e.run_id].exits.append(e)
            case RunCopy():
                rec = self.runs[e.run_id]
                rec.copies += 1
                rec.last_copy = e
            case SweepEnd():
                self.end = e


def this_host() -> str:
    return platform.node()
