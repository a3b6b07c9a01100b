"""The machine's scorer slot: one holder at a time, first come first served, never held by the dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.scorer.slot import scorer_slot

# A process that takes the slot `times` times back to back, holding it `hold` s each time, and
# appends "<name> <start> <end>" per hold to the log.
TAKER = r"""
import sys, time
from harness.scorer.slot import scorer_slot
name, times, hold, log = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
for _ in range(times):
    with scorer_slot() as held:
        t0 = time.time()
        time.sleep(hold)
        with open(log, "a") as f:
            f.write(f"{name} {t0} {time.time()} {held.name}\n")
"""


def _take(name: str, times: int, hold: float, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", TAKER, name, str(times), str(hold), str(log)], env=env)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("STAIRCASE_SLOT_DIR", str(tmp_path / "slots"))
    return {**os.environ, "STAIRCASE_SLOT_DIR": str(tmp_path / "slots")}


def _wait_for(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _holds(log: Path) -> list[tuple[str, float, float]]:
    rows = [ln.split() for ln in log.read_text().splitlines()]
    return sorted(((r[0], float(r[1]), float(r[2])) for r in rows), key=lambda r: r[1])


def test_holds_never_overlap_and_waiters_are_served_in_arrival_order(tmp_path: Path, env: dict[str, str]) -> None:
    log = tmp_path / "holds.log"
    queue = tmp_path / "slots" / "queue"
    greedy = _take("greedy", 3, 3.0, log, env)  # back to back: must not starve the others
    _wait_for(lambda: (tmp_path / "slots" / "slot-0.lock").is_file() and not list(queue.glob("[0-9]*"))[1:])
    waiters = []
    for k, name in enumerate(("a", "b", "c"), start=2):
        waiters.append(_take(name, 1, 0.1, log, env))
        _wait_for(lambda k=k: len(list(queue.glob("[0-9]*"))) >= k)  # its ticket is in the queue
    for p in [greedy, *waiters]:
        assert p.wait(timeout=60) == 0
    holds = _holds(log)
    assert len(holds) == 6
    for (_, _, end), (_, start, _) in zip(holds, holds[1:], strict=False):
        assert end <= start, holds  # one holder at a time
    order = [h[0] for h in holds]
    # greedy's first hold, then the waiters in the order they came, then greedy's other holds
    assert order == ["greedy", "a", "b", "c", "greedy", "greedy"], order


def test_a_killed_holder_or_waiter_does_not_block_the_slot(tmp_path: Path, env: dict[str, str]) -> None:
    log = tmp_path / "holds.log"
    holder = _take("holder", 1, 60, log, env)
    time.sleep(1.0)
    dead_waiter = _take("dead", 1, 0.1, log, env)  # queued behind the holder, then killed
    time.sleep(0.5)
    os.kill(holder.pid, signal.SIGKILL)
    os.kill(dead_waiter.pid, signal.SIGKILL)
    holder.wait()
    dead_waiter.wait()
    t0 = time.monotonic()
    waits = []
    with scorer_slot(on_wait=waits.append) as held:
        assert held.name.endswith("/slot-0")
    assert time.monotonic() - t0 < 5
    assert not log.exists()  # neither the killed holder nor the killed waiter ever wrote
    assert not list((tmp_path / "slots" / "queue").glob("[0-9]*"))  # tickets of the dead cleared
