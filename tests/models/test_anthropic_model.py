"""AnthropicModel against a local server speaking the Messages API, through the real ``anthropic`` SDK."""

from __future__ import annotations

import json

import pytest

from harness.models.anthropic_model import AnthropicModel, to_anthropic
from harness.models.base import Message, Model, ModelError, ToolCall, ToolSpec
from harness.models.pricing import Price, PriceTable
from tests.models.conftest import KEY_ENV, Waits, model_config
from tests.models.wire import Reply, WireServer, anthropic_error, anthropic_message

BASH = ToolSpec(name="bash", description="Run a shell command.",
                parameters={"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]})
PRICES = PriceTable({"claude-opus-4-6": Price(input=5.0, output=25.0, cached_input=0.5, cache_write=6.25)})
EPHEMERAL = {"type": "ephemeral"}


def make(server: WireServer, waits: Waits, max_retries: int = 3, **cfg: object) -> AnthropicModel:
    base: dict[str, object] = dict(
        provider="anthropic", name="claude-opus-4-6", base_url=server.url, api_key_env=KEY_ENV,
        request_timeout_s=5.0, max_output_tokens=4096)
    base.update(cfg)
    return AnthropicModel(model_config(**base), PRICES, retry=waits.policy(max_retries))


def start() -> list[Message]:
    return [Message(role="system", content="You optimize a vector DB."),
            Message(role="user", content="The task.", cache=True), Message(role="user", content="Go.")]


def tool_turn() -> dict[str, object]:
    return anthropic_message([
        {"type": "thinking", "thinking": "Check both files.", "signature": "sig-123"},
        {"type": "text", "text": "Reading two files."},
        {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "cat src/db.rs"}},
        {"type": "tool_use", "id": "toolu_2", "name": "bash", "input": {"command": "cat src/distance.rs"}},
    ], input_tokens=100, output_tokens=40, cache_read=5000, cache_write=2000)


def test_tool_use_round_trip_with_thinking_and_cache(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(Reply(body=tool_turn()),
                 Reply(body=anthropic_message([{"type": "text", "text": "Both read."}], stop_reason="end_turn")))
    model = make(server, waits, extra_body={"thinking": {"type": "enabled", "budget_tokens": 2048}})
    assert isinstance(model, Model)

    first = model.complete(start(), [BASH])
    msg = first.message
    assert msg.content == "Reading two files." and msg.reasoning == "Check both files."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in msg.tool_calls] == [
        ("toolu_1", "bash", {"command": "cat src/db.rs"}), ("toolu_2", "bash", {"command": "cat src/distance.rs"})]
    # Anthropic's input_tokens leaves out cache reads and writes; ours counts every input token.
    u = first.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens) == (7100, 5000, 2000, 40)
    assert first.cost_usd == pytest.approx((100 * 5.0 + 5000 * 0.5 + 2000 * 6.25 + 40 * 25.0) / 1e6)
    assert first.stop_reason == "tool_use" and first.attempts == 1

    sent = server.requests[0]
    assert sent.path == "/v1/messages"
    # Older SDKs send x-api-key, this one a bearer token: either way the key from the environment.
    assert api_key in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))
    body = sent.body
    assert body["model"] == "claude-opus-4-6" and body["max_tokens"] == 4096
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["system"] == [{"type": "text", "text": "You optimize a vector DB.", "cache_control": EPHEMERAL}]
    assert body["tools"] == [{"name": "bash", "description": "Run a shell command.", "input_schema": BASH.parameters}]
    # The two user messages form one turn; the task (cache=True) and the final block carry markers.
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "The task.", "cache_control": EPHEMERAL},
        {"type": "text", "text": "Go.", "cache_control": EPHEMERAL}]}]

    convo = [*start(), msg,
             Message(role="tool", content="fn search() {}", tool_call_id="toolu_1", name="bash"),
             Message(role="tool", content="fn l2() {}", tool_call_id="toolu_2", name="bash")]
    second = model.complete(convo, [BASH])
    assert second.message.content == "Both read." and second.stop_reason == "end_turn"
    turns = server.requests[1].body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[0]["content"][0]["cache_control"] == EPHEMERAL and "cache_control" not in turns[0]["content"][1]
    assert turns[1]["content"] == [
        {"type": "thinking", "thinking": "Check both files.", "signature": "sig-123"},  # sent back verbatim
        {"type": "text", "text": "Reading two files."},
        {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "cat src/db.rs"}},
        {"type": "tool_use", "id": "toolu_2", "name": "bash", "input": {"command": "cat src/distance.rs"}}]
    # Consecutive tool results: one user turn, the last block marked for the rolling cache.
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "fn search() {}"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "fn l2() {}", "cache_control": EPHEMERAL}]
    markers = json.dumps(server.requests[1].body).count('"cache_control"')
    assert markers == 3  # system, the cached task, the last block: within the API's limit of 4


def test_only_the_last_cached_message_is_marked() -> None:
    msgs = [Message(role="user", content="a", cache=True), Message(role="assistant", content="b"),
            Message(role="user", content="c", cache=True), Message(role="assistant", content="d"),
            Message(role="user", content="e")]
    system, turns = to_anthropic(msgs)
    assert system == []
    marked = [b["text"] for t in turns for b in t["content"] if "cache_control" in b]
    assert marked == ["c", "e"]


def test_thinking_unknown_to_the_adapter_is_left_out() -> None:
    replayed = Message(role="assistant", content="", reasoning="old thoughts",
                       tool_calls=[ToolCall(id="toolu_9", name="bash", arguments='{"command": "ls"}')])
    _, turns = to_anthropic([Message(role="user", content="go"), replayed])
    assert [b["type"] for b in turns[1]["content"]] == ["tool_use"]


def test_529_overloaded_is_retried(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(anthropic_error(529, "overloaded_error", "Overloaded"),
                 anthropic_error(429, "rate_limit_error", "slow down", {"retry-after": "2"}),
                 Reply(body=anthropic_message([{"type": "text", "text": "ok"}], stop_reason="end_turn")))
    resp = make(server, waits).complete(start(), [])
    assert resp.attempts == 3 and resp.message.content == "ok"
    assert waits == [0.75, 2.0]


def test_hanging_response_times_out_and_is_retried(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(Reply(body=anthropic_message([{"type": "text", "text": "late"}]), hang_s=5.0),
                 Reply(body=anthropic_message([{"type": "text", "text": "ok"}], stop_reason="end_turn")))
    resp = make(server, waits, request_timeout_s=0.3).complete(start(), [])
    assert resp.attempts == 2 and resp.message.content == "ok"


def test_400_fails_at_once(server: WireServer, waits: Waits, api_key: str) -> None:
    server.queue(anthropic_error(400, "invalid_request_error", "max_tokens: must be at most 128000"))
    with pytest.raises(ModelError, match=r"HTTP 400: max_tokens: must be at most 128000"):
        make(server, waits).complete(start(), [])
    assert len(server.requests) == 1 and waits == []


def test_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAIRCASE_NO_SUCH_KEY", raising=False)
    cfg = model_config(provider="anthropic", name="claude-opus-4-6", api_key_env="STAIRCASE_NO_SUCH_KEY")
    with pytest.raises(ModelError, match="STAIRCASE_NO_SUCH_KEY"):
        AnthropicModel(cfg, PRICES)
