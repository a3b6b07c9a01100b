"""OpenAI chat completions through the official SDK, against any compatible server: OpenAI itself,
GLM-5.1 on Z.ai's API, a local vLLM, DeepSeek...

- Native tool calls (``tools=[{"type": "function", ...}]``); ``tool_mode: text`` switches to
  fenced blocks in the text (``text_tools``) for servers without tool calling.
- Reasoning (``reasoning_content`` as GLM, vLLM and DeepSeek send it, or ``reasoning``, or a leading
  ``<think>...</think>`` in the content) is kept in ``Message.reasoning`` and sent back unmodified as
  ``reasoning_content`` on later turns: GLM's interleaved / preserved thinking expects exactly that.
- Usage with cached tokens (``prompt_tokens_details.cached_tokens``; DeepSeek's
  ``prompt_cache_hit_tokens``); ``extra_body`` from the config passed through as is.
- The run's seed goes out as the request's ``seed`` (OpenAI's best-effort reproducible sampling;
  vLLM honours it per request), so that runs of a sweep that differ only in the seed sample differently.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any
from urllib.parse import urlparse

from harness.config import ModelConfig
from harness.models.base import Message, Model, ModelError, ModelResponse, ToolCall, ToolSpec, Usage
from harness.models.pricing import PriceTable
from harness.models.retry import RetryPolicy, SdkErrors, call_with_retries, make_redactor, read_api_key
from harness.models.text_tools import complete_with_text_tools

_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.S)


class OpenAIModel(Model):
    """A chat-completions endpoint behind the Model protocol."""

    def __init__(self, cfg: ModelConfig, prices: PriceTable, retry: RetryPolicy | None = None,
                 seed: int | None = None) -> None:
        import openai

        self.cfg = cfg
        self.seed = seed
        self.name = cfg.name
        self.prices = prices
        self.retry = retry or RetryPolicy.from_config(cfg)
        self.label = f"{cfg.provider} ({cfg.name})"
        key = read_api_key(cfg)
        if key is None:
            if not cfg.base_url:
                raise ModelError("model.api_key_env: name the environment variable that holds the OpenAI API key")
            key = "EMPTY"  # a local server without authentication (vLLM's convention)
        self._redact = make_redactor(key)
        # The key lives only inside the SDK client; its own retries are off so the count is ours.
        self._client = openai.OpenAI(api_key=key, base_url=cfg.base_url, max_retries=0,
                                     timeout=cfg.request_timeout_s)
        self._errors = SdkErrors(status=openai.APIStatusError, connection=openai.APIConnectionError,
                                 timeout=openai.APITimeoutError, base=openai.APIError)
        # OpenAI's own API wants max_completion_tokens (its reasoning models reject max_tokens);
        # compatible servers (Z.ai, vLLM) read max_tokens.
        self._max_tokens_key = "max_completion_tokens" if _is_openai(cfg.base_url) else "max_tokens"

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        if self.cfg.tool_mode == "text":
            return complete_with_text_tools(lambda ms: self._complete(ms, []), messages, tools)
        return self._complete(messages, tools)

    def request(self, messages: list[Message], tools: list[ToolSpec]) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for this conversation."""
        kwargs: dict[str, Any] = {
            "model": self.cfg.name,
            "messages": to_chat_messages(messages),
            self._max_tokens_key: self.cfg.max_output_tokens,
        }
        if tools:
            kwargs["tools"] = to_chat_tools(tools)
        if self.cfg.temperature is not None:
            kwargs["temperature"] = self.cfg.temperature
        if self.seed is not None:
            kwargs["seed"] = self.seed
        if self.cfg.extra_body:
            kwargs["extra_body"] = self.cfg.extra_body
        return kwargs

    def _complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        t0 = time.monotonic()
        kwargs = self.request(messages, tools)
        resp, attempts = call_with_retries(lambda: self._client.chat.completions.create(**kwargs),
                                           provider=self.label, errors=self._errors, policy=self.retry,
                                           redact=self._redact)
        if not resp.choices:
            raise ModelError(f"{self.label}: the response has no choices")
        choice = resp.choices[0]
        message = from_chat_message(choice.message, seed=f"{len(messages)}")
        usage = to_usage(resp.usage)
        return ModelResponse(message=message, usage=usage, cost_usd=self.prices.cost(self.cfg.name, usage),
                             latency_s=time.monotonic() - t0, stop_reason=choice.finish_reason,
                             model=resp.model or self.cfg.name, attempts=attempts)


def _is_openai(base_url: str | None) -> bool:
    return base_url is None or (urlparse(base_url).hostname or "").endswith("api.openai.com")


def to_chat_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in tools]


def to_chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral messages -> chat-completions messages. ``cache`` needs no marker here: these
    providers cache a repeated prefix on their own."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
        elif m.role == "assistant":
            wire: dict[str, Any] = {"role": "assistant", "content": m.content or (None if m.tool_calls else "")}
            if m.tool_calls:
                wire["tool_calls"] = [{"id": c.id, "type": "function",
                                       "function": {"name": c.name, "arguments": c.arguments}}
                                      for c in m.tool_calls]
            if m.reasoning:
                wire["reasoning_content"] = m.reasoning
            out.append(wire)
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def from_chat_message(msg: Any, seed: str = "") -> Message:
    """A chat-completions assistant message -> a neutral Message. Tool-call arguments are kept as
    the exact text the model wrote, malformed or not; a missing call id gets a deterministic one."""
    content = msg.content or ""
    reasoning = _text_field(msg, "reasoning_content") or _text_field(msg, "reasoning")
    if reasoning is None and (think := _THINK.match(content)):
        reasoning, content = think.group(1).strip(), content[think.end():]
    calls: list[ToolCall] = []
    for i, tc in enumerate(msg.tool_calls or []):
        fn = getattr(tc, "function", None)
        if fn is None:  # a "custom" tool call: not something we offer
            continue
        args = fn.arguments
        if not isinstance(args, str):  # a few servers send an object instead of JSON text
            args = json.dumps(args)
        call_id = tc.id or "call_" + hashlib.sha256(f"{seed}\0{i}\0{fn.name}\0{args}".encode()).hexdigest()[:12]
        calls.append(ToolCall(id=call_id, name=fn.name or "", arguments=args))
    return Message(role="assistant", content=content, tool_calls=calls, reasoning=reasoning)


def _text_field(obj: Any, name: str) -> str | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, str) and value else None


def to_usage(usage: Any) -> Usage:
    """Chat-completions usage -> Usage (``prompt_tokens`` already includes cached tokens)."""
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    if cached is None:  # DeepSeek reports hits at the top level
        cached = getattr(usage, "prompt_cache_hit_tokens", None)
    written = getattr(details, "cache_write_tokens", None)
    return Usage(input_tokens=usage.prompt_tokens or 0, output_tokens=usage.completion_tokens or 0,
                 cached_input_tokens=int(cached or 0), cache_write_tokens=int(written or 0))
