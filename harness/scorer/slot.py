"""The machine's scorer slot: on one machine, one measurement at a time.

Several runs on one machine (a sweep, or two users) build and serve their submissions on the same
server and load-generator CPUs; two scorings at once would disturb each other's timing. Every
scoring therefore holds the machine-wide slot from its build to its last timed round: an exclusive
``flock`` on a file in a directory every process on the machine sees (``$STAIRCASE_SLOT_DIR``,
default ``/tmp/staircase-slots``). The lock is released by the kernel when its holder dies, so a
killed scoring never blocks the machine. The slot's name (``host/slot-0``) goes into the score
record with the time the measurement held it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


def slot_dir() -> Path:
    return Path(os.environ.get("STAIRCASE_SLOT_DIR") or "/tmp/staircase-slots")


@dataclass
class Held:
    """A slot held: its name, how long it was waited for, and since when it is held (UTC)."""

    name: str
    waited_s: float
    since: datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


@contextmanager
def scorer_slot(*, on_wait: Callable[[str], None] | None = None, poll_s: float = 0.1) -> Iterator[Held]:
    """Hold the machine's scorer slot for the block. ``on_wait`` is told once, with who holds it,
    when the slot is busy; the block starts when the holder lets go (or dies).

    Waiters are served first come, first served: each takes a ticket (a file in ``queue/`` named
    by the time it came, locked by its owner while it waits) and tries the slot only when no live
    ticket is older, so a process that scores back to back cannot starve the others. A ticket
    whose owner died is unlocked by the kernel and removed by the next waiter that looks."""
    d = slot_dir()
    queue = d / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    for folder in (d, queue):
        try:
            os.chmod(folder, 0o1777)  # shared by every user of the machine, like /tmp
        except PermissionError:
            pass
    name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    pending = queue / f".{name}"
    ticket_fd = os.open(pending, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(ticket_fd, fcntl.LOCK_EX)  # locked before it is visible: never taken for a dead one
    ticket = queue / name
    os.rename(pending, ticket)
    path = d / "slot-0.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    t0 = time.monotonic()
    try:
        told = False
        while True:
            if not any(_live(t) for t in sorted(queue.glob("[0-9]*")) if t.name < name):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
            if not told and on_wait is not None:
                holder = _read(path)
                on_wait(f"waiting for the machine's scorer slot (held by {holder or 'another scoring'})")
                told = True
            time.sleep(poll_s)
        note = f"pid {os.getpid()} on {socket.gethostname()} since {iso(utc_now())}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        yield Held(name=f"{socket.gethostname()}/slot-0", waited_s=round(time.monotonic() - t0, 3), since=utc_now())
    finally:
        os.close(fd)  # releases the slot
        ticket.unlink(missing_ok=True)
        os.close(ticket_fd)


def _live(ticket: Path) -> bool:
    """Whether a waiter's ticket is held by a live process (a dead one's is removed)."""
    try:
        fd = os.open(ticket, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    ticket.unlink(missing_ok=True)  # we could lock it: its owner is gone
    return False


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
