"""Text tool mode, for endpoints without native tool calling (``model.tool_mode: text``).

The tools are described in the system prompt, and the model writes each call as a fenced block::

    ```tool
    {"name": "bash", "arguments": {"command": "cargo build --release"}}
    ```

Going out, the neutral conversation is rewritten without tool roles: earlier calls become such
blocks in the assistant's text and tool results become user turns. Coming back, the blocks are
parsed into ``ToolCall``s with ids derived from the conversation and the reply (deterministic, so a
replay sees the same ids). A block that is not a JSON object with a string ``name`` still becomes a
call, named ``MALFORMED`` unless a name can be read from it, with the raw block text as its arguments,
so the agent answers it with an error the model can read instead of the run crashing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from harness.models.base import Message, Model, ModelResponse, ToolCall, ToolSpec

MALFORMED = "(unparsable tool block)"
# A ```tool fence on its own line, up to the next fence line. Valid JSON never has a line starting
# with ``` (a raw newline cannot occur inside a JSON string), so fences in arguments cannot end a block.
_BLOCK = re.compile(r"^[ \t]*```tool[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)
_OPEN = re.compile(r"^[ \t]*```tool[ \t]*$", re.M)
_NAME = re.compile(r'"name"\s*:\s*"([^"\\]+)"')

INSTRUCTIONS = """\
# Tools
To call a tool, write a fenced code block whose info string is `tool`, holding one JSON object with
the tool's name and its arguments:

```tool
{"name": "TOOL_NAME", "arguments": {"ARGUMENT": "VALUE"}}
```

One block per call; several blocks in one reply run in order. Arguments are JSON: escape newlines
and quotes inside strings. The results come back in the next user message.

The tools:
"""


def describe_tools(tools: list[ToolSpec]) -> str:
    """The system-prompt section that teaches the block format and lists the tools."""
    parts = [INSTRUCTIONS]
    for t in tools:
        parts.append(f"## {t.name}\n{t.description.strip()}\nArguments (JSON Schema): "
                     f"{json.dumps(t.parameters, sort_keys=True)}\n")
    return "\n".join(parts)


def render_call(call: ToolCall) -> str:
    """A call as the fenced block the model would have written."""
    try:
        args: object = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError:
        args = call.arguments  # shown as the model wrote it, as a JSON string
    return "```tool\n" + json.dumps({"name": call.name, "arguments": args}, ensure_ascii=False) + "\n```"


def render_messages(messages: list[Message], tools: list[ToolSpec]) -> list[Message]:
    """The conversation without tool roles: tool specs in the system prompt, calls as blocks in the
    assistant's text, results as user turns (adjacent user turns merged, as some chat templates
    require strict alternation)."""
    out: list[Message] = []
    described = False
    for m in messages:
        if m.role == "system" and not described and tools:
            out.append(m.model_copy(update={"content": f"{m.content}\n\n{describe_tools(tools)}".lstrip()}))
            described = True
        elif m.role == "assistant" and m.tool_calls:
            parts = [m.content.strip()] if m.content.strip() else []
            parts += [render_call(c) for c in m.tool_calls]
            out.append(m.model_copy(update={"content": "\n\n".join(parts), "tool_calls": []}))
        elif m.role == "tool":
            label = f"{m.name} " if m.name else ""
            text = f"[result of tool call {label}{m.tool_call_id or ''}]\n{m.content}"
            out.append(Message(role="user", content=text, cache=m.cache))
        else:
            out.append(m)
    if tools and not described:
        out.insert(0, Message(role="system", content=describe_tools(tools)))
    return _merge_user_turns(out)


def _merge_user_turns(messages: list[Message]) -> list[Message]:
    merged: list[Message] = []
    for m in messages:
        if merged and m.role == "user" and merged[-1].role == "user":
            prev = merged[-1]
            merged[-1] = prev.model_copy(update={"content": f"{prev.content}\n\n{m.content}",
                                                 "cache": prev.cache or m.cache})
        else:
            merged.append(m)
    return merged


def parse_tool_calls(text: str, seed: str = "") -> tuple[str, list[ToolCall]]:
    """Split a reply into its prose and its tool calls. Ids are ``call_<digest>_<i>``, the digest
    taken from ``seed`` (the caller's position in the conversation) and the reply itself."""
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).hexdigest()[:10]
    bodies: list[str] = []
    prose: list[str] = []
    pos = 0
    for match in _BLOCK.finditer(text):
        prose.append(text[pos:match.start()])
        bodies.append(match.group(1))
        pos = match.end()
    rest = text[pos:]
    if (opened := _OPEN.search(rest)) is not None:  # an unclosed block, e.g. a reply cut at max tokens
        prose.append(rest[:opened.start()])
        bodies.append(rest[opened.end():].lstrip("\n"))
    else:
        prose.append(rest)
    calls = [_call(body, f"call_{digest}_{i}") for i, body in enumerate(bodies)]
    return "".join(prose).strip(), calls


def _call(body: str, call_id: str) -> ToolCall:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("name"), str) and obj["name"]:
        args = obj.get("arguments", {})
        raw = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        return ToolCall(id=call_id, name=obj["name"], arguments=raw)
    named = _NAME.search(body)
    return ToolCall(id=call_id, name=named.group(1) if named else MALFORMED, arguments=body.strip())


def complete_with_text_tools(call: Callable[[list[Message]], ModelResponse], messages: list[Message],
                             tools: list[ToolSpec]) -> ModelResponse:
    """One turn in text mode: ``call`` sends the rewritten conversation (without native tools) and
    returns the raw reply, whose blocks become the turn's tool calls."""
    resp = call(render_messages(messages, tools))
    prose, calls = parse_tool_calls(resp.message.content, seed=str(len(messages)))
    message = resp.message.model_copy(update={"content": prose, "tool_calls": [*resp.message.tool_calls, *calls]})
    stop = "tool_use" if calls else resp.stop_reason
    return resp.model_copy(update={"message": message, "stop_reason": stop})


class TextToolModel:
    """Wraps any Model so that tools travel as text (for any provider; OpenAIModel does this itself
    when ``tool_mode`` is ``text``)."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner
        self.name = inner.name

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        return complete_with_text_tools(lambda ms: self.inner.complete(ms, []), messages, tools)
