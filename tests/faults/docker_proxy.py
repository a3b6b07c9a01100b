"""A Unix-socket proxy in front of the Docker engine, so that tests can make the engine "go away".

``DockerProxy`` listens on a socket in a fresh temporary folder and forwards every connection byte
for byte to the engine's socket. It knows nothing of HTTP: a hijacked exec or attach stream is just
more bytes, and an end-of-stream in one direction is passed on as a half-close (``shutdown(SHUT_WR)``),
which is how a client says "no more stdin" to an exec.

``cut()`` is the engine dying: every open forwarded connection is shut down and the listening socket
is closed and its file removed, so a new connection fails as it does when the engine is not running
(``FileNotFoundError`` / connection refused). ``restore()`` listens again on the same path.

    with DockerProxy() as proxy:
        client = docker.DockerClient(base_url=proxy.url)
        proxy.cut()      # client.ping() now raises requests.exceptions.ConnectionError
        proxy.restore()  # and works again
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

_CHUNK = 65536
_ACCEPT_POLL_S = 0.02  # how often the accept loop looks whether it should stop
_SUN_PATH_MAX = 100  # a Unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux)


class _Link:
    """One forwarded connection: the client's socket, the engine's, and a pump thread each way."""

    def __init__(self, client: socket.socket, upstream: socket.socket, on_done: Callable[[_Link], None]) -> None:
        self.client = client
        self.upstream = upstream
        self._on_done = on_done
        self._lock = threading.Lock()
        self._pumps_left = 2
        self.threads = [
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True, name="dproxy-up"),
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True, name="dproxy-down"),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
            # The source said it will send no more: pass the half-close on, keep the other way open.
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            self.kill()  # a reset or a cut: the whole connection goes
        finally:
            with self._lock:
                self._pumps_left -= 1
                last = self._pumps_left == 0
            if last:
                self.client.close()
                self.upstream.close()
                self._on_done(self)

    def kill(self) -> None:
        """Shut both sockets down both ways; the pumps wake up, end, and the last one closes them.
        (Closing here would race with a pump still inside recv on the same descriptor.)"""
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class DockerProxy:
    """Forward a Unix socket to the Docker engine's, with a switch to cut it. See the module doc."""

    def __init__(self, upstream: str = "/var/run/docker.sock") -> None:
        self.upstream = upstream.removeprefix("unix://")
        tmp = tempfile.gettempdir()
        if len(tmp) > _SUN_PATH_MAX - 30:
            tmp = "/tmp"
        self._dir = Path(tempfile.mkdtemp(prefix="dproxy-", dir=tmp))
        self.path = self._dir / "docker.sock"
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._stop_accepting = threading.Event()
        self.accepted = 0  # connections accepted since start, all listening periods together
        self._stopped = False

    @property
    def url(self) -> str:
        """``unix://...``: for DOCKER_HOST, ``docker -H`` or ``docker.DockerClient(base_url=...)``."""
        return f"unix://{self.path}"

    @property
    def listening(self) -> bool:
        return self._listener is not None

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    def start(self) -> DockerProxy:
        """Begin listening (the same as ``restore()``); returns self."""
        self.restore()
        return self

    def restore(self) -> None:
        """Listen again on the same path (a no-op when already listening)."""
        if self._stopped:
            raise RuntimeError("the proxy was stopped; make a new one")
        if self._listener is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(128)
        listener.settimeout(_ACCEPT_POLL_S)
        self._listener = listener
        self._stop_accepting = threading.Event()
        self._accepting = threading.Thread(target=self._accept_loop, args=(listener, self._stop_accepting),
                                           daemon=True, name="dproxy-accept")
        self._accepting.start()

    def cut(self) -> None:
        """The engine goes down: stop listening, remove the socket file, shut every open connection.
        When this returns, a new connection to ``url`` fails and every old one has been closed."""
        listener, thread = self._listener, self._accepting
        self._listener = self._accepting = None
        if listener is not None and thread is not None:
            self._stop_accepting.set()
            thread.join()  # the loop closes the listener itself: nothing is accepted after this
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.kill()
        for link in links:
            for t in link.threads:
                t.join(timeout=5)

    def stop(self) -> None:
        """Cut, and remove the temporary folder. The proxy cannot be restored after this."""
        if self._stopped:
            return
        self.cut()
        self._stopped = True
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> DockerProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                client.settimeout(None)  # accepted sockets inherit the listener's timeout
                self._forward(client)
        finally:
            listener.close()

    def _forward(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.upstream)
        except OSError:
            # The engine itself is down: the client sees its connection closed, as with no engine.
            upstream.close()
            client.close()
            return
        link = _Link(client, upstream, self._forget)
        with self._lock:
            self._links.add(link)
            self.accepted += 1
        link.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
