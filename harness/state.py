"""A run's state, rebuilt from its events: the one place that reads meaning out of the ledger.

The loop keeps a :class:`RunState` up to date by applying each event it appends; a resumed run,
``report``, ``runs`` and ``replay`` rebuild the same state by applying the events read from disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from harness.budget import Usage
from harness.events import (
    Event,
    IterationEnd,
    IterationStart,
    RunEnd,
    RunResume,
    RunStart,
    ScoreEvent,
    Stopped,
    Submission,
    Verified,
)
from harness.scorer.record import Score, Verification
from harness.workspace import START_TAG


class _Scored(Protocol):
    @property
    def valid(self) -> bool: ...

    @property
    def qps(self) -> float | None: ...


S = TypeVar("S", bound=_Scored)


def best_valid(items: Iterable[S]) -> S | None:
    """The valid item with the highest QPS (the first of equals), or None: "best valid QPS" is
    decided here and nowhere else."""
    best: S | None = None
    for item in items:
        if item.valid and item.qps and (best is None or item.qps > (best.qps or 0)):
            best = item
    return best


@dataclass(frozen=True)
class Scored:
    """One scored submission as the prompt's history table and the summaries show it."""

    iteration: int
    message: str
    score: Score

    @property
    def valid(self) -> bool:
        return self.score.valid

    @property
    def qps(self) -> float | None:
        return self.score.qps


@dataclass
class RunState:
    """Everything the loop and the readers need to know about a run, from its events alone."""

    start: RunStart | None = None
    usage: Usage = field(default_factory=Usage)
    attempts: dict[int, int] = field(default_factory=dict)  # how often each iteration was started
    started: dict[int, IterationStart] = field(default_factory=dict)  # the last start of each
    ended: set[int] = field(default_factory=set)
    submissions: dict[int, Submission] = field(default_factory=dict)
    history: list[Scored] = field(default_factory=list)
    last_tag: str = START_TAG
    end: RunEnd | None = None
    stopped: Stopped | None = None  # the last stop, when no resume came after it
    resumes: int = 0
    verified: Verification | None = None  # the last verification of the top submissions

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> RunState:
        state = cls()
        for e in events:
            state.apply(e)
        return state

    def apply(self, e: Event) -> None:
        self.usage.add_event(e)
        match e:
            case RunStart():
                self.start = e
            case RunResume():
                self.resumes += 1
                self.stopped = None
            case IterationStart():
                self.attempts[e.iteration] = self.attempts.get(e.iteration, 0) + 1
                self.started[e.iteration] = e
            case Submission():
                self.submissions[e.iteration] = e
                self.last_tag = e.tag
            case ScoreEvent():
                sub = self.submissions.get(e.iteration)
                self.history.append(Scored(e.iteration, sub.message if sub else "", e.score))
            case IterationEnd():
                self.ended.add(e.iteration)
            case Stopped():
                self.stopped = e
            case RunEnd():
                self.end = e
            case Verified():
                self.verified = e.verification

    @property
    def last_score(self) -> Score | None:
        return self.history[-1].score if self.history else None

    def best(self) -> Scored | None:
        return best_valid(self.history)

    def scored(self, n: int) -> bool:
        return any(s.iteration == n for s in self.history)

    def interrupted(self) -> int | None:
        """The iteration a killed process left started but not ended, if any."""
        if not self.started:
            return None
        n = max(self.started)
        return None if n in self.ended else n

    @property
    def status(self) -> str:
        if self.end is not None:
            return "ended"
        return "stopped" if self.stopped is not None else "running"
