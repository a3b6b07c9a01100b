"""The model gateway against fake providers speaking the real wire protocols, driven by the official
``openai`` and ``anthropic`` SDKs as the agent's clients: both protocols, streaming, translation
both ways (tool calls included), metering equal to the provider's own count, the ledger record,
budget refusals, retries, and the API key kept out of everything the agent or the record sees."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from harness.budget import Budget, Usage
from harness.config import BudgetConfig, ModelConfig
from harness.events import EndReason, GatewayCall, ModelCall, ToolCallEvent
from harness.gateway import Gateway
from harness.ledger import Ledger, read_events
from harness.models.anthropic_model import AnthropicModel
from harness.models.openai_model import OpenAIModel
from harness.models.pricing import Price, PriceTable
from harness.models.retry import RetryPolicy
from tests.gateway.fakes import FakeAnthropic, FakeOpenAI, Reply

CANARY = "sk-canary-7f3a9c1e5b2d4f60"
KEY_ENV = "STAIRCASE_TEST_GATEWAY_KEY"
PRICES = PriceTable({"fake-model": Price(input=2.0, output=8.0, cached_input=0.5, cache_write=2.5)})
BASH = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(cached=3).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(cached=2).start()
    yield server
    server.stop()


class Harness:
    """A gateway as a run holds it: a ledger, the usage rebuilt from its events, a budget."""

    def __init__(self, tmp: Path, model: OpenAIModel | AnthropicModel, budget: BudgetConfig | None = None) -> None:
        self.ledger = Ledger(tmp / "run")
        self.usage = Usage()
        self.ledger.listeners.append(self.usage.add_event)
        self.gateway = Gateway(model, self.ledger, Budget(budget or BudgetConfig(max_iterations=None), self.usage))
        self.gateway.start()

    def close(self) -> None:
        self.gateway.close()
        self.ledger.close()

    def events(self, kind: type) -> list:
        return [e for e in read_events(self.ledger.run_dir) if isinstance(e, kind)]


def _model(provider: str, url: str, monkeypatch: pytest.MonkeyPatch) -> OpenAIModel | AnthropicModel:
    monkeypatch.setenv(KEY_ENV, CANARY)
    retry = RetryPolicy(max_retries=3, sleep=lambda _s: None)
    if provider == "openai":
        cfg = ModelConfig(provider="openai", name="fake-model", base_url=f"{url}/v1", api_key_env=KEY_ENV)
        return OpenAIModel(cfg, PRICES, retry)
    cfg = ModelConfig(provider="anthropic", name="fake-model", base_url=url, api_key_env=KEY_ENV)
    return AnthropicModel(cfg, PRICES, retry)


@pytest.fixture
def via_openai(tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    h = Harness(tmp_path, _model("openai", fake_openai.url, monkeypatch))
    yield h
    h.close()


@pytest.fixture
def via_anthropic(tmp_path: Path, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    h = Harness(tmp_path, _model("anthropic", fake_anthropic.url, monkeypatch))
    yield h
    h.close()


class _Reply:
    """An HTTP answer read with the standard library (the test speaks raw HTTP here on purpose)."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status_code, self.text, self.headers = status, body.decode(), headers

    def json(self) -> dict:
        return json.loads(self.text)


def _http(method: str, url: str, body: dict | None = None) -> _Reply:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return _Reply(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return _Reply(e.code, e.read(), dict(e.headers))


def _openai_client(h: Harness) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{h.gateway.url}/v1", api_key="staircase-gateway", max_retries=0)


def _anthropic_client(h: Harness) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=h.gateway.url, api_key="staircase-gateway", max_retries=0)


