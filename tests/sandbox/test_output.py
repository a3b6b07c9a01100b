"""Bounded output capture: head + tail with a marker, the full log written only when cut, capped."""

from __future__ import annotations

from pathlib import Path

from harness.sandbox.output import FullOutputLog, StreamCapture


def test_short_output_is_kept_whole() -> None:
    cap = StreamCapture(head=10, tail=10)
    for piece in (b"hello ", b"world"):
        cap.feed(piece)
    assert cap.text() == "hello world"
    assert not cap.truncated


def test_long_output_keeps_head_and_tail_with_marker() -> None:
    cap = StreamCapture(head=4, tail=3)
    for i in range(1000):
        cap.feed(f"{i:04d}".encode())  # 4000 bytes in small pieces
    assert cap.truncated
    assert cap.total == 4000
    assert cap.text() == "0000\n[... 3993 bytes cut ...]\n999"
    assert len(cap.head) + len(cap.tail) == 7


def test_single_chunk_larger_than_both_caps() -> None:
    cap = StreamCapture(head=2, tail=2)
    cap.feed(b"abcdefgh")
    assert cap.text() == "ab\n[... 4 bytes cut ...]\ngh"


def test_full_log_not_written_when_nothing_was_cut(tmp_path: Path) -> None:
    log = FullOutputLog(tmp_path / "x.log", cap=100, hold_limit=50)
    log.feed(b"small", cut_happened=False)
    assert log.close() is None
    assert not (tmp_path / "x.log").exists()


def test_full_log_written_from_the_start_and_capped(tmp_path: Path) -> None:
    log = FullOutputLog(tmp_path / "x.log", cap=10, hold_limit=50)
    log.feed(b"abc", cut_happened=False)
    log.feed(b"defghijklmnop", cut_happened=True)
    path = log.close()
    assert path == str(tmp_path / "x.log")
    data = (tmp_path / "x.log").read_bytes()
    assert data.startswith(b"abcdefghij\n[... full output capped at 10 bytes: 6 more cut ...]")
