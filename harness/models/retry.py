"""Calling a provider: the API key from the environment, and our own retries with backoff.

The SDKs' internal retries are switched off (``max_retries=0`` on their clients) so that the count is
ours, reported in ``ModelResponse.attempts``, and the policy is the same for every provider: retry
429, 408, 409, 5xx (529 "overloaded" included), timeouts and connection errors, with exponential
backoff and jitter, or after the server's ``Retry-After`` when it sends one; fail at once on any
other 4xx, with the status and the provider's message. Each attempt is bounded by the client's
timeout (``cfg.request_timeout_s``), which httpx applies to connecting and to every read: a server
that hangs is cut off; one that trickles bytes slower than that is not.

The key never leaves the SDK client: it is not stored on our objects, and every message we raise
or log passes through a redactor first, in case a server echoes it back.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from harness.config import ModelConfig
from harness.models.base import ModelError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Worth another try: request timeout, conflict (a concurrent request; the APIs document a retry),
# rate limit. Every 5xx is too.
RETRYABLE_STATUS = frozenset({408, 409, 429})


def read_api_key(cfg: ModelConfig) -> str | None:
    """The key from the environment variable ``cfg.api_key_env`` names; None when it names none.
    A named variable that is unset or empty is an error naming the variable (never its value)."""
    if not cfg.api_key_env:
        return None
    value = os.environ.get(cfg.api_key_env, "").strip()
    if not value:
        raise ModelError(f"model.api_key_env is {cfg.api_key_env!r}, but that environment variable is not set: "
                         f"export {cfg.api_key_env}=<your {cfg.provider} key> before starting the run")
    return value


def make_redactor(secret: str | None) -> Callable[[str], str]:
    """A function that blanks ``secret`` out of any text."""
    if not secret:
        return lambda text: text
    return lambda text: text.replace(secret, "[redacted]")


@dataclass(frozen=True)
class SdkErrors:
    """One SDK's exception classes; the OpenAI and Anthropic SDKs share this shape."""

    status: type[Exception]  # APIStatusError: .status_code, .response, .body, .message
    connection: type[Exception]  # APIConnectionError; APITimeoutError is a subclass
    timeout: type[Exception]
    base: type[Exception]  # APIError: anything else the API layer raises (e.g. an unparsable body)


@dataclass
class RetryPolicy:
    """How many times and how long to wait. ``sleep`` and ``rand`` are injectable for tests."""

    max_retries: int | None = 6  # None: as many as the outage limit allows
    # How long a run waits through an outage (from the call's first failure) before it stops.
    outage_limit_s: float = 1800.0
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    # A Retry-After beyond this is clipped: a run waits, but not for hours on one call.
    max_retry_after_s: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    rand: Callable[[], float] = field(default=random.random, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    # Told before every wait: "waiting for the model API (attempt n, next try in s): why".
    on_wait: Callable[[str], None] | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, cfg: ModelConfig, on_wait: Callable[[str], None] | None = None) -> RetryPolicy:
        return cls(max_retries=cfg.max_retries, outage_limit_s=cfg.outage_limit_s, on_wait=on_wait)

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based): the server's Retry-After when
        given, else exponential backoff with jitter (half fixed, half random, so waits spread out)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        return backoff * (0.5 + 0.5 * self.rand())


@dataclass(frozen=True)
class _Failure:
    retryable: bool
    what: str
    retry_after: float | None = None


def call_with_retries(call: Callable[[], T], *, provider: str, errors: SdkErrors, policy: RetryPolicy,
                      redact: Callable[[str], str]) -> tuple[T, int]:
    """Run ``call`` until it returns, retrying what is worth retrying; returns (result, attempts).
    Raises ModelError (its text redacted, no SDK exception chained) when it gives up."""
    attempt = 0
    first_failure: float | None = None
    while True:
        attempt += 1
        outcome = _attempt(call, errors)
        if not isinstance(outcome, _Failure):
            return outcome, attempt
        what = redact(outcome.what)
        if not outcome.retryable:
            raise ModelError(f"{provider}: {what}")
        now = policy.clock()
        first_failure = now if first_failure is None else first_failure
        wait = policy.delay(attempt, outcome.retry_after)
        if policy.max_retries is not None and attempt > policy.max_retries:
            raise ModelError(f"{provider}: gave up after {attempt} attempts; last error: {what}")
        if now - first_failure + wait > policy.outage_limit_s:
            raise ModelError(f"{provider}: unavailable for {now - first_failure:.0f} s, beyond the outage limit "
                             f"(model.outage_limit_s = {policy.outage_limit_s:g}); last error: {what}")
        note = f"waiting for the model API (attempt {attempt}, next try in {wait:.1f} s): {what}"
        log.warning("%s: %s; retry %d in %.1f s", provider, what, attempt, wait)
        if policy.on_wait is not None:
            policy.on_wait(note)
        policy.sleep(wait)


def _attempt(call: Callable[[], T], errors: SdkErrors) -> T | _Failure:
    """One attempt: its result, or what went wrong. The failure is described inside ``except`` but
    raised by the caller outside it, so that no SDK exception (holding the request and its headers)
    rides along as ``__context__``."""
    try:
        return call()
    except errors.status as e:
        status = int(getattr(e, "status_code", 0))
        retryable = status in RETRYABLE_STATUS or status >= 500
        headers = getattr(getattr(e, "response", None), "headers", None)
        retry_after = parse_retry_after(headers) if retryable else None
        return _Failure(retryable, f"HTTP {status}: {provider_message(e)}", retry_after)
    except errors.timeout:
        return _Failure(True, "the request timed out")
    except errors.connection as e:
        return _Failure(True, f"connection error: {getattr(e, 'message', '') or type(e).__name__}")
    except errors.base as e:
        return _Failure(False, f"{type(e).__name__}: {getattr(e, 'message', '') or e}")


def provider_message(e: Exception) -> str:
    """The human-readable message in an error response: ``error.message`` in both providers'
    bodies, else the body text, else the SDK's own message."""
    body = getattr(e, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        return str(body)[:1000]
    if isinstance(body, str) and body.strip():
        return body.strip()[:1000]
    return str(getattr(e, "message", "") or e)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