def _assert_metered(h: Harness, fake: FakeOpenAI | FakeAnthropic, before: tuple[int, int], calls: int) -> None:
    """The gateway's usage is what the provider counted, and every call has its record."""
    model_calls = h.events(ModelCall)
    assert len(model_calls) == calls
    assert sum(e.usage.input_tokens for e in model_calls) == fake.input_tokens - before[0]
    assert sum(e.usage.output_tokens for e in model_calls) == fake.output_tokens - before[1]
    assert h.usage.tokens == fake.input_tokens + fake.output_tokens - sum(before)
    assert h.usage.dollars == pytest.approx(sum(PRICES.cost("fake-model", e.usage) for e in model_calls))
    assert h.usage.dollars > 0
    records = h.events(GatewayCall)
    assert [r.status for r in records] == [200] * calls
    for r in records:
        saved = json.loads((h.ledger.run_dir / r.record).read_text())
        assert saved["request"]["messages"]


def test_anthropic_client_against_openai_provider_with_tools(via_openai: Harness, fake_openai: FakeOpenAI) -> None:
    """Claude-Code-style agent, vLLM-style provider: tool_use out, tool_result back, both translated."""
    h = via_openai
    h.gateway.begin(1, 0)
    before = (fake_openai.input_tokens, fake_openai.output_tokens)
    fake_openai.replies += [Reply("Let me look.", [("bash", {"command": "ls src"})]), Reply("Done: it is a skeleton.")]
    client = _anthropic_client(h)
    tools: list[Any] = [{"name": "bash", "description": "run a shell command", "input_schema": BASH}]
    first = client.messages.create(model="claude-anything", max_tokens=1000, system="You are terse.", tools=tools,
                                   messages=[{"role": "user", "content": "What is in src?"}])
    assert first.stop_reason == "tool_use"
    assert first.content[0].type == "text" and first.content[0].text == "Let me look."
    use = first.content[1]
    assert use.type == "tool_use" and use.name == "bash" and use.input == {"command": "ls src"}
    # What the provider got: OpenAI's shapes, the system prompt first, the tool as a function.
    sent = fake_openai.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "You are terse."}
    assert sent["tools"][0]["function"]["name"] == "bash"
    assert sent["model"] == "fake-model"  # the run's model, whatever the agent asked for
    assert first.model == "claude-anything"
    turns: list[Any] = [
        {"role": "user", "content": "What is in src?"},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "db.rs main.rs"}]},
    ]
    with client.messages.stream(model="claude-anything", max_tokens=1000, tools=tools, messages=turns) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Done: it is a skeleton." and final.stop_reason == "end_turn"
    sent = fake_openai.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == use.id
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"command": "ls src"}
    assert sent[2] == {"role": "tool", "tool_call_id": use.id, "content": "db.rs main.rs"}
    # Anthropic's input_tokens leave cache reads out: the client sees the provider's count split so.
    calls = h.events(ModelCall)
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) == calls[-1].usage.input_tokens
    assert final.usage.cache_read_input_tokens == 3 and final.usage.output_tokens == calls[-1].usage.output_tokens
    _assert_metered(h, fake_openai, before, 2)
    assert [e.turn for e in calls] == [0, 1] and all(e.iteration == 1 for e in calls)
    # The tool's result came back with the second call: a tool_call event, as the built-in loop writes.
    (tool,) = h.events(ToolCallEvent)
    assert (tool.turn, tool.call_id, tool.name, tool.output) == (0, use.id, "bash", "db.rs main.rs")
    assert json.loads(tool.arguments) == {"command": "ls src"} and h.usage.tool_calls == 1


def test_tool_calls_without_results_are_recorded_at_the_end(via_openai: Harness, fake_openai: FakeOpenAI) -> None:
    h = via_openai
    h.gateway.begin(1, 0)
    fake_openai.replies += [Reply("", [("submit", {"message": "done"})])]
    _openai_client(h).chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}])
    assert h.events(ToolCallEvent) == []
    h.gateway.finish()
    (tool,) = h.events(ToolCallEvent)
    assert tool.name == "submit" and "no result came back" in tool.output


