"""What the run loop needs of a scorer: the ``Scorer`` protocol.

``BenchmarkScorer`` (``harness/scorer/scorer.py``) is the implementation that measures; tests and
benchmarks of the loop use stubs that fit the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.scorer.record import Score, Verification


@dataclass(frozen=True)
class Incumbent:
    """A run's best valid submission so far, which a claimed new best is rematched against."""

    path: Path  # its tree
    tree: str  # its tree hash (as the scorer computes it)
    qps: float
    label: str  # "iteration 7"
    iteration: int | None = None


class Scorer(Protocol):
    """Turns a submission into a ``Score``."""

    def score(self, path: Path, *, use_cache: bool = True, variant: str = "best",
              incumbent: Incumbent | None = None) -> Score:
        """Score the submission at ``path`` (a crate of the skeleton's shape, or a KCORES entry;
        ``variant`` picks which of an entry's trees). Every way the submission can fail is a
        ``Score`` with a status and a reason. A failure of the harness's own machinery is raised
        instead, never recorded as the submission's: ``harness.docker_util.EngineUnavailable``
        when the Docker engine stayed unreachable past its wait limit (the caller waits and scores
        again). ``incumbent``: the run's best so far, which a new best is rematched against."""
        ...

    def verify(self, entries: list[Incumbent]) -> Verification | None:
        """Rescore ``entries`` (a run's top valid submissions) in paired rounds against each other
        and the anchor. A scorer that cannot (no paired rounds) returns None: the default."""
        return None

    def close(self) -> None:
        """Release what the scorer holds (its runner's engine connection, any container left
        running). Called once, when the scorer is no longer needed. A scorer that holds nothing
        does nothing here: a class that subclasses the protocol explicitly inherits this no-op."""
        ...
