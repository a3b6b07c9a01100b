"""kill -9 at many points of a run; each resumed run must end with the same ledger as an uninterrupted one."""

import subprocess
import sys

import pytest

from harness.ledger import read_events
from tests.loop.support import ledger_digest, tree_of

# (ledger append at which to die, before or after the line is written)
KILL_POINTS = [(1, "after"), (2, "before"), (3, "after"), (5, "before"), (8, "after"), (11, "before"),
               (12, "after"), (13, "before"), (15, "after"), (20, "before"), (24, "after"), (29, "before"),
               (33, "after"), (40, "before")]


def _drive(run_dir, tmp, kill_at=0, when="after"):
    return subprocess.run([sys.executable, "-m", "tests.loop.support", str(run_dir), str(kill_at), when, str(tmp)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    r = _drive(tmp / "run", tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    return ledger_digest(tmp / "run"), tmp / "run"


@pytest.mark.parametrize(("kill_at", "when"), KILL_POINTS)
def test_killed_and_resumed_run_matches_uninterrupted(kill_at, when, tmp_path, reference):
    expected, ref_dir = reference
    killed = _drive(tmp_path / "run", tmp_path, kill_at, when)
    assert killed.returncode == -9, f"expected SIGKILL, got {killed.returncode}: {killed.stderr[-2000:]}"
    resumed = _drive(tmp_path / "run", tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = ledger_digest(tmp_path / "run")
    assert got == expected
    for _, tag, _ in got["submissions"]:
        assert tree_of(tmp_path / "run", tag) == tree_of(ref_dir, tag)
    types = [e.type for e in read_events(tmp_path / "run")]
    assert types.count("run_resume") == 1 and types[-1] == "run_end"
