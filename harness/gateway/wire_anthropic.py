"""The Anthropic Messages wire format at the gateway: a request in, a response out.

``system`` and the alternating turns become neutral messages: a user turn's ``tool_result`` blocks
become ``tool`` messages (in their order), its text a user message after them; an assistant turn's
``tool_use`` blocks become tool calls (their ``input`` as JSON text) and ``thinking`` its reasoning.
A block marked ``cache_control`` marks its message ``cache``. Out goes a ``message`` object, or the
event stream (``message_start`` ... ``message_stop``) of a streamed call. Thinking is not sent back
to the client: its signature belongs to the upstream provider, and a client would send it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from harness.gateway.errors import BadRequest
from harness.models.base import Message, ModelResponse, ToolCall, ToolSpec

# Finish reasons of the other protocol (OpenAI's finish_reason) in this one's words.
STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
        "content_filter": "refusal"}


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content: expected a string or a list of blocks")
    for i, b in enumerate(content):
        if not isinstance(b, dict) or "type" not in b:
            raise BadRequest(f"{where}.content[{i}]: expected a block with a type")
    return content


def _block_text(b: dict[str, Any]) -> str:
    if b["type"] == "text":
        return str(b.get("text", ""))
    return f"[{b['type']} block not supported by the gateway]"


def _result_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(_block_text(b) if isinstance(b, dict) and "type" in b else str(b) for b in content)


def parse_request(body: dict[str, Any]) -> tuple[list[Message], list[ToolSpec]]:
    """A Messages request body -> (neutral messages, tools)."""
    messages: list[Message] = []
    system = body.get("system")
    if system:
        blocks = _blocks(system, "system")
        messages.append(Message(role="system", content="\n\n".join(_block_text(b) for b in blocks),
                                cache=any("cache_control" in b for b in blocks)))
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("messages: a non-empty list is required")
    for i, turn in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
            raise BadRequest(f"{where}.role: expected 'user' or 'assistant'")
        blocks = _blocks(turn.get("content"), where)
        cache = any("cache_control" in b for b in blocks)
        if turn["role"] == "assistant":
            texts, reasoning, calls = [], [], []
            for b in blocks:
                if b["type"] == "tool_use":
                    calls.append(ToolCall(id=str(b.get("id", "")), name=str(b.get("name", "")),
                                          arguments=json.dumps(b.get("input") or {}, ensure_ascii=False)))
                elif b["type"] == "thinking":
                    reasoning.append(str(b.get("thinking", "")))
                elif b["type"] != "redacted_thinking":
                    texts.append(_block_text(b))
            messages.append(Message(role="assistant", content="\n".join(texts), tool_calls=calls,
                                    reasoning="\n\n".join(reasoning) or None, cache=cache))
            continue
        texts = []
        for b in blocks:
            if b["type"] == "tool_result":
                text = _result_text(b.get("content"))
                if b.get("is_error"):
                    text = f"[error] {text}"
                messages.append(Message(role="tool", content=text, tool_call_id=str(b.get("tool_use_id", ""))))
            else:
                texts.append(_block_text(b))
        if texts:
            messages.append(Message(role="user", content="\n".join(texts), cache=cache))
        elif cache and messages:
            messages[-1].cache = True
    return messages, parse_tools(body.get("tools"))


def parse_tools(raw: Any) -> list[ToolSpec]:
    tools = []
    for i, t in enumerate(raw or []):
        if not isinstance(t, dict) or not t.get("name"):
            raise BadRequest(f"tools[{i}]: expected an object with a name")
        if "input_schema" not in t:
            continue  # a server tool of Anthropic's own (web search...): no upstream can run it
        tools.append(ToolSpec(name=t["name"], description=t.get("description") or "", parameters=t["input_schema"]))
    return tools


def _usage(resp: ModelResponse) -> dict[str, int]:
    """Anthropic's ``input_tokens`` leaves out cache reads and writes; ours counts them."""
    u = resp.usage
    return {"input_tokens": u.input_tokens - u.cached_input_tokens - u.cache_write_tokens,
            "output_tokens": u.output_tokens, "cache_read_input_tokens": u.cached_input_tokens,
            "cache_creation_input_tokens": u.cache_write_tokens}


def _stop(resp: ModelResponse) -> str:
    if resp.message.tool_calls:
        return "tool_use"
    reason = resp.stop_reason or "end_turn"
    return STOP.get(reason, reason)


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"raw_arguments": arguments}


def _content(resp: ModelResponse) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if resp.message.content:
        blocks.append({"type": "text", "text": resp.message.content})
    for c in resp.message.tool_calls:
        blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)})
    return blocks


def message(resp: ModelResponse, call_id: str, model: str) -> dict[str, Any]:
    """A ``message`` object."""
    return {"id": call_id, "type": "message", "role": "assistant", "model": model, "content": _content(resp),
            "stop_reason": _stop(resp), "stop_sequence": None, "usage": _usage(resp)}


def stream(resp: ModelResponse, call_id: str, model: str) -> Iterator[str]:
    """The server-sent events of a streamed message."""

    def event(kind: str, data: dict[str, Any]) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

    usage = _usage(resp)
    start = message(resp, call_id, model) | {"content": [], "stop_reason": None,
                                             "usage": usage | {"output_tokens": 0}}
    yield event("message_start", {"message": start})
    for i, b in enumerate(_content(resp)):
        if b["type"] == "text":
            yield event("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}})
            yield event("content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": b["text"]}})
        else:
            yield event("content_block_start", {"index": i, "content_block": b | {"input": {}}})
            yield event("content_block_delta", {"index": i, "delta": {"type": "input_json_delta",
                                                                      "partial_json": json.dumps(b["input"])}})
        yield event("content_block_stop", {"index": i})
    yield event("message_delta", {"delta": {"stop_reason": _stop(resp), "stop_sequence": None}, "usage": usage})
    yield event("message_stop", {})


def error_body(message: str, kind: str) -> dict[str, Any]:
    anthropic_kind = {"budget_exhausted": "permission_error", "limit_reached": "permission_error",
                      "upstream_error": "api_error", "invalid_request": "invalid_request_error"}.get(kind, "api_error")
    return {"type": "error", "error": {"type": anthropic_kind, "message": message}}
