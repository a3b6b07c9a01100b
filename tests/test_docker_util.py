"""``harness.docker_util``: the policy of every Docker call, with fake calls (no engine needed)."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest
import requests
import requests.exceptions
import urllib3.exceptions

from harness.docker_util import EngineUnavailable, call_docker, hardened, is_engine_down, is_read_timeout


def api_error(status: int, explanation: str = "") -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.45/containers/create"
    cls = docker.errors.NotFound if status == 404 else docker.errors.APIError
    return cls("error", response=response, explanation=explanation)


def socket_gone() -> Exception:
    """What docker-py raises when the engine's socket does not exist."""
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", FileNotFoundError(2, "No such file or directory")))


def read_timed_out() -> Exception:
    """What docker-py raises over the Unix socket when a read times out."""
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.ReadTimeoutError(None, "/", "UnixHTTPConnectionPool(host='localhost'): Read timed out."))  # type: ignore[arg-type]


class Calls:
    """A fake Docker call: raises the given exceptions in turn, then returns "ok"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class FakeSleep:
    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, s: float) -> None:
        self.pauses.append(s)


def test_engine_down_is_told_from_other_errors() -> None:
    assert is_engine_down(socket_gone())
    assert is_engine_down(ConnectionRefusedError(111, "Connection refused"))
    assert is_engine_down(requests.exceptions.ConnectionError("Failed to establish a new connection"))
    assert is_engine_down(docker.errors.DockerException(
        "Error while fetching server API version: ('Connection aborted.', FileNotFoundError(2, 'No such file'))"))
    assert is_engine_down(FileNotFoundError(2, "No such file or directory", "/var/run/docker.sock"))
    assert is_engine_down(api_error(500, "Cannot connect to the Docker daemon. Is the docker daemon running?"))
    wrapped = docker.errors.DockerException("Error while fetching server API version")
    wrapped.__cause__ = socket_gone()
    assert is_engine_down(wrapped)

    assert not is_engine_down(read_timed_out()) and is_read_timeout(read_timed_out())
    assert not is_engine_down(requests.exceptions.ReadTimeout("read timed out"))
    assert not is_engine_down(api_error(500, "driver failed"))
    assert not is_engine_down(api_error(409, "conflict"))
    assert not is_engine_down(FileNotFoundError(2, "No such file or directory", "/tmp/build/Cargo.toml"))
    assert not is_engine_down(ValueError("bad"))


def test_4xx_is_raised_at_once() -> None:
    for status in (404, 400, 409):
        calls, sleep = Calls(api_error(status)), FakeSleep()
        with pytest.raises(docker.errors.APIError):
            call_docker(calls, sleep=sleep)
        assert calls.n == 1 and sleep.pauses == []


def test_5xx_and_read_timeouts_are_retried_then_raised() -> None:
    calls, sleep = Calls(api_error(500), read_timed_out(), api_error(503)), FakeSleep()
    assert call_docker(calls, sleep=sleep) == "ok"
    assert calls.n == 4 and sleep.pauses == pytest.approx([0.2, 0.4, 0.8])

    calls, sleep = Calls(*[api_error(500)] * 5), FakeSleep()
    with pytest.raises(docker.errors.APIError):
        call_docker(calls, retries=2, sleep=sleep)
    assert calls.n == 3 and sleep.pauses == pytest.approx([0.2, 0.4])


def test_other_errors_are_raised_as_they_are() -> None:
    calls = Calls(RuntimeError("a bug"))
    with pytest.raises(RuntimeError):
        call_docker(calls, sleep=FakeSleep())
    assert calls.n == 1


def test_engine_down_is_waited_for_and_the_call_recovers() -> None:
    calls, sleep, told = Calls(*[socket_gone()] * 6), FakeSleep(), []
    assert call_docker(calls, on_wait=told.append, sleep=sleep) == "ok"
    assert calls.n == 7 and len(told) == 6 and len(sleep.pauses) == 6
    assert all(m.startswith(f"waiting for the Docker engine (attempt {i + 1}, unreachable for ")
               for i, m in enumerate(told))
    assert "next try in" in told[0] and "ConnectionError" in told[0]
    # Backoff from 1 s, doubling (with jitter: each pause is half to all of its step), at most 30 s.
    assert sleep.pauses[0] == pytest.approx(1.0)
    for i, p in enumerate(sleep.pauses):
        step = min(30.0, 2.0**i)
        assert max(1.0, step / 2) <= p <= step


def test_pauses_are_capped_at_30_s() -> None:
    calls, sleep = Calls(*[socket_gone()] * 12), FakeSleep()
    assert call_docker(calls, engine_wait_s=10_000, sleep=sleep) == "ok"
    assert max(sleep.pauses) <= 30.0 and sleep.pauses[-1] >= 15.0


def test_engine_down_past_the_limit_raises_engine_unavailable() -> None:
    calls, sleep, told = Calls(*[socket_gone()] * 1000), FakeSleep(), []
    with pytest.raises(EngineUnavailable) as e:
        call_docker(calls, engine_wait_s=120, on_wait=told.append, sleep=sleep)
    assert sum(sleep.pauses) == pytest.approx(120)  # the last pause stops at the limit
    assert len(told) == len(sleep.pauses) and calls.n == len(sleep.pauses) + 1
    assert "unreachable for 120 s" in str(e.value) and "ConnectionError" in str(e.value)
    assert isinstance(e.value.__cause__, requests.exceptions.ConnectionError)


def test_no_wait_at_all_with_a_zero_limit() -> None:
    calls, sleep = Calls(socket_gone()), FakeSleep()
    with pytest.raises(EngineUnavailable):
        call_docker(calls, engine_wait_s=0, sleep=sleep)
    assert calls.n == 1 and sleep.pauses == []


def test_an_outage_after_recovery_is_a_new_one() -> None:
    # Down, up (a 500), down again: the second outage starts its own backoff from 1 s.
    calls, sleep = Calls(socket_gone(), socket_gone(), api_error(500), socket_gone()), FakeSleep()
    assert call_docker(calls, sleep=sleep) == "ok"
    assert sleep.pauses[3] == pytest.approx(1.0) and sleep.pauses[2] == pytest.approx(0.2)


def test_interrupts_are_never_swallowed() -> None:
    def interrupted() -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_docker(interrupted, sleep=FakeSleep())


def test_hardened_defaults_and_overrides() -> None:
    kw = hardened()
    assert kw["cap_drop"] == ["ALL"] and kw["security_opt"] == ["no-new-privileges"]
    assert kw["network_mode"] == "none"
    assert kw["log_config"] == {"type": "json-file", "config": {"max-size": "2m", "max-file": "1"}}
    assert "labels" not in kw
    kw["cap_drop"].append("x")  # a copy: callers cannot change the defaults
    assert hardened()["cap_drop"] == ["ALL"]
    over = hardened(network_mode="container:abc", pids_limit=64, labels={"staircase.scorer": "1"})
    assert over["network_mode"] == "container:abc" and over["pids_limit"] == 64
    assert over["labels"] == {"staircase.scorer": "1"} and over["cap_drop"] == ["ALL"]

