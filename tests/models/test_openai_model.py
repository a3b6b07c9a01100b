"""OpenAIModel against a local server speaking chat completions, through the real ``openai`` SDK."""

from __future__ import annotations

import json
import time

import pytest

from harness.models.base import Message, Model, ModelError, ToolCall, ToolSpec
from harness.models.openai_model import OpenAIModel
from harness.models.pricing import Price, PriceTable
from tests.models.conftest import KEY_ENV, Waits, model_config
from tests.models.wire import Reply, WireServer, openai_completion, openai_error, openai_tool_call

BASH = ToolSpec(name="bash", description="Run a shell command.",
                parameters={"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]})
PRICES = PriceTable({"glm-5.1": Price(input=1.40, output=4.40, cached_input=0.26, cache_write=0.0)})


def make(server: WireServer, waits: Waits, max_retries: int = 3, **cfg: object) -> OpenAIModel:
    base: dict[str, object] = dict(
        provider="openai", name="glm-5.1", base_url=f"{server.url}/v1", api_key_env=KEY_ENV,
        request_timeout_s=5.0, max_output_tokens=2048)
    base.update(cfg)
    return OpenAIModel(model_config(**base), PRICES, retry=waits.policy(max_retries))


def start() -> list[Message]:
    return [Message(role="system", content="You optimize a vector DB."),
            Message(role="user", content="The task.", cache=True), Message(role="user", content="Go.")]


def test_tool_call_round_trip_keeps_reasoning_and_usage(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(
        Reply(body=openai_completion(tool_calls=[openai_tool_call("call_a", "bash", '{"command": "ls"}')],
                                     reasoning="First look at the files.", prompt=1000, completion=50, cached=800)),
        Reply(body=openai_completion(content="Done.", prompt=1200, completion=10, cached=1000)))
    model = make(server, waits, temperature=0.2,
                 extra_body={"thinking": {"type": "enabled", "clear_thinking": False}})
    assert isinstance(model, Model)

    first = model.complete(start(), [BASH])
    msg = first.message
    assert msg.tool_calls == [ToolCall(id="call_a", name="bash", arguments='{"command": "ls"}')]
    assert msg.reasoning == "First look at the files."
    assert first.usage.input_tokens == 1000 and first.usage.cached_input_tokens == 800
    assert first.usage.output_tokens == 50
    assert first.cost_usd == pytest.approx((200 * 1.40 + 800 * 0.26 + 50 * 4.40) / 1e6)
    assert first.stop_reason == "tool_calls" and first.attempts == 1 and first.model == "glm-5.1"

    sent = server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {api_key}"
    assert sent.body["model"] == "glm-5.1" and sent.body["max_tokens"] == 2048 and sent.body["temperature"] == 0.2
    assert sent.body["thinking"] == {"type": "enabled", "clear_thinking": False}  # extra_body passed through
    assert sent.body["tools"] == [{"type": "function", "function": {
        "name": "bash", "description": "Run a shell command.", "parameters": BASH.parameters}}]
    assert [m["role"] for m in sent.body["messages"]] == ["system", "user", "user"]

    convo = [*start(), msg, Message(role="tool", content="db.rs\nmain.rs", tool_call_id="call_a", name="bash")]
    second = model.complete(convo, [BASH])
    assert second.message.content == "Done." and second.message.tool_calls == []
    wire = server.requests[1].body["messages"]
    assert wire[3] == {"role": "assistant", "content": None, "reasoning_content": "First look at the files.",
                       "tool_calls": [{"id": "call_a", "type": "function",
                                       "function": {"name": "bash", "arguments": '{"command": "ls"}'}}]}
    assert wire[4] == {"role": "tool", "tool_call_id": "call_a", "content": "db.rs\nmain.rs"}


def test_malformed_arguments_pass_through_untouched(server: WireServer, waits: Waits, api_key: str) -> None:
    broken = '{"command": "cat src/db.rs'  # cut off mid-string: the agent, not the adapter, answers it
    server.queue(Reply(body=openai_completion(tool_calls=[openai_tool_call("call_b", "bash", broken)])))
    resp = make(server, waits).complete(start(), [BASH])
    assert resp.message.tool_calls[0].arguments == broken


def test_reasoning_in_think_tags_is_split_from_content(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(Reply(body=openai_completion(content="<think>plan it</think>\nHere is the plan.")))
    resp = make(server, waits).complete(start(), [])
    assert resp.message.reasoning == "plan it" and resp.message.content == "Here is the plan."
    assert "tools" not in server.requests[0].body


def test_official_api_gets_max_completion_tokens(waits: Waits, api_key: str) -> None:
    model = OpenAIModel(model_config(provider="openai", name="gpt-5", api_key_env=KEY_ENV), PRICES,
                        retry=waits.policy())
    kwargs = model.request(start(), [])
    assert "max_completion_tokens" in kwargs and "max_tokens" not in kwargs


def test_429_waits_for_retry_after(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(openai_error(429, "Rate limit reached", {"Retry-After": "7"}),
                 Reply(body=openai_completion(content="ok")))
    resp = make(server, waits).complete(start(), [])
    assert resp.attempts == 2 and resp.message.content == "ok"
    assert waits == [7.0]
    assert len(server.requests) == 2


def test_500_then_success_backs_off(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(openai_error(500, "internal"), openai_error(503, "unavailable"),
                 Reply(body=openai_completion(content="ok")))
    resp = make(server, waits).complete(start(), [])
    assert resp.attempts == 3
    assert waits == [0.75, 1.5]  # 1 s and 2 s backoff, jitter fixed at 0.75 of each


def test_hanging_response_times_out_and_is_retried(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(Reply(body=openai_completion(content="late"), hang_s=5.0), Reply(body=openai_completion(content="ok")))
    t0 = time.monotonic()
    resp = make(server, waits, request_timeout_s=0.3).complete(start(), [])
    assert resp.attempts == 2 and resp.message.content == "ok"
    assert time.monotonic() - t0 < 3.0  # the first attempt was cut at its timeout, not left to hang


def test_gives_up_after_max_retries(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(*[openai_error(502, "bad gateway")] * 5)
    with pytest.raises(ModelError, match=r"gave up after 3 attempts.*HTTP 502: bad gateway"):
        make(server, waits, max_retries=2).complete(start(), [])
    assert len(server.requests) == 3 and len(waits) == 2


def test_400_fails_at_once_with_the_providers_message(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(openai_error(400, "messages[1].content must be a string"), Reply(body=openai_completion("x")))
    with pytest.raises(ModelError) as err:
        make(server, waits).complete(start(), [])
    assert "HTTP 400" in str(err.value) and "messages[1].content must be a string" in str(err.value)
    assert len(server.requests) == 1 and waits == []
    assert err.value.__cause__ is None and err.value.__context__ is None  # no SDK exception riding along


def test_text_tool_mode(server: WireServer, waits: Waits, api_key: str) -> None:
    reply = 'I will list the files.\n```tool\n{"name": "bash", "arguments": {"command": "ls"}}\n```'
    server.queue(Reply(body=openai_completion(content=reply)), Reply(body=openai_completion(content="Done.")))
    model = make(server, waits, tool_mode="text")
    first = model.complete(start(), [BASH])
    call = first.message.tool_calls[0]
    assert (call.name, json.loads(call.arguments)) == ("bash", {"command": "ls"})
    assert first.message.content == "I will list the files." and first.stop_reason == "tool_use"
    sent = server.requests[0].body
    assert "tools" not in sent
    assert "```tool" in sent["messages"][0]["content"] and "## bash" in sent["messages"][0]["content"]

    convo = [*start(), first.message, Message(role="tool", content="db.rs", tool_call_id=call.id, name="bash")]
    model.complete(convo, [BASH])
    wire = server.requests[-1].body["messages"]
    assert [m["role"] for m in wire] == ["system", "user", "assistant", "user"]
    assert wire[2]["content"].endswith('```tool\n{"name": "bash", "arguments": {"command": "ls"}}\n```')
    assert "tool_calls" not in wire[2]
    assert wire[3]["content"] == f"[result of tool call bash {call.id}]\ndb.rs"


def test_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAIRCASE_NO_SUCH_KEY", raising=False)
    cfg = model_config(provider="openai", name="glm-5.1", base_url="http://127.0.0.1:9/v1",
                       api_key_env="STAIRCASE_NO_SUCH_KEY")
    with pytest.raises(ModelError, match="STAIRCASE_NO_SUCH_KEY"):
        OpenAIModel(cfg, PRICES)
