"""Anthropic's Messages API through the official SDK.

- The system prompt travels separately; tool calls and results are ``tool_use`` / ``tool_result``
  blocks; consecutive tool results (and any user text after them) merge into one user turn, as the
  API wants strictly alternating turns.
- Prompt caching: ``cache_control: {"type": "ephemeral"}`` on the system prompt, on the last message
  marked ``Message.cache`` (the end of the stable task prefix), and on the conversation's final
  block, so that each turn of an episode reads the previous turns from the cache (3 of the 4
  breakpoints the API allows).
- Thinking: the text goes to ``Message.reasoning``. The API wants the last assistant turn's thinking
  blocks back verbatim, signature included, while a tool loop runs; the neutral Message has no field
  for a signature, so the adapter keeps the raw blocks in memory, keyed by the turn's first tool-call
  id, and puts them back when that turn is sent again. (An episode never outlives the process: a
  resumed run restarts the interrupted iteration, so memory is enough; a turn whose blocks are not
  known is sent without its thinking.)
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from harness.config import ModelConfig
from harness.models.base import Message, Model, ModelError, ModelResponse, ToolCall, ToolSpec, Usage
from harness.models.pricing import PriceTable
from harness.models.retry import RetryPolicy, SdkErrors, call_with_retries, make_redactor, read_api_key
from harness.models.text_tools import complete_with_text_tools

EPHEMERAL = {"type": "ephemeral"}
# Thinking blocks kept for this many recent tool-using turns: the API only needs the latest ones.
THINKING_MEMORY = 256

Block = dict[str, Any]


class AnthropicModel(Model):
    """Claude behind the Model protocol."""

    def __init__(self, cfg: ModelConfig, prices: PriceTable, retry: RetryPolicy | None = None) -> None:
        import anthropic

        self.cfg = cfg
        self.name = cfg.name
        self.prices = prices
        self.retry = retry or RetryPolicy.from_config(cfg)
        self.label = f"anthropic ({cfg.name})"
        key = read_api_key(cfg)
        if key is None:
            raise ModelError("model.api_key_env: name the environment variable that holds the Anthropic API key")
        self._redact = make_redactor(key)
        # The key lives only inside the SDK client; its own retries are off so the count is ours.
        # An explicit timeout also keeps the SDK from refusing large max_tokens without streaming.
        self._client = anthropic.Anthropic(api_key=key, base_url=cfg.base_url, max_retries=0,
                                           timeout=cfg.request_timeout_s)
        self._errors = SdkErrors(status=anthropic.APIStatusError, connection=anthropic.APIConnectionError,
                                 timeout=anthropic.APITimeoutError, base=anthropic.APIError)
        self._thinking: OrderedDict[str, list[Block]] = OrderedDict()

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        if self.cfg.tool_mode == "text":
            return complete_with_text_tools(lambda ms: self._complete(ms, []), messages, tools)
        return self._complete(messages, tools)

    def request(self, messages: list[Message], tools: list[ToolSpec]) -> dict[str, Any]:
        """The keyword arguments of ``messages.create`` for this conversation."""
        system, turns = to_anthropic(messages, self._thinking_for)
        kwargs: dict[str, Any] = {"model": self.cfg.name, "max_tokens": self.cfg.max_output_tokens,
                                  "messages": turns}
        if system:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                               for t in tools]
        if self.cfg.temperature is not None:
            kwargs["temperature"] = self.cfg.temperature
        if self.cfg.extra_body:
            kwargs["extra_body"] = self.cfg.extra_body
        return kwargs

    def _complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        t0 = time.monotonic()
        kwargs = self.request(messages, tools)
        resp, attempts = call_with_retries(lambda: self._client.messages.create(**kwargs), provider=self.label,
                                           errors=self._errors, policy=self.retry, redact=self._redact)
        message, thinking = from_anthropic(resp.content)
        if thinking and message.tool_calls:
            self._remember(message.tool_calls[0].id, thinking)
        usage = to_usage(resp.usage)
        return ModelResponse(message=message, usage=usage, cost_usd=self.prices.cost(self.cfg.name, usage),
                             latency_s=time.monotonic() - t0, stop_reason=resp.stop_reason,
                             model=resp.model or self.cfg.name, attempts=attempts)

    def _remember(self, call_id: str, blocks: list[Block]) -> None:
        self._thinking[call_id] = blocks
        while len(self._thinking) > THINKING_MEMORY:
            self._thinking.popitem(last=False)

    def _thinking_for(self, m: Message) -> list[Block]:
        return list(self._thinking.get(m.tool_calls[0].id, [])) if m.tool_calls else []


def to_anthropic(messages: list[Message], thinking_for: Callable[[Message], list[Block]] | None = None,
                 ) -> tuple[list[Block], list[dict[str, Any]]]:
    """Neutral messages -> (system blocks, alternating turns), with the cache markers placed."""
    system_text = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    system = [{"type": "text", "text": system_text, "cache_control": dict(EPHEMERAL)}] if system_text else []
    rest = [m for m in messages if m.role != "system"]
    last_cached = max((i for i, m in enumerate(rest) if m.cache), default=None)
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(rest):
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m, thinking_for(m) if thinking_for and m.role == "assistant" else [])
        if i == last_cached:
            _mark(blocks)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if turns:
        _mark(turns[-1]["content"])
    return system, turns


def _blocks(m: Message, thinking: list[Block]) -> list[Block]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content or "(no output)"}]
    blocks: list[Block] = [dict(b) for b in thinking]
    if m.content.strip():
        blocks.append({"type": "text", "text": m.content})
    for c in m.tool_calls:
        blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)})
    if not any(b["type"] not in ("thinking", "redacted_thinking") for b in blocks):
        blocks.append({"type": "text", "text": "(empty)"})  # the API rejects empty turns and empty text
    return blocks


def _input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the object the API wants; text that is not a JSON object (only
    possible for calls that did not come from Claude) is wrapped, not lost."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"raw_arguments": arguments}


def _mark(blocks: list[Block]) -> None:
    """Put a cache breakpoint on the last block that can carry one (thinking blocks cannot)."""
    for b in reversed(blocks):
        if b["type"] not in ("thinking", "redacted_thinking"):
            b["cache_control"] = dict(EPHEMERAL)
            return


def from_anthropic(content: list[Any]) -> tuple[Message, list[Block]]:
    """Response blocks -> (neutral Message, raw thinking blocks to send back later)."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    thinking: list[Block] = []
    for b in content:
        if b.type == "text":
            texts.append(b.text)
        elif b.type == "thinking":
            reasoning.append(b.thinking)
            thinking.append({"type": "thinking", "thinking": b.thinking, "signature": b.signature})
        elif b.type == "redacted_thinking":
            thinking.append({"type": "redacted_thinking", "data": b.data})
        elif b.type == "tool_use":
            calls.append(ToolCall(id=b.id, name=b.name, arguments=json.dumps(b.input, ensure_ascii=False)))
    message = Message(role="assistant", content="\n".join(texts), tool_calls=calls,
                      reasoning="\n\n".join(reasoning) or None)
    return message, thinking


def to_usage(usage: Any) -> Usage:
    """Anthropic's ``input_tokens`` excludes cache reads and writes; ours includes them."""
    read = int(getattr(usage, "cache_read_input_tokens", None) or 0)
    written = int(getattr(usage, "cache_creation_input_tokens", None) or 0)
    return Usage(input_tokens=usage.input_tokens + read + written, output_tokens=usage.output_tokens,
                 cached_input_tokens=read, cache_write_tokens=written)

