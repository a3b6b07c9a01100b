"""A model endpoint that fails the ways providers do, for outage tests.

``FlakyEndpoint`` is a ``WireServer`` (scripted replies: 429 with Retry-After, 5xx, hangs, success)
that can also be *down*: its listening socket is closed, so a connection is refused as when the
provider is unreachable, and every request in flight is cut. It comes back on the same port, by
``up()`` or by itself after ``down(for_s=...)``. Requests refused while down consume no reply.

    with FlakyEndpoint() as ep:
        ep.down(for_s=2.0)  # refused for two seconds, then listening again
        ep.queue(rate_limited(retry_after_s=1), server_error(), hang(30), completion("back"))
        client = openai.OpenAI(base_url=f"{ep.url}/v1", api_key="x", max_retries=0)
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from tests.models.wire import Received, Reply, WireServer, openai_completion, openai_error


class _Listener(ThreadingHTTPServer):
    """A threading HTTP server that remembers its open connections, so that going down can cut them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def cut_open_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class FlakyEndpoint:
    """A scripted provider endpoint on 127.0.0.1 that can be down for a while. See the module doc."""

    def __init__(self) -> None:
        self.wire = WireServer()
        # The wire server's own listener only reserved a free port: ours takes over that port.
        self.port: int = self.wire.httpd.server_address[1]
        self._handler = self.wire.httpd.RequestHandlerClass
        self.wire.httpd.server_close()
        self._lock = threading.Lock()
        self._listener: _Listener | None = None
        self._serving: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self.downs = 0  # how many times it went down

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the same whether up or down (add ``/v1`` for the OpenAI SDK)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[Received]:
        """Every request that reached the server (refused connections are not requests)."""
        return self.wire.requests

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def queue(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        self.wire.queue(*replies)

    def up(self) -> None:
        """Listen again on the same port (a no-op when up); cancels a pending timed return."""
        with self._lock:
            self._cancel_timer()
            self._listen()

    def down(self, for_s: float | None = None) -> None:
        """Stop listening and cut every connection in flight; with ``for_s``, come back up by
        itself after that many seconds (this call does not wait)."""
        with self._lock:
            self._cancel_timer()
            if self._listener is not None:
                self._close_listener()
                self.downs += 1
            if for_s is not None:
                self._timer = threading.Timer(for_s, self._timed_up)
                self._timer.daemon = True
                self._timer.start()

    def __enter__(self) -> FlakyEndpoint:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._cancel_timer()
            self._close_listener()
        self.wire.release_hangs()

    # -- inside ------------------------------------------------------------------------------------

    def _listen(self) -> None:
        if self._listener is not None:
            return
        listener = _Listener(("127.0.0.1", self.port), self._handler)  # SO_REUSEADDR: TIME_WAIT is no obstacle
        self._listener = listener
        self.wire.httpd = listener  # so that WireServer.url and friends see the live server
        self._serving = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.02},
                                         daemon=True, name="flaky-endpoint")
        self._serving.start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.shutdown()  # waits for serve_forever to return: nothing is accepted after this
        listener.server_close()  # the listening socket is closed: connections are refused
        listener.cut_open_connections()

    def _timed_up(self) -> None:
        with self._lock:
            self._timer = None
            self._listen()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# ---- replies for the OpenAI chat-completions wire format -------------------------------------------

def completion(text: str = "ok") -> Reply:
    """A normal chat completion saying ``text``."""
    return Reply(body=openai_completion(content=text))


def rate_limited(retry_after_s: float = 1, message: str = "Rate limit reached, retry later") -> Reply:
    """429 with a ``Retry-After`` header, as providers send it."""
    return openai_error(429, message, {"Retry-After": f"{retry_after_s:g}"})


def server_error(status: int = 500, message: str = "The server had an error processing your request") -> Reply:
    """A 5xx (500 internal error, 502/503 from a gateway, 529 overloaded)."""
    return openai_error(status, message)


def hang(seconds: float) -> Reply:
    """Read the request, then say nothing for ``seconds`` (a client timeout should cut it first)."""
    return Reply(hang_s=seconds, body=openai_completion(content="too late"))
