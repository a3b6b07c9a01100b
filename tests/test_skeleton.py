"""The Rust skeleton compiles as shipped, and the stage-1 reference serves exact answers over HTTP.

Builds share one cargo target directory (``$STAIRCASE_CARGO_TARGET`` or
``~/.cache/staircase/cargo-target-tests``) so that dependencies compile once per machine.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.rust,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed"),
]

ROOT = Path(__file__).resolve().parents[1]
SKELETON = ROOT / "skeleton"
STAGE01 = ROOT / "reference" / "stage01-brute-force"
BINARY = "vector-db-skeleton"
DIM = 16


def cargo_target_dir() -> Path:
    default = Path.home() / ".cache" / "staircase" / "cargo-target-tests"
    return Path(os.environ.get("STAIRCASE_CARGO_TARGET", default))


def build_release(src: Path) -> Path:
    """`cargo build --release --locked` in ``src``; returns the built server binary."""
    target = cargo_target_dir()
    proc = subprocess.run(
        ["cargo", "build", "--release", "--locked"],
        cwd=src,
        env={**os.environ, "CARGO_TARGET_DIR": str(target)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return target / "release" / BINARY


def workspace(tmp: Path, overlay: Path | None = None) -> Path:
    """A copy of the skeleton, with the files of ``overlay`` laid over it."""
    dest = tmp / "ws"
    # Fresh mtimes (shutil.copy, not copy2): cargo decides staleness by mtime, and the
    # shared target dir may hold a newer build of different sources under the same name.
    shutil.copytree(SKELETON, dest, ignore=shutil.ignore_patterns("target"), copy_function=shutil.copy)
    if overlay is not None:
        shutil.copytree(overlay, dest, dirs_exist_ok=True, copy_function=shutil.copy)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited early with code {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server did not accept TCP on port {port} within {timeout} s")


class Client:
    """One keep-alive HTTP connection, JSON in and out."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: object) -> tuple[int, object]:
        data = json.dumps(body).encode()
        self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            return resp.status, raw.decode(errors="replace")
        return resp.status, json.loads(raw)


@pytest.fixture(scope="module")
def stage01_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("stage01")
    built = build_release(workspace(tmp, STAGE01))
    # Copy the binary out: the shared target dir is rebuilt by other tests.
    binary = tmp / BINARY
    shutil.copy2(built, binary)
    port = free_port()
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen([str(binary)], env={**os.environ, "PORT": str(port)}, stdout=log, stderr=log)
    try:
        wait_for_tcp(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_skeleton_compiles_with_stubs(tmp_path: Path) -> None:
    assert build_release(workspace(tmp_path)).is_file()


def test_reference_overrides_only_editable_files() -> None:
    files = sorted(str(p.relative_to(STAGE01)) for p in STAGE01.rglob("*") if p.is_file())
    assert files == ["src/db.rs", "src/distance.rs"]


def test_stage01_matches_numpy_brute_force(stage01_server: int) -> None:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((2005, DIM)).astype(np.float32)
    # Sparse, large ids: the server must echo ids, never positions.
    ids = rng.choice(10**12, size=len(base), replace=False).astype(np.uint64) + 2**33
    client = Client(stage01_server)

    for lo, hi in [(0, 1000), (1000, 2000)]:
        batch = [{"id": int(i), "vector": v.tolist()} for i, v in zip(ids[lo:hi], base[lo:hi], strict=True)]
        assert client.post("/bulk_insert", {"vectors": batch}) == (200, {"status": "ok", "inserted": 1000})
    for i, v in zip(ids[2000:], base[2000:], strict=True):
        assert client.post("/insert", {"id": int(i), "vector": v.tolist()}) == (200, {"status": "ok"})

    base64 = base.astype(np.float64)
    for q in rng.standard_normal((50, DIM)).astype(np.float32):
        status, body = client.post("/search", {"vector": q.tolist(), "top_k": 10})
        assert status == 200
        d2 = ((base64 - q.astype(np.float64)) ** 2).sum(axis=1)
        order = np.argsort(d2, kind="stable")[:10]
        results = body["results"]  # type: ignore[index]
        assert [r["id"] for r in results] == ids[order].tolist()
        np.testing.assert_allclose([r["distance"] for r in results], np.sqrt(d2[order]), rtol=1e-5)

    # top_k above the stored count returns everything, nearest first.
    status, body = client.post("/search", {"vector": base[0].tolist(), "top_k": 5000})
    results = body["results"]  # type: ignore[index]
    assert status == 200 and len(results) == len(base)
    assert results[0]["id"] == int(ids[0]) and results[0]["distance"] == 0.0
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances)


def test_body_limit_is_axums_default(stage01_server: int) -> None:
    """As in the original skeleton: a bulk insert body over 2 MiB is refused with 413."""
    vector = [123.0] * 128
    big = {"vectors": [{"id": i, "vector": vector} for i in range(5000)]}  # ~3.3 MB of JSON
    body = json.dumps(big).encode()
    assert len(body) > 2 * 1024 * 1024
    # The server answers 413 and closes while we are still sending: read the answer concurrently
    # with the upload (a reset can still beat us to it, hence a few attempts).
    import socket
    import threading

    request = (f"POST /bulk_insert HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    status_line = ""
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", stage01_server), timeout=10) as sock:

            def upload(s: socket.socket = sock) -> None:
                try:
                    s.sendall(request)
                except OSError:
                    pass  # the server stopped reading: expected

            sender = threading.Thread(target=upload, daemon=True)
            sender.start()
            try:
                status_line = sock.recv(4096).split(b"\r\n", 1)[0].decode()
            except ConnectionResetError:
                continue
            finally:
                sender.join(timeout=10)
        if status_line:
            break
    assert status_line.split()[1] == "413", status_line
