"""The image build's progress lines (no Docker): stage, Dockerfile step and elapsed time, and a quiet
default that still speaks during a long step."""

from __future__ import annotations

import pytest

from harness.sandbox import image
from harness.sandbox.image import BuildReporter


def test_progress_names_the_stage_the_step_and_the_elapsed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(image.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    r = BuildReporter(lines.append, verbose=False, stages=3)
    r.stage("vendoring crates")
    r("vendored 12 crates")  # within the quiet period: not shown
    clock[0] += 75
    r.stage("docker build")
    r("Step 4/9 : RUN cargo build --release")
    clock[0] += 5
    r("   Compiling serde v1.0")  # quiet
    clock[0] += image.QUIET_S
    r("   Compiling tokio v1.0")  # a long step still says where it is
    assert lines == [
        "[image build 0:00 · stage 1/3 vendoring crates] started",
        "[image build 1:15 · stage 2/3 docker build] started",
        "[image build 1:15 · stage 2/3 docker build, step 4/9] RUN cargo build --release",
        "[image build 1:40 · stage 2/3 docker build, step 4/9]    Compiling tokio v1.0",
    ]
    verbose: list[str] = []
    v = BuildReporter(verbose.append, verbose=True, stages=3)
    v.stage("docker build")
    v("a")
    v("b")
    assert len(verbose) == 3 and verbose[-1].endswith("] b")
