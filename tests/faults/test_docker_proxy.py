"""DockerProxy: byte-for-byte forwarding with half-close, cut and restore.

The first tests put a tiny Unix-socket server upstream, so they run anywhere; the ``docker`` ones go
through the machine's real engine (skipped when none answers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.faults.docker_proxy import DockerProxy

# ---- against a fake upstream: no Docker needed ---------------------------------------------------


class EchoUpstream:
    """Reads a connection to its end, then answers ``len:<n>\\n`` and the bytes reversed, and closes:
    it can only answer if the proxy passed the client's half-close on."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "upstream.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        self.sock.listen(64)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a cut connection: nobody to answer
            data = recv_all(conn)
            conn.sendall(f"len:{len(data)}\n".encode() + data[::-1])

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def recv_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def closed_without_answer(conn: socket.socket) -> bool:
    """True when the peer closed the connection (an end of stream or a reset) before sending anything."""
    try:
        return conn.recv(100) == b""
    except ConnectionResetError:
        return True


def connect(proxy: DockerProxy, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(proxy.path))
    return s


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[EchoUpstream]:
    up = EchoUpstream(tmp_path)
    yield up
    up.close()


def test_bytes_pass_through_unchanged_and_a_half_close_is_forwarded(echo: EchoUpstream) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, every byte value
    with DockerProxy(upstream=str(echo.path)) as proxy:
        assert proxy.url == f"unix://{proxy.path}" and len(str(proxy.path)) < 108
        with connect(proxy) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)  # the upstream answers only once it has seen the end
            answer = recv_all(s)
    head, _, body = answer.partition(b"\n")
    assert head == f"len:{len(payload)}".encode()
    assert body == payload[::-1]


def test_many_connections_are_forwarded_at_once(echo: EchoUpstream) -> None:
    with DockerProxy(upstream=str(echo.path)) as proxy:
        conns = [connect(proxy) for _ in range(40)]
        deadline = time.monotonic() + 5
        while proxy.open_connections < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.open_connections == 40  # all held open together, none served one after another
        for i, s in enumerate(conns):
            s.sendall(f"conn {i}".encode())
            s.shutdown(socket.SHUT_WR)
        answers = [recv_all(s) for s in conns]
        for s in conns:
            s.close()
    assert answers == [b"len:%d\n" % len(f"conn {i}") + f"conn {i}".encode()[::-1] for i in range(40)]


def test_cut_closes_open_connections_and_refuses_new_ones_then_restore_listens_again(
        echo: EchoUpstream) -> None:
    with DockerProxy(upstream=str(echo.path)) as proxy:
        held = connect(proxy)
        held.sendall(b"half a request")
        proxy.cut()
        assert not proxy.listening and not proxy.path.exists()
        assert proxy.open_connections == 0
        held.settimeout(1)
        assert closed_without_answer(held)
        held.close()
        with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
            connect(proxy)

        proxy.restore()
        assert proxy.listening and proxy.path.is_socket()
        with connect(proxy) as s:
            s.sendall(b"back")
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"len:4\nkcab"


def test_stop_leaves_nothing_listening_and_no_threads(echo: EchoUpstream) -> None:
    before = {t.ident for t in threading.enumerate()}
    proxy = DockerProxy(upstream=str(echo.path)).start()
    with connect(proxy) as s:
        s.sendall(b"x")
        proxy.stop()
    assert not proxy.path.exists() and not proxy.path.parent.exists()
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        connect(proxy)
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith("dproxy")]
    assert left == []
    with pytest.raises(RuntimeError, match="stopped"):
        proxy.restore()


def test_an_upstream_that_is_not_there_closes_the_client(tmp_path: Path) -> None:
    with DockerProxy(upstream=f"unix://{tmp_path}/no-engine.sock") as proxy:
        with connect(proxy) as s:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it may be closed already
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
            assert closed_without_answer(s)
        assert proxy.open_connections == 0


# ---- against the machine's Docker engine -------------------------------------------------------

@pytest.fixture
def proxy() -> Iterator[DockerProxy]:
    with DockerProxy() as p:
        yield p


@pytest.fixture
def client(proxy: DockerProxy):  # type: ignore[no-untyped-def]
    import docker

    c = docker.DockerClient(base_url=proxy.url, timeout=10)
    yield c
    c.close()


