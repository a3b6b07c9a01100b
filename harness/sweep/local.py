"""The local executor: each run a process on this machine (``staircase run`` / ``resume``), at most
``concurrency`` at once, first come first served. A thin process pool on one thread: start, poll,
record how each ended.

Runs' agents work at the same time; their scorings take turns on the machine's scorer slot
(:mod:`harness.scorer.slot`), which every scoring holds. A run's process gets SIGTERM when the sweep
process dies (``PR_SET_PDEATHSIG``), so a killed sweep leaves no run working unwatched: each stops
resumably and ``staircase sweep resume`` continues it. SIGINT/SIGTERM to the sweep stop every run
cleanly the same way.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Literal

from harness.ledger import lock_holder
from harness.sweep.record import RunLaunch, this_host
from harness.sweep.sweep import Job, Sweep

_PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # not Linux: no parent-death signal
    _LIBC = None


def default_run_command() -> list[str]:
    return [sys.executable, "-m", "harness.cli"]


def run_argv(prefix: list[str], job: Job) -> list[str]:
    if job.action == "start":
        return [*prefix, "run", str(job.config_path), "--run-dir", str(job.run_dir), "--json"]
    return [*prefix, "resume", str(job.run_dir), "--json"]


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def launch(argv: list[str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start one run's process, its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                preexec_fn=die_with_parent)


class LocalExecutor:
    name: Literal["local"] = "local"

    def __init__(self, concurrency: int, run_command: list[str] | None = None, cwd: Path | None = None,
                 poll_s: float = 0.2, lock_wait_s: float = 120.0) -> None:
        self.concurrency = concurrency
        self.prefix = run_command or default_run_command()
        self.cwd, self.poll_s, self.lock_wait_s = cwd, poll_s, lock_wait_s
        self.stopping: str | None = None

    def run(self, jobs: list[Job], sweep: Sweep) -> None:
        queue = deque(jobs)
        live: dict[subprocess.Popen[bytes], Job] = {}
        held_since: dict[str, float] = {}
        previous = self._install_handlers(live)
        try:
            while queue or live:
                for _ in range(len(queue)):
                    if len(live) >= self.concurrency or self.stopping:
                        break
                    job = queue.popleft()
                    holder = lock_holder(job.run_dir)
                    if holder:  # a process of an earlier sweep still lets go of it (stopping)
                        first = held_since.setdefault(job.run.run_id, time.monotonic())
                        if time.monotonic() - first < self.lock_wait_s:
                            queue.append(job)
                            continue
                        sweep.exited(job, this_host(), None)
                        continue
                    proc = launch(run_argv(self.prefix, job), job.log_path, self.cwd)
                    live[proc] = job
                    sweep.add(RunLaunch(run_id=job.run.run_id, action=job.action, executor="local", node=this_host(),
                                        host=this_host(), pid=proc.pid))
                for proc in [p for p in live if p.poll() is not None]:
                    sweep.exited(live.pop(proc), this_host(), proc.returncode)
                if self.stopping and not live:
                    break
                time.sleep(self.poll_s)
        finally:
            for proc in live:  # an exception of our own: no run is left unwatched
                proc.terminate()
            for proc, job in live.items():
                proc.wait()
                sweep.exited(job, this_host(), proc.returncode)
            self._restore_handlers(previous)

    def _install_handlers(self, live: dict[subprocess.Popen[bytes], Job]) -> dict[int, object]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(signum: int, _frame: FrameType | None) -> None:
            first = self.stopping is None
            self.stopping = signal.Signals(signum).name
            for proc in live:  # each run stops cleanly (a second signal: at once)
                proc.send_signal(signal.SIGTERM if first else signal.SIGKILL)

        return {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_handlers(previous: dict[int, object]) -> None:
        for s, h in previous.items():
            signal.signal(s, h)  # type: ignore[arg-type]
