"""FlakyEndpoint driven by the real ``openai`` SDK (its own retries off): every outage the SDK sees."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import openai
import pytest

from tests.faults.flaky_server import FlakyEndpoint, completion, hang, rate_limited, server_error


@pytest.fixture
def ep() -> Iterator[FlakyEndpoint]:
    with FlakyEndpoint() as e:
        yield e


def sdk(ep: FlakyEndpoint, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{ep.url}/v1", api_key="sk-test", max_retries=0, timeout=timeout)


def ask(client: openai.OpenAI) -> str | None:
    reply = client.chat.completions.create(model="glm-5.1", messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_down_refuses_connections_and_up_serves_again_on_the_same_port(ep: FlakyEndpoint) -> None:
    client = sdk(ep)
    ep.queue(completion("before"), completion("after"))
    assert ask(client) == "before"
    port = ep.port

    ep.down()
    assert not ep.is_up and refused(port)
    t0 = time.monotonic()
    with pytest.raises(openai.APIConnectionError) as info:
        ask(client)
    assert not isinstance(info.value, openai.APITimeoutError)  # refused at once, not waited out
    assert time.monotonic() - t0 < 1.0
    assert len(ep.requests) == 1  # the refused call never arrived, and took no reply

    ep.up()
    assert ep.is_up and ep.port == port and not refused(port)
    assert ask(client) == "after"
    assert ep.downs == 1


def test_rate_limit_carries_retry_after(ep: FlakyEndpoint) -> None:
    ep.queue(rate_limited(retry_after_s=7))
    with pytest.raises(openai.RateLimitError) as info:
        ask(sdk(ep))
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert "Rate limit reached" in info.value.message


def test_server_errors_and_hangs(ep: FlakyEndpoint) -> None:
    ep.queue(server_error(), server_error(503, "upstream connect error"), hang(10), completion("fine"))
    client = sdk(ep, timeout=0.3)
    with pytest.raises(openai.InternalServerError) as info:
        ask(client)
    assert info.value.status_code == 500
    with pytest.raises(openai.InternalServerError) as info:
        ask(client)
    assert info.value.status_code == 503 and "upstream connect error" in info.value.message
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        ask(client)
    assert time.monotonic() - t0 < 3
    assert ask(client) == "fine"


def test_timed_outage_then_the_scripted_failures_then_recovery(ep: FlakyEndpoint) -> None:
    """The whole story of an outage as a client polling every 50 ms lives it."""
    client = sdk(ep, timeout=0.3)
    ep.queue(rate_limited(retry_after_s=2), server_error(), hang(10), completion("recovered"))
    ep.down(for_s=0.4)
    t0 = time.monotonic()
    seen: list[str] = []
    answer = None
    while answer is None and time.monotonic() - t0 < 10:
        try:
            answer = ask(client)
        except openai.APIError as e:
            if not seen or seen[-1] != type(e).__name__:
                seen.append(type(e).__name__)
            time.sleep(0.05)
    assert answer == "recovered"
    assert seen == ["APIConnectionError", "RateLimitError", "InternalServerError", "APITimeoutError"]
    assert time.monotonic() - t0 >= 0.4  # refused for the whole outage
    assert ep.is_up and ep.downs == 1


def test_going_down_cuts_a_request_in_flight(ep: FlakyEndpoint) -> None:
    ep.queue(hang(30))
    client = sdk(ep, timeout=20)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            ask(client)
        except BaseException as e:  # noqa: BLE001 (handed to the test thread)
            outcome.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while not ep.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ep.requests, "the request never arrived"
    t0 = time.monotonic()
    ep.down()
    caller.join(timeout=5)
    assert not caller.is_alive() and time.monotonic() - t0 < 2  # cut, not left to the 20 s timeout
    assert len(outcome) == 1 and isinstance(outcome[0], openai.APIConnectionError)
    assert not isinstance(outcome[0], openai.APITimeoutError)


def test_up_cancels_a_timed_return_and_exit_leaves_the_port_closed() -> None:
    with FlakyEndpoint() as ep:
        ep.down(for_s=0.2)
        ep.up()  # back now: the timer is cancelled
        ep.down()
        ep.down()  # already down: not counted again
        time.sleep(0.4)
        assert not ep.is_up and refused(ep.port)  # the cancelled timer did not bring it back
        assert ep.downs == 2
        ep.up()
        ep.up()
        ep.queue(completion("x"))
        assert ask(sdk(ep)) == "x"
        port = ep.port
    assert refused(port)
