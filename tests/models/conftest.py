"""Fixtures for the model adapter tests: a provider-like server, a canary key, a policy that records
its waits instead of sleeping."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from harness.config import ModelConfig
from harness.models.retry import RetryPolicy
from tests.models.wire import WireServer

KEY_ENV = "STAIRCASE_TEST_MODEL_KEY"


def model_config(**fields: object) -> ModelConfig:
    """A validated ModelConfig (through pydantic, so defaults apply as they do from YAML)."""
    return ModelConfig.model_validate(fields)


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as s:
        yield s


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A canary key: a value that must never show up in anything we write, raise or log."""
    value = f"sk-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, value)
    return value


class Waits(list[float]):
    """The delays a RetryPolicy asked for, recorded instead of slept."""

    def policy(self, max_retries: int = 3) -> RetryPolicy:
        return RetryPolicy(max_retries=max_retries, sleep=self.append, rand=lambda: 0.5)


@pytest.fixture
def waits() -> Waits:
    return Waits()
