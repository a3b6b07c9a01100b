"""Retry policy details that the wire tests do not reach."""

from __future__ import annotations

import email.utils
import time

from harness.models.retry import RetryPolicy, parse_retry_after


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    low = RetryPolicy(base_delay_s=1, max_delay_s=10, rand=lambda: 0.0)
    high = RetryPolicy(base_delay_s=1, max_delay_s=10, rand=lambda: 1.0)
    assert [low.delay(n, None) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert [high.delay(n, None) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 10.0]


def test_retry_after_is_respected_but_clipped() -> None:
    policy = RetryPolicy(max_retry_after_s=300)
    assert policy.delay(1, 12.5) == 12.5
    assert policy.delay(1, 86400) == 300


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after({"retry-after": date}) or 0) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