def test_openai_client_against_anthropic_provider_with_tools(via_anthropic: Harness,
                                                             fake_anthropic: FakeAnthropic) -> None:
    """The reverse: an OpenAI-style agent (mini-swe-agent) driving Claude."""
    h = via_anthropic
    h.gateway.begin(2, 0)
    before = (fake_anthropic.input_tokens, fake_anthropic.output_tokens)
    fake_anthropic.replies += [Reply("", [("bash", {"command": "cargo build --release"})]), Reply("Built.")]
    client = _openai_client(h)
    tools = [{"type": "function", "function": {"name": "bash", "description": "run", "parameters": BASH}}]
    chunks = list(client.chat.completions.create(model="gpt-anything", stream=True, tools=tools,  # type: ignore[call-overload]
                                                 stream_options={"include_usage": True}, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Build it."}]))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    call = next(d.tool_calls[0] for d in deltas if d.tool_calls and d.tool_calls[0].id)
    args = "".join(d.tool_calls[0].function.arguments or "" for d in deltas if d.tool_calls)
    assert call.function.name == "bash" and json.loads(args) == {"command": "cargo build --release"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    usage = chunks[-1].usage
    sent = fake_anthropic.requests[-1]
    assert sent["system"][0]["text"] == "Be brief." and sent["tools"][0]["input_schema"] == BASH
    second = client.chat.completions.create(model="gpt-anything", tools=tools, messages=[  # type: ignore[arg-type]
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Build it."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "bash", "arguments": args}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "Finished release"}])
    assert second.choices[0].message.content == "Built." and second.choices[0].finish_reason == "stop"
    turns = fake_anthropic.requests[-1]["messages"]
    assert turns[1]["role"] == "assistant" and turns[1]["content"][0]["type"] == "tool_use"
    assert turns[1]["content"][0]["input"] == {"command": "cargo build --release"}
    assert turns[2]["content"][0]["type"] == "tool_result" and turns[2]["content"][0]["tool_use_id"] == call.id
    calls = h.events(ModelCall)
    assert usage is not None and usage.prompt_tokens == calls[0].usage.input_tokens
    details = second.usage.prompt_tokens_details if second.usage else None
    assert details is not None and details.cached_tokens == 2
    _assert_metered(h, fake_anthropic, before, 2)


def test_same_protocol_streaming_and_plain(via_openai: Harness, fake_openai: FakeOpenAI) -> None:
    h = via_openai
    h.gateway.begin(3, 1)
    before = (fake_openai.input_tokens, fake_openai.output_tokens)
    fake_openai.replies += [Reply("alpha"), Reply("beta")]
    client = _openai_client(h)
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": "a?"}]) if c.choices)
    plain = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "b?"}])
    assert (text, plain.choices[0].message.content) == ("alpha", "beta")
    _assert_metered(h, fake_openai, before, 2)
    assert {e.attempt for e in h.events(ModelCall)} == {1}
    assert [r.stream for r in h.events(GatewayCall)] == [True, False]


def test_budget_reached_mid_episode_refuses_and_ends_it(tmp_path: Path, fake_openai: FakeOpenAI,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, _model("openai", fake_openai.url, monkeypatch), BudgetConfig(max_iterations=None,
                                                                                         max_tokens=10))
    try:
        session = h.gateway.begin(1, 0)
        fake_openai.replies += [Reply("one long enough answer to pass ten tokens " * 3)]
        client = _openai_client(h)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}])
        asked = len(fake_openai.requests)
        with pytest.raises(openai.PermissionDeniedError, match="budget is spent"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "more"}])
        with pytest.raises(anthropic.PermissionDeniedError, match="iteration is over"):
            _anthropic_client(h).messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert len(fake_openai.requests) == asked  # refused calls never reach the provider
        assert session.end is EndReason.BUDGET and "max_tokens" in session.detail
        records = h.events(GatewayCall)
        assert [r.status for r in records] == [200, 403, 403]
        assert records[1].error is not None and records[1].error.startswith("budget_exhausted")
        assert len(h.events(ModelCall)) == 1
    finally:
        h.close()


