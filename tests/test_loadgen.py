"""The Rust load generator (`loadgen/`) against fake servers this test controls.

`loadgen query` must count every kind of bad response, write what was returned indexed by
query, stop a pass at its time limit and abort when the server is gone; `loadgen load` must
send every base vector once with ids = row index; `devbench` must build, start, load, query
and report recall. Builds share ``$STAIRCASE_CARGO_TARGET`` (default
``~/.cache/staircase/cargo-target-tests``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [
    pytest.mark.rust,
    pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed"),
]

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = ROOT / "loadgen"
K = 10
MAX_ID = 1000


def cargo_target_dir() -> Path:
    default = Path.home() / ".cache" / "staircase" / "cargo-target-tests"
    return Path(os.environ.get("STAIRCASE_CARGO_TARGET", default))


@pytest.fixture(scope="session")
def bins() -> dict[str, Path]:
    """The release binaries `loadgen` and `devbench`."""
    target = cargo_target_dir() / "loadgen"
    proc = subprocess.run(
        ["cargo", "build", "--release", "--locked"],
        cwd=LOADGEN,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "CARGO_TARGET_DIR": str(target)},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {name: target / "release" / name for name in ("loadgen", "devbench")}


def write_fvecs(path: Path, a: np.ndarray) -> Path:
    a = np.asarray(a, dtype="<f4")
    rows = np.empty((a.shape[0], a.shape[1] + 1), dtype="<f4")
    rows[:, 0] = np.array([a.shape[1]], dtype="<i4").view("<f4")[0]
    rows[:, 1:] = a
    rows.tofile(path)
    return path


def write_ivecs(path: Path, a: np.ndarray) -> Path:
    a = np.asarray(a, dtype="<i4")
    np.hstack([np.full((a.shape[0], 1), a.shape[1], dtype="<i4"), a]).tofile(path)
    return path


# -- a fake server ---------------------------------------------------------------------------


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        search: Callable[[list[float]], tuple[int, bytes]],
        http11: bool = True,
        bulk: Callable[[dict[str, Any]], tuple[int, bytes]] | None = None,
    ) -> None:
        self.search = search
        self.bulk = bulk
        self.requests = 0
        self.lock = threading.Lock()
        handler = type("Handler", (Handler,), {"protocol_version": "HTTP/1.1" if http11 else "HTTP/1.0"})
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests += 1
        if self.path == "/search":
            status, out = self.server.search(body["vector"])
        elif self.path == "/bulk_insert" and self.server.bulk is not None:
            status, out = self.server.bulk(body)
        else:
            status, out = 404, b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def start(*args: Any, **kwargs: Any) -> FakeServer:
        server = FakeServer(*args, **kwargs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def results(pairs: list[tuple[Any, Any]]) -> bytes:
    return json.dumps({"results": [{"id": i, "distance": d} for i, d in pairs]}).encode()


def good_ids(q: int) -> list[int]:
    return [(q * 37 + j) % MAX_ID for j in range(K)]


# Query q's behaviour is chosen by q, which the fake server reads from vector[0].
BAD = {
    10: ("wrong_k", lambda q: (200, results([(i, float(j)) for j, i in enumerate(good_ids(q)[:9])]))),
    11: ("duplicate_ids", lambda q: (200, results([(5, float(j)) for j in range(K)]))),
    12: ("unsorted", lambda q: (200, results([(i, float(K - j)) for j, i in enumerate(good_ids(q))]))),
    13: ("bad_json", lambda q: (200, b'{"results": [')),
    14: ("http_status", lambda q: (500, b"internal error")),
    15: (
        "id_out_of_range",
        lambda q: (200, results([(i, float(j)) for j, i in enumerate(good_ids(q)[:9] + [MAX_ID])])),
    ),
    16: (
        "bad_distance",
        lambda q: (200, results([(i, None if j == 3 else float(j)) for j, i in enumerate(good_ids(q))])),
    ),
    17: ("body_too_large", lambda q: (200, results([(i, float(j)) for j, i in enumerate(good_ids(q))]) + b" " * 10000)),
}


def mixed_search(vector: list[float]) -> tuple[int, bytes]:
    q = int(vector[0])
    if q in BAD:
        return BAD[q][1](q)
    return 200, results([(i, j * 0.5) for j, i in enumerate(good_ids(q))])


def run_query(
    bins: dict[str, Path],
    tmp: Path,
    addr: str,
    orders: np.ndarray,
    *,
    nq: int = 20,
    extra: list[str] | None = None,
    timeout: float = 60,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    queries = np.zeros((nq, 8), dtype=np.float32)
    queries[:, 0] = np.arange(nq)
    write_fvecs(tmp / "q.fvecs", queries)
    orders = np.asarray(orders, dtype="<u4")
    orders.tofile(tmp / "orders.u32")
    proc = subprocess.run(
        [
            str(bins["loadgen"]),
            "query",
            "--addr",
            addr,
            "--queries",
            str(tmp / "q.fvecs"),
            "--orders",
            str(tmp / "orders.u32"),
            "--passes",
            str(orders.shape[0]),
            "--concurrency",
            "3",
            "--top-k",
            str(K),
            "--max-id",
            str(MAX_ID),
            "--ids-out",
            str(tmp / "ids.i64"),
            "--dists-out",
            str(tmp / "dists.f32"),
            "--out",
            str(tmp / "stats.json"),
            *(extra or []),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    shape = (orders.shape[0], nq, K)
    ids = np.fromfile(tmp / "ids.i64", dtype="<i8").reshape(shape)
    dists = np.fromfile(tmp / "dists.f32", dtype="<f4").reshape(shape)
    return json.loads((tmp / "stats.json").read_text()), ids, dists


# -- loadgen query ---------------------------------------------------------------------------


def test_query_counts_each_error_kind_and_writes_results_by_query(bins, serve, tmp_path) -> None:
    server = serve(mixed_search)
    rng = np.random.default_rng(1)
    # Two passes over queries 0..17 in different orders; 18 and 19 are never sent.
    orders = np.stack([rng.permutation(18), rng.permutation(18)])
    warmup = write_fvecs(tmp_path / "w.fvecs", np.zeros((3, 8)))
    stats, ids, dists = run_query(
        bins,
        tmp_path,
        server.addr,
        orders,
        extra=["--max-body-bytes", "4096", "--warmup-queries", str(warmup), "--warmup-count", "7",
               "--latency-out", str(tmp_path / "latency.f32")],
    )

    # Latency per (pass, query): only the 10 valid answers have one.
    latency = np.fromfile(tmp_path / "latency.f32", dtype="<f4").reshape(2, 20)
    assert (np.isfinite(latency) == (np.arange(20) < 10)).all()
    assert (latency[:, :10] > 0).all() and (latency[:, :10] < 5000).all()
    assert stats["aborted"] is None
    assert stats["warmup"]["sent"] == 7 and stats["warmup"]["completed"] == 7
    assert stats["error_counts"] == {kind: 2 for kind, _ in BAD.values()}
    for p in stats["passes"]:
        assert (p["sent"], p["completed"], p["errors"], p["timed_out"]) == (18, 10, 8, False)
        assert p["qps"] > 0 and p["latency_ms"]["p50"] > 0
    assert len(stats["error_samples"]) == 16
    sample = next(s for s in stats["error_samples"] if s["kind"] == "http_status")
    assert sample["query"] == 14 and "500" in sample["detail"]
    assert server.requests == 7 + 36

    for p in range(2):
        for q in range(10):
            assert ids[p, q].tolist() == good_ids(q)
            assert dists[p, q].tolist() == [j * 0.5 for j in range(K)]
        assert ids[p, 10].tolist() == good_ids(10)[:9] + [-1]  # short answers padded with -1
        assert np.isnan(dists[p, 10, 9])
        assert ids[p, 11].tolist() == [5] * K  # written even though invalid, for the scorer
        assert ids[p, 15, 9] == MAX_ID
        assert np.isnan(dists[p, 16, 3]) and dists[p, 16, 4] == 4.0
        for q in (13, 14, 17, 18, 19):  # unparsed or never sent
            assert (ids[p, q] == -1).all() and np.isnan(dists[p, q]).all()


def test_reconnects_when_the_server_closes_every_connection(bins, serve, tmp_path) -> None:
    server = serve(mixed_search, http11=False)  # HTTP/1.0: one request per connection
    stats, ids, _ = run_query(bins, tmp_path, server.addr, np.arange(10)[None, :].repeat(3, axis=0))
    assert stats["error_counts"] == {} and stats["aborted"] is None
    assert [p["completed"] for p in stats["passes"]] == [10, 10, 10]
    assert ids[2, 9].tolist() == good_ids(9)


def test_a_slow_server_times_out_the_pass(bins, serve, tmp_path) -> None:
    def slow(vector: list[float]) -> tuple[int, bytes]:
        time.sleep(0.1)
        return mixed_search(vector)

    server = serve(slow)
    started = time.monotonic()
    stats, ids, _ = run_query(
        bins, tmp_path, server.addr, np.arange(20)[None, :], extra=["--pass-time-limit-s", "0.35"]
    )
    assert time.monotonic() - started < 5
    (p,) = stats["passes"]
    # 3 workers, 0.1 s per request, 0.35 s: about 12 answered, the rest never sent.
    assert p["timed_out"] is True
    assert 3 <= p["completed"] < 20 and p["errors"] == 0 and p["sent"] == p["completed"]
    assert (ids[0, :, 0] >= 0).sum() == p["completed"]


def test_request_timeout_is_an_error_of_its_own(bins, serve, tmp_path) -> None:
    def stuck_on_zero(vector: list[float]) -> tuple[int, bytes]:
        if vector[0] == 0:
            time.sleep(1.5)
        return mixed_search(vector)

    server = serve(stuck_on_zero)
    stats, ids, _ = run_query(bins, tmp_path, server.addr, np.arange(8)[None, :], extra=["--request-timeout-s", "0.3"])
    assert stats["error_counts"] == {"timeout": 1}
    assert stats["passes"][0]["completed"] == 7
    assert (ids[0, 0] == -1).all() and ids[0, 1].tolist() == good_ids(1)


def test_warmup_absorbs_a_slow_first_query(bins, serve, tmp_path) -> None:
    """A lazy index build in the first search may exceed the per-request timeout in warm-up."""
    first = threading.Event()

    def lazy(vector: list[float]) -> tuple[int, bytes]:
        if not first.is_set():
            first.set()
            time.sleep(1.0)
        return mixed_search(vector)

    server = serve(lazy)
    warmup = write_fvecs(tmp_path / "w.fvecs", np.zeros((1, 8)))
    stats, _, _ = run_query(
        bins,
        tmp_path,
        server.addr,
        np.arange(10)[None, :],
        extra=[
            "--request-timeout-s",
            "0.3",
            "--warmup-queries",
            str(warmup),
            "--warmup-count",
            "3",
            "--warmup-time-limit-s",
            "5",
        ],
    )
    assert stats["warmup"]["completed"] == 3 and stats["warmup"]["errors"] == 0
    assert stats["error_counts"] == {} and stats["passes"][0]["completed"] == 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_server_aborts_with_exit_zero(bins, tmp_path) -> None:
    started = time.monotonic()
    stats, ids, _ = run_query(bins, tmp_path, f"127.0.0.1:{free_port()}", np.arange(20)[None, :].repeat(2, 0))
    assert 2 <= time.monotonic() - started < 10
    assert "unreachable" in stats["aborted"]
    assert len(stats["passes"]) == 1  # the second pass never started
    assert stats["passes"][0]["completed"] == 0
    assert set(stats["error_counts"]) == {"connect"}
    assert (ids == -1).all()


def wait_for_tcp(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing accepts on port {port}")


def test_a_server_that_dies_mid_pass_aborts_the_run(bins, tmp_path) -> None:
    port = free_port()
    server = subprocess.Popen([str(bins["loadgen"]), "trivial-server", "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_for_tcp(port)
        threading.Timer(0.5, server.kill).start()
        # Far more queries than fit in 0.5 s, so the server dies while passes are running.
        orders = np.tile(np.arange(20), 20_000)[None, :].repeat(5, axis=0)
        stats, _, _ = run_query(bins, tmp_path, f"127.0.0.1:{port}", orders, timeout=60)
    finally:
        server.kill()
        server.wait()
    assert stats["aborted"] and "unreachable" in stats["aborted"]
    assert len(stats["passes"]) < 5
    assert stats["passes"][0]["completed"] > 0
    assert set(stats["error_counts"]) <= {"io", "connect"}


# -- loadgen rounds --------------------------------------------------------------------------


class Rounds:
    """A `loadgen rounds` process and its control connection."""

    def __init__(self, bins: dict[str, Path], tmp: Path, addr: str, nq: int = 20) -> None:
        queries = np.zeros((nq, 8), dtype=np.float32)
        queries[:, 0] = np.arange(nq)
        write_fvecs(tmp / "q.fvecs", queries)
        self.tmp = tmp
        self.proc = subprocess.Popen(
            [str(bins["loadgen"]), "rounds", "--addr", addr, "--queries", str(tmp / "q.fvecs"), "--concurrency", "3",
             "--top-k", str(K), "--max-id", str(MAX_ID), "--io", str(tmp), "--control", "ctl.sock"],
            cwd=tmp, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not (tmp / "ctl.sock").exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "no control socket"
            time.sleep(0.02)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(tmp / "ctl.sock"))
        self.sock.settimeout(30)
        self.lines = self.sock.makefile("rb")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(self.lines.readline())

    def answers(self, out: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.fromfile(self.tmp / f"{out}.ids", dtype="<i8").reshape(n, K),
                np.fromfile(self.tmp / f"{out}.dists", dtype="<f4").reshape(n, K))

    def close(self) -> int:
        self.lines.close()
        self.sock.close()
        return self.proc.wait(timeout=10)


def test_rounds_serves_passes_on_request_with_answers_in_sending_order(bins, serve, tmp_path) -> None:
    server = serve(mixed_search)
    r = Rounds(bins, tmp_path, server.addr)
    try:
        order = [7, 3, 3, 0, 9]
        first = r.ask({"order": order, "out": "a", "pass_time_limit_s": 5})
        assert first["aborted"] is None and first["error_samples"] == []
        assert first["pass"]["completed"] == 5 and first["pass"]["errors"] == 0 and first["pass"]["qps"] > 0
        ids, dists = r.answers("a", len(order))
        assert ids.tolist() == [good_ids(q) for q in order]  # row i answers order[i]
        assert np.allclose(dists, np.arange(K) * 0.5)
        assert not (tmp_path / "ctl.sock").exists()  # one client: the socket is gone once taken

        # A bad answer is counted and sampled in its own pass; the next pass starts clean.
        second = r.ask({"order": [14, 1], "out": "b"})
        assert second["pass"]["error_counts"] == {"http_status": 1} and second["pass"]["completed"] == 1
        assert [(s["pass"], s["query"], s["kind"]) for s in second["error_samples"]] == [(1, 14, "http_status")]
        ids, _ = r.answers("b", 2)
        assert ids[0].tolist() == [-1] * K and ids[1].tolist() == good_ids(1)
        third = r.ask({"order": [2], "out": "c"})
        assert third["pass"]["errors"] == 0 and third["error_samples"] == []

        # Bad requests are refused with a reason, and the session goes on.
        assert "not below the number of queries 20" in r.ask({"order": [20], "out": "d"})["error"]
        assert "plain file name" in r.ask({"order": [1], "out": "../x"})["error"]
        assert "error" in r.ask({"nonsense": True})
        assert r.ask({"order": [5], "out": "e"})["pass"]["completed"] == 1
        requests = server.requests
    finally:
        code = r.close()
    assert code == 0  # the client hung up: the session ends
    assert requests == 5 + 2 + 1 + 1


def test_rounds_reports_a_dead_server_as_aborted(bins, tmp_path) -> None:
    r = Rounds(bins, tmp_path, f"127.0.0.1:{free_port()}")
    try:
        reply = r.ask({"order": [0, 1], "out": "a"})
    finally:
        r.close()
    assert "unreachable" in reply["aborted"] and reply["pass"]["completed"] == 0


def test_bad_arguments_exit_non_zero(bins, tmp_path) -> None:
    write_fvecs(tmp_path / "q.fvecs", np.zeros((4, 8)))
    np.array([0, 1, 9], dtype="<u4").tofile(tmp_path / "orders.u32")
    proc = subprocess.run(
        [
            str(bins["loadgen"]),
            "query",
            "--addr",
            "127.0.0.1:1",
            "--queries",
            str(tmp_path / "q.fvecs"),
            "--orders",
            str(tmp_path / "orders.u32"),
            "--passes",
            "1",
            "--max-id",
            "10",
            "--ids-out",
            str(tmp_path / "i"),
            "--dists-out",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0 and "query index 9" in proc.stderr


# -- loadgen load ----------------------------------------------------------------------------


def run_load(bins: dict[str, Path], tmp: Path, addr: str, base: np.ndarray, *extra: str) -> dict[str, Any]:
    write_fvecs(tmp / "base.fvecs", base)
    proc = subprocess.run(
        [
            str(bins["loadgen"]),
            "load",
            "--addr",
            addr,
            "--base",
            str(tmp / "base.fvecs"),
            "--out",
            str(tmp / "load.json"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp / "load.json").read_text())


def recording_bulk(store: dict[int, list[float]], batches: list[int]) -> Callable[[dict[str, Any]], tuple[int, bytes]]:
    def bulk(body: dict[str, Any]) -> tuple[int, bytes]:
        for v in body["vectors"]:
            assert v["id"] not in store
            store[v["id"]] = v["vector"]
        batches.append(len(body["vectors"]))
        return 200, json.dumps({"status": "ok", "inserted": len(body["vectors"])}).encode()

    return bulk


def test_load_sends_every_vector_once_with_row_ids(bins, serve, tmp_path) -> None:
    store: dict[int, list[float]] = {}
    batches: list[int] = []
    server = serve(mixed_search, bulk=recording_bulk(store, batches))
    base = np.random.default_rng(2).integers(0, 200, (2500, 16)).astype(np.float32)
    base[7, 3] = 0.1  # a non-integer value must round-trip too
    stats = run_load(bins, tmp_path, server.addr, base, "--batch-size", "1000")
    assert stats["ok"] is True and stats["error"] is None
    assert (stats["vectors"], stats["batches"]) == (2500, 3)
    assert batches == [1000, 1000, 500]
    assert sorted(store) == list(range(2500))
    np.testing.assert_array_equal(np.array([store[i] for i in range(2500)], dtype=np.float32), base)


def test_load_limit(bins, serve, tmp_path) -> None:
    store: dict[int, list[float]] = {}
    batches: list[int] = []
    server = serve(mixed_search, bulk=recording_bulk(store, batches))
    stats = run_load(bins, tmp_path, server.addr, np.ones((2500, 4)), "--batch-size", "500", "--limit", "1200")
    assert (stats["ok"], stats["vectors"], stats["batches"]) == (True, 1200, 3)
    assert batches == [500, 500, 200]


def test_load_stops_at_a_wrong_inserted_count(bins, serve, tmp_path) -> None:
    calls: list[int] = []

    def short(body: dict[str, Any]) -> tuple[int, bytes]:
        calls.append(1)
        n = len(body["vectors"]) - (1 if len(calls) == 2 else 0)
        return 200, json.dumps({"status": "ok", "inserted": n}).encode()

    server = serve(mixed_search, bulk=short)
    stats = run_load(bins, tmp_path, server.addr, np.ones((3000, 4)), "--batch-size", "1000")
    assert (stats["ok"], stats["vectors"], stats["batches"]) == (False, 1000, 1)
    assert "inserted=999 for 1000" in stats["error"]
    assert len(calls) == 2


def test_load_time_limit(bins, serve, tmp_path) -> None:
    def slow(body: dict[str, Any]) -> tuple[int, bytes]:
        time.sleep(0.2)
        return 200, json.dumps({"status": "ok", "inserted": len(body["vectors"])}).encode()

    server = serve(mixed_search, bulk=slow)
    stats = run_load(bins, tmp_path, server.addr, np.ones((5000, 4)), "--batch-size", "100", "--time-limit-s", "0.5")
    assert stats["ok"] is False and "time limit" in stats["error"]
    assert 100 <= stats["vectors"] < 5000 and stats["elapsed_s"] < 2


def test_load_reports_http_errors(bins, serve, tmp_path) -> None:
    server = serve(mixed_search, bulk=lambda body: (413, b"payload too large"))
    stats = run_load(bins, tmp_path, server.addr, np.ones((10, 4)))
    assert stats["ok"] is False and stats["vectors"] == 0
    assert "HTTP 413" in stats["error"] and "ids 0..9" in stats["error"]


# -- devbench --------------------------------------------------------------------------------

# A stand-in for a built server: exact search with numpy, as a Python script.
BRUTE_FORCE_SERVER = r"""
import json, os, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import numpy as np
ids, vecs, lock = [], [], threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with lock:
            if self.path == "/bulk_insert":
                for v in body["vectors"]:
                    ids.append(v["id"]); vecs.append(v["vector"])
                out = {"status": "ok", "inserted": len(body["vectors"])}
            else:
                base = np.asarray(vecs, dtype=np.float64)
                d = ((base - np.asarray(body["vector"])) ** 2).sum(axis=1)
                top = np.argsort(d, kind="stable")[: body["top_k"]]
                out = {"results": [{"id": ids[i], "distance": float(d[i]) ** 0.5} for i in top]}
        data = json.dumps(out).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def dev_dataset(folder: Path, n: int = 3000, nq: int = 200, dim: int = 32, seed: int = 3) -> Path:
    """base / dev queries / exact top-100 ground truth; continuous values, so no ties."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    d2 = ((queries.astype(np.float64)[:, None, :] - base.astype(np.float64)[None, :, :]) ** 2).sum(-1)
    write_fvecs(folder / "base.fvecs", base)
    write_fvecs(folder / "dev_queries.fvecs", queries)
    write_ivecs(folder / "dev_groundtruth.ivecs", np.argsort(d2, axis=1, kind="stable")[:, :100])
    return folder


def fake_workspace(tmp: Path, script: str) -> Path:
    ws = tmp / "ws"
    (ws / "target" / "release").mkdir(parents=True)
    (ws / "Cargo.toml").write_text('[package]\nname = "fake-db"\nversion = "0.1.0"\n')
    binary = ws / "target" / "release" / "fake-db"
    binary.write_text(f"#!{sys.executable}\n{script}")
    binary.chmod(0o755)
    return ws


def run_devbench(
    bins: dict[str, Path], ws: Path, data: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [
            str(bins["devbench"]),
            "--workspace",
            str(ws),
            "--data",
            str(data),
            "--port",
            str(free_port()),
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_devbench_reports_recall_of_an_exact_server(bins, tmp_path) -> None:
    ws = fake_workspace(tmp_path, BRUTE_FORCE_SERVER)
    data = dev_dataset(tmp_path / "data", n=1500, nq=60, dim=16)
    code, report, _ = run_devbench(bins, ws, data, "--skip-build", "--queries", "50", "--passes", "2", "--warmup", "5")
    assert code == 0, report
    assert "not the official score" in report["notice"]
    assert report["ok"] is True and report["vectors"] == 1500
    assert report["recall_at_10"] == 1.0 and report["errors"] == 0
    assert report["queries"] == 50 and len(report["query_stats"]["passes"]) == 2
    assert report["qps"] > 0


def test_devbench_names_a_server_that_exits_at_start(bins, tmp_path) -> None:
    ws = fake_workspace(tmp_path, "import sys\nprint('boom: no index'); sys.exit(3)\n")
    data = dev_dataset(tmp_path / "data", n=200, nq=10, dim=4)
    code, report, _ = run_devbench(bins, ws, data, "--skip-build")
    assert code != 0 and report["ok"] is False
    assert "exited before accepting" in report["error"] and "boom: no index" in report["error"]


def test_devbench_text_summary_says_it_is_a_dev_measurement(bins, tmp_path) -> None:
    ws = fake_workspace(tmp_path, BRUTE_FORCE_SERVER)
    data = dev_dataset(tmp_path / "data", n=300, nq=20, dim=8)
    proc = subprocess.run(
        [
            str(bins["devbench"]),
            "--workspace",
            str(ws),
            "--data",
            str(data),
            "--skip-build",
            "--port",
            str(free_port()),
            "--queries",
            "20",
            "--warmup",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DEV measurement" in proc.stdout and "not the official score" in proc.stdout
    assert "recall@10   1.0000" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    not (ROOT / "skeleton").is_dir() or not (ROOT / "reference" / "stage01-brute-force").is_dir(),
    reason="skeleton/ or reference/stage01-brute-force/ is missing",
)
def test_devbench_builds_and_scores_the_stage01_reference(bins, tmp_path) -> None:
    ws = tmp_path / "ws"
    # Fresh mtimes (copy, not copy2): cargo decides staleness by mtime in the shared target dir.
    shutil.copytree(ROOT / "skeleton", ws, ignore=shutil.ignore_patterns("target"), copy_function=shutil.copy)
    shutil.copytree(ROOT / "reference" / "stage01-brute-force", ws, dirs_exist_ok=True, copy_function=shutil.copy)
    env = {**os.environ, "CARGO_TARGET_DIR": str(cargo_target_dir())}
    # devbench builds offline, as in the sandbox: fetch the locked crates first.
    fetch = subprocess.run(["cargo", "fetch", "--locked"], cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert fetch.returncode == 0, fetch.stderr[-2000:]
    data = dev_dataset(tmp_path / "data")
    code, report, stderr = run_devbench(bins, ws, data, "--queries", "200", env=env)
    assert code == 0, (report, stderr[-3000:])
    assert report["build_s"] is not None and report["vectors"] == 3000
    assert report["recall_at_10"] == 1.0 and report["errors"] == 0


def test_rust_unit_tests_pass() -> None:
    """The crate's own tests (fvecs reader, response checks, JSON bodies, devbench helpers)."""
    proc = subprocess.run(
        ["cargo", "test", "--locked", "-q"],
        cwd=LOADGEN,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "CARGO_TARGET_DIR": str(cargo_target_dir() / "loadgen")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test result: ok" in proc.stdout
