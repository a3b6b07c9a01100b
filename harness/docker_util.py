"""Docker calls with one policy, and the container hardening every staircase container shares.

An unattended run lives for days, and the Docker engine does not always answer: it restarts after
an upgrade, its socket goes away for a moment, it answers 500 under load. ``call_docker`` tells
these apart: a request the engine refuses (4xx) is a bug and is raised at once; a transient engine
error (5xx, a read timeout) is retried a few times; an engine that cannot be reached at all is
waited for, with capped backoff, up to a limit, after which ``EngineUnavailable`` says how long it
was waited for. The caller decides what an unavailable engine means (the run loop waits and scores
again; it never counts it as the submission's failure).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import docker.errors
import requests.exceptions
import urllib3.exceptions

T = TypeVar("T")

# What every container of ours gets: no capabilities, no privilege gain, no network, bounded logs.
_HARDENING: dict[str, Any] = {
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "network_mode": "none",
    "log_config": {"type": "json-file", "config": {"max-size": "2m", "max-file": "1"}},
}
# Waiting for an unreachable engine: the first pause, the longest, and how much of each is random
# (so that several runs on one machine do not knock on the socket in step).
_WAIT_FIRST_S = 1.0
_WAIT_MAX_S = 30.0
_JITTER = 0.5
# Phrases of an engine that cannot be reached, in exceptions that carry only a message.
_DOWN_PHRASES = ("is the docker daemon running", "connection refused", "connection aborted",
                 "no such file or directory", "failed to establish a new connection")


class EngineUnavailable(Exception):
    """The Docker engine did not answer within the wait limit."""


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it wraps (causes, contexts, and exceptions among its args, as
    requests wraps urllib3's)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 16:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [x for x in (e.__cause__, e.__context__, *e.args) if isinstance(x, BaseException)]
    return seen


def is_read_timeout(exc: BaseException) -> bool:
    """The engine took the request but did not answer in time. Over the Unix socket, requests
    reports this as a ``ConnectionError`` wrapping urllib3's ``ReadTimeoutError``: it is not an
    engine that is down (and for ``container.wait(timeout=...)`` it means the container ran past
    its time limit)."""
    return any(isinstance(e, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError)
               for e in _chain(exc))


def never_reached(exc: BaseException) -> bool:
    """The request never reached the engine (the connection was refused, or its socket is missing):
    whatever it asked for did not happen, so it may be sent again without doing anything twice."""
    return any(isinstance(e, ConnectionRefusedError) or (isinstance(e, FileNotFoundError) and
                                                         str(e.filename or "").endswith(".sock"))
               for e in _chain(exc))


def is_engine_down(exc: BaseException) -> bool:
    """The engine cannot be reached at all: the connection is refused, reset or aborted, its socket
    is missing, or the client says so ("is the docker daemon running?"). A read timeout is not."""
    if is_read_timeout(exc):
        return False
    for e in _chain(exc):
        if isinstance(e, docker.errors.APIError):
            if e.is_server_error() and "is the docker daemon running" in str(e.explanation or e).lower():
                return True
            continue
        if isinstance(e, requests.exceptions.ConnectionError | ConnectionError
                      | urllib3.exceptions.NewConnectionError | urllib3.exceptions.ProtocolError):
            return True
        if isinstance(e, FileNotFoundError) and (e is not exc or e.filename is None
                                                 or str(e.filename).endswith(".sock")):
            return True  # the socket is gone (not some other file a caller looked for)
        if isinstance(e, docker.errors.DockerException) and any(p in str(e).lower() for p in _DOWN_PHRASES):
            return True
    return False


def _is_transient(exc: BaseException) -> bool:
    """An engine error worth a quick retry: a 5xx or a read timeout."""
    if isinstance(exc, docker.errors.APIError):
        return exc.is_server_error()
    return is_read_timeout(exc)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def call_docker(fn: Callable[[], T], *, retries: int = 3, engine_wait_s: float = 600.0,
                on_wait: Callable[[str], None] | None = None,
                sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, under one policy for every Docker call.

    - ``docker.errors.NotFound`` and every other 4xx: raised at once (retrying cannot help);
    - a 5xx or a read timeout: retried up to ``retries`` times, after 0.2, 0.4, 0.8 ... s;
    - an engine that cannot be reached (:func:`is_engine_down`): waited for, with exponential
      backoff from 1 s to 30 s with jitter, ``on_wait`` told before each pause, until
      ``engine_wait_s`` have passed since the first failure; then :class:`EngineUnavailable`.
    - anything else: raised as it is.

    Time waited is the larger of the clock's and the sum of the pauses, so that a fake ``sleep``
    (tests) moves it too.
    """
    transient = 0  # retries used on 5xx and read timeouts
    down_attempts = 0  # failed attempts while the engine is unreachable
    down_since = 0.0
    slept = 0.0  # pauses since the engine became unreachable
    while True:
        try:
            return fn()
        except docker.errors.NotFound:
            raise
        except Exception as e:
            if is_engine_down(e):
                if down_attempts == 0:
                    down_since, slept = time.monotonic(), 0.0
                down_attempts += 1
                waited = max(time.monotonic() - down_since, slept)
                if waited >= engine_wait_s:
                    raise EngineUnavailable(
                        f"the Docker engine was unreachable for {waited:.0f} s ({down_attempts} attempts, "
                        f"limit {engine_wait_s:.0f} s); last error: {_describe(e)}") from e
                pause = min(_WAIT_MAX_S, _WAIT_FIRST_S * 2 ** (down_attempts - 1))
                pause = max(_WAIT_FIRST_S, pause * random.uniform(1 - _JITTER, 1))
                pause = min(pause, engine_wait_s - waited)
                if on_wait is not None:
                    on_wait(f"waiting for the Docker engine (attempt {down_attempts}, unreachable for "
                            f"{waited:.0f} s, next try in {pause:.0f} s): {_describe(e)}")
                sleep(pause)
                slept += pause
                continue
            down_attempts = 0  # the engine answered: a later outage is a new one
            if isinstance(e, docker.errors.APIError) and not e.is_server_error():
                raise
            if _is_transient(e) and transient < retries:
                sleep(0.2 * 2**transient)
                transient += 1
                continue
            raise


def hardened(**kw: Any) -> dict[str, Any]:
    """Keyword arguments for ``containers.run``/``create``: the shared hardening (every capability
    dropped, no-new-privileges, no network, json-file logs of at most one 2 MB file), with ``kw``
    overriding or adding settings; ``labels`` are merged into any the hardening has."""
    out = copy.deepcopy(_HARDENING)
    labels = kw.pop("labels", None)
    out.update(kw)
    if labels:
        out["labels"] = {**out.get("labels", {}), **labels}
    return out
