"""What ``staircase view`` knows about the runs it serves, kept up to date by reading each ledger
incrementally (by byte offset, never the whole file again) and never writing anything.

A :class:`RunIndex` holds a run's :class:`~harness.state.RunState`, its staircase points (built as
:func:`harness.analysis.staircase.load_staircase` builds them) and, per iteration, the byte offsets
of its events: an iteration page reads only its own lines. Transcripts are never held in memory,
so the server's memory grows with the number of events, not with the ledger's size.
"""

from __future__ import annotations

import json
import os
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.staircase import Point, Staircase, point_of, staircase_of
from harness.events import Event, IterationEnd, IterationStart, ModelCall, ScoreEvent, Stopped, parse_event
from harness.ledger import EVENTS, lock_holder
from harness.scorer.record import Score
from harness.state import RunState

CHUNK = 8 << 20
# Directories inside a run (or a sweep) that never hold runs: not walked.
_NOT_RUNS = {"workspace", "workspace.git", "iterations", "target", ".git", "node_modules", "__pycache__"}


@dataclass
class IterationRow:
    """One line of the run page's table of iterations."""

    iteration: int
    status: str = "running"
    qps: float | None = None
    recall: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    tokens: int = 0
    dollars: float = 0.0
    tool_calls: int = 0
    started: float | None = None
    ended: float | None = None
    reason: str = ""
    relative: str = ""
    verdict: str = ""
    message: str = ""

    def json(self) -> dict[str, Any]:
        wall = (self.ended - self.started) if self.started is not None and self.ended is not None else None
        return {"iteration": self.iteration, "status": self.status, "qps": self.qps, "recall": self.recall,
                "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "tokens": self.tokens, "dollars": self.dollars,
                "tool_calls": self.tool_calls, "wall_s": wall, "reason": self.reason, "relative": self.relative,
                "verdict": self.verdict, "message": self.message[:200]}