@pytest.mark.docker
def test_engine_api_calls_go_through_the_proxy(proxy: DockerProxy, client, docker_client) -> None:  # type: ignore[no-untyped-def]
    assert client.ping() is True
    assert client.version()["ApiVersion"] == docker_client.version()["ApiVersion"]
    assert client.info()["ID"] == docker_client.info()["ID"]  # the same engine
    containers = client.containers.list(all=True)
    assert all(len(c.id) == 64 for c in containers)
    # Others may build or remove images meanwhile: compare with what the engine listed before and after.
    before = {i.id for i in docker_client.images.list()}
    through = {i.id for i in client.images.list()}
    after = {i.id for i in docker_client.images.list()}
    assert before & after <= through <= before | after
    assert proxy.accepted >= 1


@pytest.mark.docker
def test_url_works_as_docker_host_for_the_cli(proxy: DockerProxy) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI")
    env = {**os.environ, "DOCKER_HOST": proxy.url}
    out = subprocess.run(["docker", "version", "--format", "{{.Server.APIVersion}}"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and proxy.accepted >= 1


@pytest.mark.docker
def test_cut_makes_a_ping_fail_within_a_second_and_restore_brings_it_back(proxy: DockerProxy, client) -> None:  # type: ignore[no-untyped-def]
    assert client.ping() is True  # leaves a kept-alive connection in the client's pool
    proxy.cut()
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):
        client.ping()
    assert time.monotonic() - t0 < 1.0
    proxy.restore()
    assert client.ping() is True  # the same client, the same URL


@pytest.mark.docker
def test_nothing_listens_after_stop() -> None:
    import docker

    proxy = DockerProxy().start()
    c = docker.DockerClient(base_url=proxy.url, timeout=5)
    assert c.ping() is True
    proxy.stop()
    assert not proxy.path.exists()
    with pytest.raises(requests.exceptions.ConnectionError):
        c.ping()
    c.close()


# A hijacked stream needs a container, hence an image: any image already on the machine will do.

@pytest.fixture
def container(client):  # type: ignore[no-untyped-def]
    tags = [t for image in client.images.list() for t in image.tags]
    preferred = sorted(tags, key=lambda t: (not t.startswith(("staircase", "debian", "ubuntu", "rust")), t))
    for tag in preferred[:5]:
        try:
            c = client.containers.run(tag, entrypoint=["sleep"], command=["300"], detach=True,
                                      network_disabled=True, labels={"staircase.test": "docker-proxy"})
        except Exception:  # noqa: BLE001 (an image without sleep, one removed meanwhile: try the next)
            continue
        yield c
        c.remove(force=True)
        return
    pytest.skip("no local image can run `sleep` (hijacked-stream tests need one; no registry is used)")


def _demux(raw: bytes) -> tuple[bytes, bytes]:
    """Docker's multiplexed stream (8-byte frame headers) split into stdout and stderr."""
    out, err, i = b"", b"", 0
    while i + 8 <= len(raw):
        kind, size = raw[i], int.from_bytes(raw[i + 4 : i + 8], "big")
        frame = raw[i + 8 : i + 8 + size]
        if kind == 1:
            out += frame
        elif kind == 2:
            err += frame
        i += 8 + size
    return out, err


@pytest.mark.docker
def test_exec_output_streams_through_the_proxy(client, container) -> None:  # type: ignore[no-untyped-def]
    code, (out, err) = container.exec_run(["sh", "-c", "seq 1 20000; echo oops >&2; exit 3"], demux=True)
    assert code == 3
    assert out.decode().split() == [str(i) for i in range(1, 20001)] and err == b"oops\n"


@pytest.mark.docker
def test_exec_stdin_half_close_reaches_the_process(client, container) -> None:  # type: ignore[no-untyped-def]
    """`cat` exits only when its stdin ends: the client's half-close must cross the proxy."""
    api = client.api
    exec_id = api.exec_create(container.id, ["sh", "-c", "cat | wc -c"], stdin=True)["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw_sock: socket.socket = sock._sock
    raw_sock.settimeout(20)
    raw_sock.sendall(b"z" * 100_000)
    raw_sock.shutdown(socket.SHUT_WR)
    out, _ = _demux(recv_all(raw_sock))
    raw_sock.close()
    assert out.strip() == b"100000"
    assert api.exec_inspect(exec_id)["ExitCode"] == 0


@pytest.mark.docker
def test_cut_ends_a_hijacked_stream_at_once(proxy: DockerProxy, client, container) -> None:  # type: ignore[no-untyped-def]
    exec_id = client.api.exec_create(container.id, ["sleep", "60"], stdin=True)["Id"]
    sock = client.api.exec_start(exec_id, socket=True)
    raw_sock: socket.socket = sock._sock
    raw_sock.settimeout(5)
    time.sleep(0.2)
    t0 = time.monotonic()
    proxy.cut()
    assert closed_without_answer(raw_sock)
    assert time.monotonic() - t0 < 1.0
    raw_sock.close()
    proxy.restore()
