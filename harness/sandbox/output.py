"""Bounded capture of a command's output: whatever it prints, memory stays at head + tail bytes
per stream, and the full text goes to a log file up to a cap."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO


def cut_marker(n: int) -> str:
    return f"\n[... {n} bytes cut ...]\n"


class StreamCapture:
    """The first ``head`` and last ``tail`` bytes of one stream, and its total length."""

    def __init__(self, head: int, tail: int) -> None:
        self._head_cap, self._tail_cap = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data and self._tail_cap > 0:
            self.tail += data[-self._tail_cap :]
            excess = len(self.tail) - self._tail_cap
            if excess > 0:
                del self.tail[:excess]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not self.truncated:
            return head + tail
        return head + cut_marker(self.total - len(self.head) - len(self.tail)) + tail


class FullOutputLog:
    """Both streams in arrival order, written to ``path`` only once something was cut for the
    model (until then the few bytes seen are held back), and never more than ``cap`` bytes."""

    def __init__(self, path: Path | None, cap: int, hold_limit: int) -> None:
        self.path = path
        self._cap, self._hold_limit = cap, hold_limit
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._file: BinaryIO | None = None
        self.written = 0
        self.dropped = 0

    def feed(self, data: bytes, cut_happened: bool) -> None:
        if self.path is None:
            return
        if self._file is None:
            self._held.append(data)
            self._held_bytes += len(data)
            if not cut_happened and self._held_bytes <= self._hold_limit:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("wb")
            pending, self._held = self._held, []
            for chunk in pending:
                self._write(chunk)
            return
        self._write(data)

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        room = self._cap - self.written
        if room > 0:
            self._file.write(data[:room])
            self.written += min(room, len(data))
        self.dropped += max(0, len(data) - max(room, 0))

    def close(self) -> str | None:
        """Path of the file when one was written."""
        if self._file is None:
            return None
        if self.dropped:
            self._file.write(f"\n[... full output capped at {self._cap} bytes: {self.dropped} more cut ...]\n".encode())
        self._file.close()
        return str(self.path)