def test_per_iteration_action_cap(via_openai: Harness, fake_openai: FakeOpenAI) -> None:
    session = via_openai.gateway.begin(1, 0, max_actions=2)
    fake_openai.replies += [Reply("", [("bash", {"command": "a"}), ("bash", {"command": "b"})])]
    client = _openai_client(via_openai)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}])
    with pytest.raises(openai.PermissionDeniedError, match="per-iteration cap of 2 actions"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}])
    assert session.end is EndReason.TOOL_CAP and session.actions == 2


def test_upstream_faults_are_retried(via_openai: Harness, fake_openai: FakeOpenAI) -> None:
    via_openai.gateway.begin(1, 0)
    fake_openai.faults += [503, 429]
    fake_openai.replies += [Reply("after the outage")]
    resp = _openai_client(via_openai).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert resp.choices[0].message.content == "after the outage"
    assert via_openai.events(ModelCall)[-1].attempts == 3


def test_a_refused_provider_error_ends_the_episode_with_it(via_openai: Harness, fake_openai: FakeOpenAI) -> None:
    """A 4xx from the provider is not retried; the agent gets an error, the run will stop on it."""
    session = via_openai.gateway.begin(1, 0)
    fake_openai.faults += [401]
    with pytest.raises(openai.APIStatusError) as err:
        _openai_client(via_openai).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502 and "HTTP 401" in str(err.value)
    assert session.error is not None


def test_submit_and_episode_state(via_openai: Harness) -> None:
    url = via_openai.gateway.url
    assert _http("GET", f"{url}/staircase/episode").json()["running"] is False
    assert _http("POST", f"{url}/staircase/submit", {"message": "x"}).status_code == 409
    session = via_openai.gateway.begin(4, 0)
    assert _http("GET", f"{url}/staircase/episode").json()["over"] is False
    assert _http("POST", f"{url}/staircase/submit", {"message": "IVF with 256 lists"}).json() == {"ok": True}
    state = _http("GET", f"{url}/staircase/episode").json()
    assert state["over"] is True and state["reason"] == "submitted"
    assert session.message == "IVF with 256 lists"
    assert via_openai.gateway.finish() is session
    with pytest.raises(openai.APIStatusError, match="no episode is running"):
        _openai_client(via_openai).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_bad_requests_name_the_field(via_openai: Harness) -> None:
    via_openai.gateway.begin(1, 0)
    r = _http("POST", f"{via_openai.gateway.url}/v1/chat/completions", {"model": "m", "messages": []})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = _http("POST", f"{via_openai.gateway.url}/v1/messages", {"model": "m", "max_tokens": 5,
                                                                  "messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "messages[0].role" in r.json()["error"]["message"]


def test_the_key_never_reaches_the_agent_or_the_record(via_openai: Harness, fake_openai: FakeOpenAI) -> None:
    via_openai.gateway.begin(1, 0)
    fake_openai.replies += [Reply("ok")]
    raw = _http("POST", f"{via_openai.gateway.url}/v1/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert CANARY not in raw.text and CANARY not in str(raw.headers)
    assert fake_openai.headers[-1]["authorization"] == f"Bearer {CANARY}"  # the provider did get it
    for path in via_openai.ledger.run_dir.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_per_iteration_token_cap(via_openai: Harness, fake_openai: FakeOpenAI) -> None:
    session = via_openai.gateway.begin(1, 0, max_tokens=5)
    fake_openai.replies += [Reply("a first answer that costs more than five tokens")]
    client = _openai_client(via_openai)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}])
    with pytest.raises(openai.PermissionDeniedError, match="per-iteration cap of 5 tokens"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}])
    assert session.end is EndReason.BUDGET and session.tokens > 5
