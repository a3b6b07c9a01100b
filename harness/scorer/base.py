"""What the run loop needs of a scorer: the ``Scorer`` protocol.

``BenchmarkScorer`` (``harness/scorer/scorer.py``) is the implementation that measures; tests and
benchmarks of the loop use stubs that fit the same protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from harness.scorer.record import Score


class Scorer(Protocol):
    """Turns a submission into a ``Score``."""

    def score(self, path: Path, *, use_cache: bool = True, variant: str = "best") -> Score:
        """Score the submission at ``path`` (a crate of the skeleton's shape, or a KCORES entry;
        ``variant`` picks which of an entry's trees). Every way the submission can fail is a
        ``Score`` with a status and a reason. A failure of the harness's own machinery is raised
        instead, never recorded as the submission's: ``harness.docker_util.EngineUnavailable``
        when the Docker engine stayed unreachable past its wait limit (the caller waits and scores
        again)."""
        ...

    def close(self) -> None:
        """Release what the scorer holds (its runner's engine connection, any container left
        running). Called once, when the scorer is no longer needed. A scorer that holds nothing
        does nothing here: a class that subclasses the protocol explicitly inherits this no-op."""
        ...
