"""The local executor: a sweep of 2 configs x 2 seeds (the scripted model, the stand-in driver),
SIGKILLed with all its runs in the middle and resumed: every run ends exactly once, no iteration is
lost or done twice, the runs that had ended are not launched again, and the scorings of runs that
went at the same time never overlap on the machine's scorer slot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.ledger import read_events
from harness.state import RunState
from harness.sweep.record import SweepState
from tests.sweep.support import (
    REPO_ROOT,
    assert_no_overlap,
    check_runs_whole,
    env,
    slot_intervals,
    staircase,
    write_sweep,
)

pytestmark = pytest.mark.slow
ITERATIONS = {"short": 3, "long": 4}


def test_sweep_killed_and_resumed(tmp_path: Path) -> None:
    # Three at once: the two short runs end together, the long one that started with them is then mid-way.
    sweep_file = write_sweep(tmp_path, seeds=[1, 2], iterations=ITERATIONS, concurrency=3)
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(sweep_file), "--sweep-dir", str(out),
                             "--json"], cwd=REPO_ROOT, env=env(tmp_path), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(r.exits for r in SweepState.read(out).runs.values()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no run ended in 120 s"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and every run it had going, at once
        proc.wait()
        gone = time.monotonic() + 20
        while time.monotonic() < gone:  # until the killed runs are reaped (no PID of theirs answers)
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    before = SweepState.read(out)
    ended_before = {k for k in before.runs if RunState.from_events(read_events(out / "runs" / k)).end}
    launched_before = {k for k, r in before.runs.items() if r.launches}
    started_before = {k for k in before.runs if RunState.from_events(read_events(out / "runs" / k)).start}
    assert ended_before and launched_before - ended_before, "killed with one run ended and another mid-way"

    status = staircase("sweep", "status", str(out), "--json", tmp=tmp_path)
    assert status.returncode == 0, status.stderr
    rows = {r["run_id"]: r["status"] for r in json.loads(status.stdout)["runs"]}
    assert {k for k, s in rows.items() if s == "ended"} == ended_before
    assert all(s in ("interrupted", "not started", "ended") for s in rows.values()), rows

    r = staircase("sweep", "resume", str(out), "--json", tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["status"] == "ended"

    after = SweepState.read(out)
    for run_id in ended_before:  # left alone
        assert len(after.runs[run_id].launches) == 1
    for run_id in launched_before - ended_before:  # resumed, not started again
        second = "resume" if run_id in started_before else "start"  # killed before its first event
        assert [x.action for x in after.runs[run_id].launches] == ["start", second]
        assert [x.status for x in after.runs[run_id].exits] == ["lost", "ended"]
    scores = check_runs_whole(out, ITERATIONS)
    intervals = slot_intervals(scores)
    assert len(intervals) == 2 * 3 + 2 * 4  # every scoring measured (none cached), each once
    assert_no_overlap(intervals)
    assert after.end is not None and after.resumes == 1

    # compare by sweep: the runs grouped by configuration, over their seeds; the overlay plot.
    c = staircase("compare", str(out), "--json", "--out", str(tmp_path / "compare.png"), tmp=tmp_path)
    assert c.returncode == 0, c.stderr
    result = json.loads(c.stdout)
    assert {g["group"]: g["seeds"] for g in result["groups"]} == {"short": [1, 2], "long": [1, 2]}
    assert {r["seed"] for r in result["runs"]} == {1, 2} and len(result["runs"]) == 4
    assert Path(result["png"]).stat().st_size > 5000
    listed = staircase("runs", str(out), "--json", tmp=tmp_path)
    assert sorted(r["run"] for r in json.loads(listed.stdout)) == sorted(after.runs)
