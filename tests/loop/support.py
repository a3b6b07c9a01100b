"""A run with a local sandbox and a stub scorer: the loop's mechanics without Docker or cargo.

Also a driver (``python -m tests.loop.support RUN_DIR KILL_AT WHEN``) that runs or resumes such a run
and SIGKILLs itself at its KILL_AT-th ledger append, before or after the line is written.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

from harness.config import RunConfig, load_config
from harness.datasets.sources import generate_dataset
from harness.datasets.store import DatasetStore
from harness.events import Event, IterationEnd, RunEnd, ScoreEvent, Submission
from harness.ledger import Ledger, read_events
from harness.run import Run
from harness.sandbox.local_backend import LocalSandbox
from harness.scorer.base import Scorer
from harness.scorer.record import Hardware, Score, Status
from harness.scorer.submission import tree_hash


class StubScorer(Scorer):
    """A score that depends only on the tree: the same tree always gets the same score."""

    def __init__(self) -> None:
        self.calls = 0

    def close(self) -> None:
        pass

    def score(self, path: Path, **_: object) -> Score:
        self.calls += 1
        h = tree_hash(Path(path))
        qps = 100 + int(h[:6], 16) % 900
        valid = int(h[6], 16) % 4 != 0
        return Score(status=Status.VALID if valid else Status.INVALID, reason="stub", valid=valid, qps=float(qps),
                     recall=0.99 if valid else 0.5, recall_floor=0.95, protocol="stub", dataset="tiny",
                     dataset_sha256="0", tree_hash=h, settings_hash="0",
                     hardware=Hardware(cpu_model="stub", host_cpus=1, server_cpus="0", loadgen_cpus="1",
                                       memory_limit="1g", runner="stub"),
                     scored_at=datetime.now(UTC).isoformat())


def write_script(path: Path, episodes: int) -> Path:
    eps = []
    for i in range(1, episodes + 1):
        eps.append([
            {"name": "write_file", "arguments": {"path": "src/distance.rs", "content": f"// version {i}\n"}},
            {"name": "bash", "arguments": {"command": f"echo 'iteration {i}' >> NOTES.md"}},
            {"name": "read_file", "arguments": {"path": "src/distance.rs"}},
            {"name": "submit", "arguments": {"message": f"version {i}"}},
        ])
    path.write_text(yaml.safe_dump({"episodes": eps}))
    return path


def make_config(tmp: Path, episodes: int = 5, **overrides: object) -> RunConfig:
    data_dir = tmp / "data"
    store = DatasetStore(data_dir)
    if not store.exists("tiny"):
        generate_dataset(store, "tiny", n=300, queries=10, dev_queries=5, dim=8, seed=1)
    script = write_script(tmp / "script.yaml", episodes)
    sets = [f"dataset.data_dir={data_dir}", "dataset.name=tiny", f"model.script={script}",
            f"runs_dir={tmp / 'runs'}", "budget.max_iterations=50"] + [f"{k}={v}" for k, v in overrides.items()]
    return load_config(None, sets)


def factories() -> dict[str, object]:
    scorer = StubScorer()
    return {"sandbox_factory": lambda run: LocalSandbox(run.workspace.path),
            "scorer_factory": lambda run: scorer}


def ledger_digest(run_dir: Path) -> dict[str, object]:
    """What must be identical between an interrupted-and-resumed run and an uninterrupted one."""
    events = list(read_events(run_dir))
    return {
        "submissions": [(e.iteration, e.tag, e.message) for e in events if isinstance(e, Submission)],
        "scores": [(e.iteration, e.score.tree_hash, e.score.status.value, e.score.qps)
                   for e in events if isinstance(e, ScoreEvent)],
        "iteration_ends": [e.iteration for e in events if isinstance(e, IterationEnd)],
        "run_end": [e.reason for e in events if isinstance(e, RunEnd)],
    }


def tree_of(run_dir: Path, tag: str) -> str:
    from harness.workspace import Workspace

    ws = Workspace(run_dir / "workspace", run_dir / "workspace.git")
    return str(ws.repo.git.rev_parse(f"{tag}^{{tree}}"))


def _drive(run_dir: Path, kill_at: int, when: str, tmp: Path) -> None:
    if kill_at > 0:
        original = Ledger.append
        count = {"n": 0}

        def append(self: Ledger, event: Event) -> Event:
            count["n"] += 1
            if count["n"] == kill_at and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            event = original(self, event)
            if count["n"] == kill_at and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return event

        Ledger.append = append  # type: ignore[method-assign]
    if (run_dir / "events.jsonl").exists():
        run = Run.open(run_dir, **factories())  # type: ignore[arg-type]
    else:
        run = Run.create(make_config(tmp), run_dir, **factories())  # type: ignore[arg-type]
    run.execute()


if __name__ == "__main__":
    _drive(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))


def digest_hash(d: dict[str, object]) -> str:
    return hashlib.sha256(repr(d).encode()).hexdigest()
