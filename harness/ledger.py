"""The run directory's record: one writer that holds a lock, and readers that never write.

``events.jsonl`` holds one typed event (:mod:`harness.events`) per line, each written with one
``write`` and fsynced before the run takes its next step, so a ``kill -9`` loses at most the line
being written. A failed write (a full disk) is cut back to the last whole line before the error is
raised. :class:`Ledger` is the writer: it holds an exclusive lock on the run directory for its
life (a second writer fails at once, naming the holder's PID and host) and repairs a torn last
line when it opens. :func:`read_events` and :class:`EventTail` only read: they open nothing for
writing, take no lock, and stop before a last line that is still being written.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.events import Event, _Event, event_json, parse_event

EVENTS = "events.jsonl"
STATE = "state.json"
LOCK = ".lock"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class RunLocked(RuntimeError):
    """Another process writes this run directory."""


class DiskFull(OSError):
    """A write in a run or data directory failed for want of space; nothing torn was left."""

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, f"disk full: cannot write {path} ({cause.strerror})")
        self.path = path


def is_disk_full(e: BaseException) -> bool:
    """An OSError for want of space, or a git command that failed for it."""
    if isinstance(e, OSError):
        return e.errno in _DISK_FULL
    return "No space left on device" in str(e)


def raise_if_disk_full(path: Path, e: OSError) -> None:
    if e.errno in _DISK_FULL:
        raise DiskFull(path, e) from e


class Ledger:
    """The one writer of a run directory's events (and its state snapshot)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / EVENTS
        self._lock_fd = _take_lock(self.run_dir / LOCK)
        self.listeners: list[Callable[[Event], None]] = []
        try:
            self.repaired_bytes = _repair_tail(self.path)
            self._seq = sum(1 for _ in _lines(self.path))
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def append(self, event: _Event) -> Event:
        """Write one event and make it durable before returning it (with its seq and time)."""
        event = event.model_copy(update={"seq": self._seq, "ts": round(time.time(), 3)})
        line = event_json(event) + b"\n"
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as e:
            try:  # no torn line: cut back to the last whole one
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise_if_disk_full(self.path, e)
            raise
        self._seq += 1
        typed = parse_event(json.loads(line))
        for listener in self.listeners:
            listener(typed)
        return typed

    def events(self) -> Iterator[Event]:
        return read_events(self.run_dir)

    def write_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.run_dir / STATE, state)

    def iteration_dir(self, n: int) -> Path:
        d = self.run_dir / "iterations" / f"{n:04d}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def close(self) -> None:
        """Close the log and give the lock up (idempotent)."""
        if getattr(self, "_lock_fd", None) is not None:
            os.ftruncate(self._lock_fd, 0)  # the note says who writes: nobody now
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def lock_holder(run_dir: Path) -> dict[str, Any] | None:
    """Who writes the run directory now, from the lock file's note: None when nobody does. Takes no
    lock (a reader must never get in a writer's way): on this host the noted PID must be alive; a
    note from another host is believed."""
    try:
        holder = json.loads((Path(run_dir) / LOCK).read_bytes() or b"{}")
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict) or not holder.get("pid"):
        return None
    if holder.get("host") == platform.node():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return holder


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(os.read(fd, 4096) or b"{}")
        except ValueError:
            holder = {}
        os.close(fd)
        raise RunLocked(f"{path.parent} is in use by PID {holder.get('pid', '?')} on host {holder.get('host', '?')} "
                        f"(since {holder.get('since', '?')}): one process writes a run at a time") from None
    info = {"pid": os.getpid(), "host": platform.node(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


# -- reading -----------------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[bytes]:
    """Every complete line (ending in a newline); a last line still being written is left out."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            yield raw


def read_events(run_dir: Path, *types: str) -> Iterator[Event]:
    """The run's events, oldest first (only those of ``types`` when given). Read-only: safe on a run
    that another process is writing."""
    path = Path(run_dir) / EVENTS
    for raw in _lines(path):
        try:
            data = json.loads(raw)
        except ValueError:
            continue  # a line torn by a crash, cut when the writer next opens the run
        if not types or data.get("type") in types:
            yield parse_event(data)


class EventTail:
    """Reads a run's events incrementally by byte offset: each :meth:`read` returns the events
    appended since the last one (for live views; never re-reads the whole file)."""

    def __init__(self, run_dir: Path, offset: int = 0) -> None:
        self.path = Path(run_dir) / EVENTS
        self.offset = offset

    def read(self, max_bytes: int = 64 << 20) -> list[Event]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read(max_bytes)
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        out = []
        for raw in chunk[:end].splitlines():
            try:
                out.append(parse_event(json.loads(raw)))
            except ValueError:
                continue
        self.offset += end
        return out


# -- writing helpers ------------------------------------------------------------------------------


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON: readers see the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w") as f:
            json.dump(data, f, indent=2, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise_if_disk_full(path, e)
        raise


def write_text_durable(path: Path, text: str) -> None:
    """A file of the run directory (a diff, an output): a full disk raises :class:`DiskFull`."""
    try:
        path.write_text(text)
    except OSError as e:
        path.unlink(missing_ok=True)
        raise_if_disk_full(path, e)
        raise


def _repair_tail(path: Path) -> int:
    """Cut a torn last line (no newline, or not JSON); return how many bytes were cut."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        pos, tail, start = size, b"", 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            cut = tail.rfind(b"\n", 0, len(tail) - 1)
            if cut >= 0:
                start = pos + cut + 1
                break
        f.seek(start)
        last = f.read()
        good = last.endswith(b"\n")
        if good:
            try:
                json.loads(last)
            except ValueError:
                good = False
        if good:
            return 0
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
        return size - start


def _json_default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialize {type(o).__name__}")
