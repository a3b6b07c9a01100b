"""The OpenAI chat-completions wire format at the gateway: a request in, a response out.

A request's messages become the neutral :class:`~harness.models.base.Message` list (what every
provider adapter takes), and a :class:`~harness.models.base.ModelResponse` becomes a
``chat.completion`` object, or the ``chat.completion.chunk`` events of a stream. Parts the neutral
shape has no room for (images, audio) are replaced by a short text saying so, never dropped silently.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from harness.gateway.errors import BadRequest
from harness.models.base import Message, ModelResponse, ToolCall, ToolSpec

# Finish reasons of the other protocols (Anthropic's stop_reason) in this one's words.
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "pause_turn": "stop", "refusal": "content_filter"}


def _text(content: Any, where: str) -> str:
    """A message's content (a string, or a list of parts) as text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content: expected a string or a list of parts")
    out = []
    for i, part in enumerate(content):
        if not isinstance(part, dict):
            raise BadRequest(f"{where}.content[{i}]: expected an object")
        if part.get("type") == "text":
            out.append(str(part.get("text", "")))
        else:
            out.append(f"[{part.get('type', 'unknown')} part not supported by the gateway]")
    return "\n".join(out)


def parse_request(body: dict[str, Any]) -> tuple[list[Message], list[ToolSpec]]:
    """A chat-completions request body -> (neutral messages, tools)."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("messages: a non-empty list is required")
    messages: list[Message] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadRequest(f"{where}: expected an object")
        role = m.get("role")
        if role in ("system", "developer"):
            messages.append(Message(role="system", content=_text(m.get("content"), where)))
        elif role == "user":
            messages.append(Message(role="user", content=_text(m.get("content"), where)))
        elif role == "assistant":
            calls = []
            for j, tc in enumerate(m.get("tool_calls") or []):
                fn = tc.get("function") or {}
                args = fn.get("arguments", "")
                calls.append(ToolCall(id=str(tc.get("id") or f"call_{i}_{j}"), name=str(fn.get("name", "")),
                                      arguments=args if isinstance(args, str) else json.dumps(args)))
            reasoning = m.get("reasoning_content") or m.get("reasoning")
            messages.append(Message(role="assistant", content=_text(m.get("content"), where), tool_calls=calls,
                                    reasoning=reasoning if isinstance(reasoning, str) and reasoning else None))
        elif role == "tool":
            messages.append(Message(role="tool", content=_text(m.get("content"), where),
                                    tool_call_id=str(m.get("tool_call_id") or ""), name=m.get("name")))
        else:
            raise BadRequest(f"{where}.role: {role!r} is not one of system, developer, user, assistant, tool")
    return messages, parse_tools(body.get("tools"))


def parse_tools(raw: Any) -> list[ToolSpec]:
    tools = []
    for i, t in enumerate(raw or []):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not fn.get("name"):
            raise BadRequest(f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': ...}}}}")
        tools.append(ToolSpec(name=fn["name"], description=fn.get("description") or "",
                              parameters=fn.get("parameters") or {"type": "object", "properties": {}}))
    return tools


def _usage(resp: ModelResponse) -> dict[str, Any]:
    u = resp.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens}}


def _finish(resp: ModelResponse) -> str:
    if resp.message.tool_calls:
        return "tool_calls"
    reason = resp.stop_reason or "stop"
    return FINISH.get(reason, reason)


def _calls(resp: ModelResponse) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in resp.message.tool_calls]


def completion(resp: ModelResponse, call_id: str, model: str) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    msg: dict[str, Any] = {"role": "assistant", "content": resp.message.content or None}
    if resp.message.tool_calls:
        msg["tool_calls"] = _calls(resp)
    if resp.message.reasoning:
        msg["reasoning_content"] = resp.message.reasoning
    return {"id": call_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": msg, "finish_reason": _finish(resp), "logprobs": None}],
            "usage": _usage(resp)}


def stream(resp: ModelResponse, call_id: str, model: str, include_usage: bool) -> Iterator[str]:
    """The server-sent events of a streamed completion, ``data: [DONE]`` last."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None,
              choices: bool = True) -> str:
        obj: dict[str, Any] = {"id": call_id, "object": "chat.completion.chunk", "created": created, "model": model,
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
        if usage is not None:
            obj["usage"] = usage
        return f"data: {json.dumps(obj)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    if resp.message.reasoning:
        yield chunk({"reasoning_content": resp.message.reasoning})
    if resp.message.content:
        yield chunk({"content": resp.message.content})
    for i, c in enumerate(resp.message.tool_calls):
        yield chunk({"tool_calls": [{"index": i, "id": c.id, "type": "function",
                                     "function": {"name": c.name, "arguments": ""}}]})
        if c.arguments:
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": c.arguments}}]})
    yield chunk({}, _finish(resp))
    if include_usage:
        yield chunk({}, usage=_usage(resp), choices=False)
    yield "data: [DONE]\n\n"


def error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}