@dataclass
class RunIndex:
    """One run directory, read so far up to ``offset``."""

    run_dir: Path
    offset: int = 0
    state: RunState = field(default_factory=RunState)
    points: list[Point] = field(default_factory=list)
    rows: dict[int, IterationRow] = field(default_factory=dict)
    scores: dict[int, Score] = field(default_factory=dict)  # the last score of each iteration
    version: int = 0  # grows whenever something new was read
    _best: float | None = None
    _starts: dict[int, array] = field(default_factory=dict)  # iteration -> byte offsets of its events
    _lengths: dict[int, array] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> bool:
        """Read what was appended since the last call (a last line still being written is left for
        the next call); True when something new was read."""
        path = self.run_dir / EVENTS
        with self._lock:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return False
            if size <= self.offset:
                return False
            with path.open("rb") as f:
                f.seek(self.offset)
                while self.offset < size:
                    chunk = f.read(CHUNK)
                    end = chunk.rfind(b"\n") + 1
                    if end == 0:
                        if len(chunk) < CHUNK:
                            break  # a torn last line: read it once it is whole
                        chunk += f.readline()  # one line longer than a chunk
                        end = chunk.rfind(b"\n") + 1
                        if end == 0:
                            break
                    pos = 0
                    while pos < end:
                        nl = chunk.index(b"\n", pos)
                        self._add(chunk[pos:nl], self.offset + pos, nl + 1 - pos)
                        pos = nl + 1
                    self.offset += end
                    f.seek(self.offset)
            self.version += 1
            return True

    def _add(self, raw: bytes, start: int, length: int) -> None:
        try:
            e = parse_event(json.loads(raw))
        except ValueError:
            return  # a line torn by a crash (the writer cuts it when it next opens the run)
        self.state.apply(e)
        n = getattr(e, "iteration", None)
        if n is None:
            return
        self._starts.setdefault(n, array("q")).append(start)
        self._lengths.setdefault(n, array("q")).append(length)
        row = self.rows.get(n) or self.rows.setdefault(n, IterationRow(n))
        match e:
            case IterationStart():
                row.started = row.started if row.started is not None else e.ts
            case ModelCall():
                row.tokens += e.usage.input_tokens + e.usage.output_tokens
                row.dollars += e.cost_usd
            case IterationEnd():
                row.ended, row.tool_calls = e.ts, e.tool_calls
                if row.status == "running":
                    row.status = "no score"
                    row.reason = e.reason.value
            case ScoreEvent():
                self._score(e, row)

    def _score(self, e: ScoreEvent, row: IterationRow) -> None:
        s = e.score
        if s.valid and s.qps:
            self._best = max(self._best or 0.0, s.qps)
        p = point_of(e, self.state, self._best)
        self.points.append(p)
        self.scores[e.iteration] = s
        row.status, row.qps, row.recall = s.status.value, s.qps, s.recall
        row.p50_ms, row.p99_ms = s.p50_ms, s.p99_ms
        row.reason = "" if s.valid else s.reason
        row.message = p.message
        row.verdict = p.verdict or ""
        if p.relative_qps is not None:
            row.relative = f"{p.relative_qps:.3f}x"
            if p.relative_low is not None and p.relative_high is not None:
                row.relative += f" [{p.relative_low:.3f}, {p.relative_high:.3f}]"

    def staircase(self) -> Staircase:
        """The run's staircase as :func:`load_staircase` would read it now."""
        with self._lock:
            return staircase_of(self.run_dir, self.state, list(self.points))

    def status(self) -> str:
        """running, ended, stopped, failed (stopped by an error) or interrupted (no process holds a run
        that did not end)."""
        s = self.state
        if s.end is not None:
            return "ended"
        if s.stopped is not None:
            return "failed" if isinstance(s.stopped, Stopped) and s.stopped.kind == "error" else "stopped"
        return "running" if lock_holder(self.run_dir) else "interrupted"

    def iterations(self) -> list[int]:
        with self._lock:
            return sorted(self._starts)

    def events_of(self, n: int, first: int = 0, count: int | None = None) -> tuple[list[Event], int]:
        """Events ``first`` .. ``first + count`` of iteration ``n`` (read by offset), and how many it has."""
        with self._lock:
            starts, lengths = self._starts.get(n, array("q")), self._lengths.get(n, array("q"))
            stop = len(starts) if count is None else min(len(starts), first + count)
            spans = [(starts[i], lengths[i]) for i in range(first, stop)]
            total = len(starts)
        out: list[Event] = []
        with (self.run_dir / EVENTS).open("rb") as f:
            for start, length in spans:
                f.seek(start)
                out.append(parse_event(json.loads(f.read(length))))
        return out, total


class Registry:
    """The runs under the directories ``staircase view`` was given: found by walking them (a directory
    with ``events.jsonl`` is a run, so a sweep's runs are found too), looked up by id only."""

    def __init__(self, roots: list[Path], rescan_s: float = 2.0) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.rescan_s = rescan_s
        self.runs: dict[str, RunIndex] = {}
        self._scanned = 0.0
        self._lock = threading.Lock()

    def _id(self, root_i: int, rel: Path) -> str:
        name = rel.as_posix() if str(rel) != "." else self.roots[root_i].name
        return name if len(self.roots) == 1 else f"{self.roots[root_i].name}/{name}"

    def scan(self, force: bool = False) -> dict[str, RunIndex]:
        with self._lock:
            if not force and time.monotonic() - self._scanned < self.rescan_s:
                return self.runs
            self._scanned = time.monotonic()
            for i, root in enumerate(self.roots):
                for d, dirs, files in os.walk(root, followlinks=False):
                    if EVENTS in files:
                        dirs.clear()  # a run holds no runs
                        rid = self._id(i, Path(d).relative_to(root))
                        if rid not in self.runs:
                            self.runs[rid] = RunIndex(Path(d))
                    else:
                        dirs[:] = sorted(x for x in dirs if x not in _NOT_RUNS and not x.startswith("."))
            return self.runs

    def get(self, rid: str) -> RunIndex | None:
        """The run with this id, read up to date; None for anything that is not a run found here."""
        run = self.scan().get(rid)
        if run is not None:
            run.refresh()
        return run
