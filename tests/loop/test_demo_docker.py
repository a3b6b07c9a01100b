"""The demo's path end to end, for real: the scripted reference model in the Docker sandbox (writing
the stages' files, measuring with `devbench --quick`, submitting) and the container scorer, on a
small generated set. `staircase demo` is the same with all ten stages on demo-20k."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.analysis.report import write_report
from harness.analysis.staircase import load_staircase
from harness.config import load_config
from harness.datasets.sources import generate_dataset
from harness.datasets.store import DatasetStore
from harness.events import ScoreEvent, ToolCallEvent, Verified
from harness.ledger import read_events
from harness.reference import reference_stages, stage_files
from harness.run import Run

pytestmark = [pytest.mark.docker, pytest.mark.rust, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_reference_trajectory_runs_in_the_sandbox_and_is_scored_in_containers(
    sandbox_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAIRCASE_CACHE", str(tmp_path / "cache"))  # measured here, never a cached score
    data = tmp_path / "data"
    generate_dataset(DatasetStore(data), "demo-small", n=3_000, queries=300, dev_queries=100, seed=3)
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        f"dataset.data_dir={data}", "dataset.name=demo-small", f"runs_dir={tmp_path / 'runs'}",
        "budget.max_iterations=2", f"sandbox.image={sandbox_image}", f"scorer.image={sandbox_image}",
    ])
    run = Run.create(cfg, tmp_path / "run")
    summary = run.execute()
    assert summary.iterations == 2 and summary.end_reason == "max_iterations: 2 of 2 used"

    events = list(read_events(run.dir))
    scores = [e.score for e in events if isinstance(e, ScoreEvent)]
    assert [s.status.value for s in scores] == ["valid", "valid"], [s.reason for s in scores]
    assert all(s.recall == 1.0 and s.qps and not s.cached for s in scores)  # two exact scans

    benches = [e for e in events if isinstance(e, ToolCallEvent) and "devbench" in e.arguments]
    assert len(benches) == 2
    for b in benches:
        assert b.exit_code == 0, b.output
        assert "quick (release with lto=off" in b.output and "recall@10   1.0000" in b.output

    # Each submission is the stage's code, as the scripted model wrote it.
    stages = reference_stages()[:2]
    for n, stage in enumerate(stages, start=1):
        tree = run.workspace.repo.git.show(f"sub-{n:04d}:src/db.rs")
        assert tree == stage_files(stage)["src/db.rs"].rstrip("\n")

    # Paired rounds in containers (a `loadgen rounds` session next to each server): every valid
    # score has its ratio to the anchor; the second, claiming a new best over the first, was
    # rematched against it; at the end the two were verified against each other and the anchor.
    for s in scores:
        assert s.anchor is not None and s.relative_qps == s.anchor.ratio and s.anchor.rounds == 6, s.reason
        assert not [f for f in s.findings if "one load generator per pass" in f], s.findings
        assert s.anchor.low <= s.anchor.ratio <= s.anchor.high and s.slot and s.measured_from
    if (scores[1].qps or 0) > (scores[0].qps or 0):
        step = scores[1].step
        assert step is not None and step.against_iteration == 1 and step.paired.against == "iteration 1"
    verified = [e for e in events if isinstance(e, Verified)]
    assert len(verified) == 1 and {x.iteration for x in verified[0].verification.entries} == {1, 2}
    assert all(x.recall == 1.0 and x.relative is not None for x in verified[0].verification.entries)

    png, page = write_report(load_staircase(run.dir), "iterations", run.dir)
    assert png.stat().st_size > 10_000 and "Stage 2" in page.read_text()
    assert json.loads((run.dir / "iterations" / "0002" / "score.json").read_text())["status"] == "valid"
