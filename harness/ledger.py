"""The run directory and its append-only event log.

``events.jsonl`` is the record of a run: one JSON object per line, each flushed and fsynced before
the run takes its next step, so a ``kill -9`` loses at most the line being written. Opening a
ledger repairs a torn last line (cut at the last complete one). ``state.json`` is a convenience
snapshot, replaced atomically; everything in it can be rebuilt from the events.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EVENTS = "events.jsonl"
STATE = "state.json"


class Ledger:
    """Appends events to a run directory and reads them back."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / EVENTS
        self.repaired_bytes = _repair_tail(self.path)
        self._seq = sum(1 for _ in self.events())
        self._file = self.path.open("ab")

    def append(self, type_: str, **data: Any) -> dict[str, Any]:
        """Append one event and make it durable before returning it."""
        event = {"seq": self._seq, "ts": round(time.time(), 3), "type": type_, **data}
        line = json.dumps(event, default=_json_default, separators=(",", ":")) + "\n"
        self._file.write(line.encode())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._seq += 1
        return dict(json.loads(line))  # plain JSON values, exactly as a reader will see them

    def events(self, type_: str | None = None) -> Iterator[dict[str, Any]]:
        """Every complete event, oldest first (optionally only those of one type)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # a line being written right now
                event = json.loads(raw)
                if type_ is None or event["type"] == type_:
                    yield event

    def write_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.run_dir / STATE, state)

    def iteration_dir(self, n: int) -> Path:
        d = self.run_dir / "iterations" / f"{n:04d}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def close(self) -> None:
        self._file.close()


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=2, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _repair_tail(path: Path) -> int:
    """Cut a torn last line (no newline, or not JSON); return how many bytes were cut."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        # Find the start of the last line.
        pos, tail = size, b""
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            cut = tail.rfind(b"\n", 0, len(tail) - 1)
            if cut >= 0:
                start = pos + cut + 1
                break
        else:
            start = 0
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
