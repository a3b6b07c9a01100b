"""The ledger: one writer under a lock, torn lines repaired by the writer and skipped by readers."""

from harness.events import RunEnd, RunStart
from harness.ledger import Ledger, read_events


def test_torn_last_line_is_repaired(tmp_path):
    led = Ledger(tmp_path)
    led.append(RunStart(name="a"))
    led.append(RunEnd(reason="b"))
    led.close()
    with (tmp_path / "events.jsonl").open("ab") as f:
        f.write(b'{"seq":2,"ts":1,"type":"run_end","reason":')
    # a reader stops before the torn line, and changes nothing
    size = (tmp_path / "events.jsonl").stat().st_size
    assert [e.type for e in read_events(tmp_path)] == ["run_start", "run_end"]
    assert (tmp_path / "events.jsonl").stat().st_size == size
    led2 = Ledger(tmp_path)
    assert led2.repaired_bytes > 0
    assert [e.type for e in led2.events()] == ["run_start", "run_end"]
    led2.append(RunEnd(reason="c"))
    assert [e.seq for e in led2.events()] == [0, 1, 2]
    led2.close()


def test_a_failed_append_leaves_no_partial_line(tmp_path, monkeypatch):
    import errno
    import os

    import pytest

    from harness import ledger as ledger_mod
    from harness.ledger import DiskFull

    led = Ledger(tmp_path)
    led.append(RunStart(name="a"))
    before = (tmp_path / "events.jsonl").read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_mod.os, "write", half_then_full)
    with pytest.raises(DiskFull, match="disk full: cannot write .*events.jsonl"):
        led.append(RunEnd(reason="x" * 1000))
    monkeypatch.undo()
    assert (tmp_path / "events.jsonl").read_bytes() == before
    led.append(RunEnd(reason="after"))  # the same writer goes on once there is space
    assert [e.seq for e in read_events(tmp_path)] == [0, 1]
    led.close()


def test_event_tail_reads_only_what_is_new(tmp_path):
    from harness.ledger import EventTail

    led = Ledger(tmp_path)
    tail = EventTail(tmp_path)
    assert tail.read() == []
    led.append(RunStart(name="a"))
    led.append(RunEnd(reason="b"))
    assert [e.type for e in tail.read()] == ["run_start", "run_end"]
    with (tmp_path / "events.jsonl").open("ab") as f:
        f.write(b'{"seq":2,"ts":1,"type":"run_end","rea')  # being written
    assert tail.read() == []
    offset = tail.offset
    led.close()
    assert offset == len((tmp_path / "events.jsonl").read_bytes()) - len(b'{"seq":2,"ts":1,"type":"run_end","rea')


def test_version_1_events_still_open(tmp_path):
    """A run written before events were typed: no schema_version, free-text iteration_end reasons."""
    from harness.state import RunState

    lines = [
        '{"seq":0,"ts":1.0,"type":"run_start","name":"old","model":"m","provider":"scripted","dataset":"d",'
        '"preset":"long-horizon","host":"h","prices":{}}',
        '{"seq":1,"ts":2.0,"type":"iteration_start","iteration":1,"attempt":0,"start_ref":"start"}',
        '{"seq":2,"ts":3.0,"type":"tool_call","iteration":1,"attempt":0,"turn":0,"call_id":"c","name":"bash",'
        '"arguments":"{}","is_error":false,"output":"x","full_output":null,"exit_code":0,"duration_s":0.1}',
        '{"seq":3,"ts":4.0,"type":"submission","iteration":1,"message":"m","commit":"c","tag":"sub-0001",'
        '"reason":"submitted","files_changed":1,"lines_added":1,"lines_removed":0}',
        '{"seq":4,"ts":5.0,"type":"iteration_end","iteration":1,"reason":"some old words"}',
    ]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    state = RunState.from_events(read_events(tmp_path))
    assert state.start.schema_version == 1 and state.usage.tool_calls == 1 and state.usage.iterations == 1
    assert state.last_tag == "sub-0001" and state.interrupted() is None
