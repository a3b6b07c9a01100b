"""The API key canary: it reaches the provider, and nothing else: not a ModelResponse, not an
exception's text, not a log record, not the adapter's own attributes. The fake provider even echoes
the key back in its error messages, as a careless proxy might."""

from __future__ import annotations

import logging

import pytest

from harness.models.anthropic_model import AnthropicModel
from harness.models.base import Message, ModelError, ToolSpec
from harness.models.openai_model import OpenAIModel
from harness.models.pricing import REPO_ROOT, PriceTable
from tests.models.conftest import KEY_ENV, Waits, model_config
from tests.models.wire import (
    Reply,
    WireServer,
    anthropic_error,
    anthropic_message,
    openai_completion,
    openai_error,
    openai_tool_call,
)

BASH = ToolSpec(name="bash", description="Run a shell command.", parameters={"type": "object", "properties": {}})
PRICES = PriceTable.load(REPO_ROOT / "configs" / "prices.yaml")
CONVO = [Message(role="system", content="sys"), Message(role="user", content="go", cache=True)]


def build(provider: str, server: WireServer, waits: Waits) -> OpenAIModel | AnthropicModel:
    if provider == "openai":
        cfg = model_config(provider="openai", name="glm-5.1", base_url=f"{server.url}/v1", api_key_env=KEY_ENV)
        return OpenAIModel(cfg, PRICES, retry=waits.policy(1))
    cfg = model_config(provider="anthropic", name="claude-opus-4-6", base_url=server.url, api_key_env=KEY_ENV)
    return AnthropicModel(cfg, PRICES, retry=waits.policy(1))


def replies(provider: str, key: str) -> list[Reply]:
    if provider == "openai":
        ok = Reply(body=openai_completion(tool_calls=[openai_tool_call("c1", "bash", "{}")], reasoning="hm"))
        return [ok, openai_error(401, f"Incorrect API key provided: {key}"),
                openai_error(500, f"upstream rejected {key}"), openai_error(500, f"upstream rejected {key}")]
    ok = Reply(body=anthropic_message([{"type": "tool_use", "id": "t1", "name": "bash", "input": {}}]))
    return [ok, anthropic_error(401, "authentication_error", f"invalid x-api-key {key}"),
            anthropic_error(529, "overloaded_error", f"overloaded for {key}"),
            anthropic_error(529, "overloaded_error", f"overloaded for {key}")]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_key_never_leaks(provider: str, server: WireServer, waits: Waits, api_key: str,
                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the SDKs' and httpx's debug output included
    server.queue(*replies(provider, api_key))
    model = build(provider, server, waits)
    seen: list[str] = []

    resp = model.complete(CONVO, [BASH])
    seen.append(resp.model_dump_json())
    for _ in range(2):  # a 401 that echoes the key; then 5xx echoing it until the retries run out
        with pytest.raises(ModelError) as err:
            model.complete(CONVO, [BASH])
        seen += [str(err.value), repr(err.value)]
        assert "[redacted]" in str(err.value)
    seen += [r.getMessage() for r in caplog.records]
    seen.append(repr(vars(model)))

    sent = server.requests[0].headers
    assert api_key in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))
    assert any("retry" in r.getMessage() for r in caplog.records)  # the logs were captured at all
    leaks = [s for s in seen if api_key in s]
    assert leaks == []
