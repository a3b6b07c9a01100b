"""``staircase view`` over HTTP without a browser: the index against the ledger, incremental and torn
reads, nothing written in run directories, traversal refused, loopback by default."""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.analysis.staircase import load_staircase
from harness.view.index import Registry, RunIndex
from tests.view import support


def _get(base: str, path: str) -> tuple[int, bytes]:
    """A request with the path sent exactly as written (no client-side normalisation of ``..``)."""
    host, port = base.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.putrequest("GET", path, skip_accept_encoding=True)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".git" not in p.parts and "workspace" not in p.parts:
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def test_the_index_agrees_with_load_staircase(view_root: dict[str, Any]) -> None:
    reg = Registry([view_root["root"]])
    assert set(reg.scan(force=True)) == {"finished", "live", "sweep-1/group-a/seed-0", "sweep-1/group-a/seed-1",
                                         "sweep-1/group-b/seed-0"}
    for rid in ("finished", "sweep-1/group-a/seed-0"):
        run = reg.get(rid)
        assert run is not None
        assert run.staircase().model_dump() == load_staircase(run.run_dir).model_dump()
    assert reg.get("../finished") is None and reg.get("/etc") is None


def test_the_index_reads_only_what_was_appended_and_waits_for_a_torn_line(tmp_path: Path) -> None:
    run_dir = support.write_run(tmp_path / "r", [(100, True, None), (50, False, None)])
    idx = RunIndex(run_dir)
    assert idx.refresh() and len(idx.points) == 2
    size = (run_dir / "events.jsonl").stat().st_size
    assert idx.offset == size and not idx.refresh()  # nothing new: nothing read
    line = (run_dir / "events.jsonl").read_bytes().splitlines(keepends=True)[-2]  # an iteration_end
    with (run_dir / "events.jsonl").open("ab") as f:  # a writer half-way through a line
        f.write(line[:20])
    idx.refresh()
    assert idx.offset == size and len(idx.points) == 2
    with (run_dir / "events.jsonl").open("ab") as f:
        f.write(line[20:])
    assert idx.refresh() and idx.offset == size + len(line)
    events, total = idx.events_of(1)
    assert total == len(events) and events[0].type == "iteration_start" and events[-1].type == "iteration_end"


def test_serving_every_page_writes_nothing_in_the_run_directories(server: str, view_root: dict[str, Any]) -> None:
    root = view_root["root"]
    before = _snapshot(root / "finished") | _snapshot(root / "sweep-1")
    entries = sorted(os.listdir(root / "finished"))
    for path in ["/", "/api/runs", "/runs/finished", "/api/run/finished", "/api/run/finished?axis=hours",
                 "/runs/finished/iterations/1", "/runs/finished/iterations/3?page=0",
                 "/runs/finished/iterations/1/output/2", "/runs/sweep-1/group-a/seed-0",
                 "/api/run/sweep-1/group-a/seed-0", "/runs/sweep-1/group-a/seed-0/iterations/2",
                 "/compare?run=finished&run=sweep-1/group-a/seed-0&axis=tool_calls&budget=12"]:
        status, body = _get(server, path)
        assert status == 200, (path, body[:300])
    assert _snapshot(root / "finished") | _snapshot(root / "sweep-1") == before
    assert sorted(os.listdir(root / "finished")) == entries


def test_paths_outside_the_given_directories_are_refused(server: str, view_root: dict[str, Any]) -> None:
    secret = view_root["root"].parent / "secret.txt"
    secret.write_text("root:do-not-serve")
    for path in ["/runs/../secret.txt", "/runs/..%2Fsecret.txt", "/runs/%2e%2e/%2e%2e/etc/passwd",
                 "/runs/finished/../../secret.txt/iterations/1", "/api/run/..%2F..%2Fetc", "/api/run/../live",
                 "/static/../../../../etc/passwd", "/static/%2e%2e/app.py", "/static/..%2Fapp.py",
                 "/runs//etc/iterations/1", "/runs/finished/iterations/1/output/999",
                 "/runs/finished/iterations/9999"]:
        status, body = _get(server, path)
        assert status in (400, 404), (path, status)
        assert b"root:" not in body and b"import " not in body, path


def test_view_binds_loopback_by_default_and_names_a_missing_directory(view_root: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    bad = CliRunner().invoke(app, ["view", str(tmp_path / "nope")])
    assert bad.exit_code != 0 and "nope" in bad.output
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "view", str(view_root["root"]), "--port", str(port),
                          "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        text = ""
        while True:  # one JSON value, maybe over several lines
            text += p.stdout.readline()
            try:
                out = json.loads(text)
                break
            except ValueError:
                assert p.poll() is None, p.stderr.read() if p.stderr else ""
        assert out["url"] == f"http://127.0.0.1:{port}/" and "finished" in out["runs"]
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _ = _get(f"http://127.0.0.1:{port}", "/api/runs")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert status == 200
        listening = [ln.split()[1] for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if ln.split()[3] == "0A"]
        assert f"0100007F:{port:04X}" in listening and f"00000000:{port:04X}" not in listening
    finally:
        p.terminate()
        p.wait(10)


def test_the_iteration_page_shows_the_prompts_the_model_was_sent(server: str, view_root: dict[str, Any]) -> None:
    status, raw = _get(server, "/runs/finished/iterations/2")
    assert status == 200
    body = raw.decode()
    recorded = json.loads((view_root["root"] / "finished" / "iterations" / "0002" / "prompts-0.json").read_text())
    assert "prompts sent to the model (attempt 0)" in body
    assert html.escape(recorded["iteration"].splitlines()[0]) in body and "# Iteration 2" in recorded["iteration"]
    assert html.escape(recorded["system"][:60]) in body
