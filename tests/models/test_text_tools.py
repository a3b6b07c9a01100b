"""Text tool mode: the fenced-block format, parsing (good, several, malformed, unclosed), rendering."""

from __future__ import annotations

import json

from harness.models.base import Message, ModelResponse, ToolCall, ToolSpec
from harness.models.text_tools import MALFORMED, TextToolModel, parse_tool_calls, render_messages

BASH = ToolSpec(name="bash", description="Run a shell command.",
                parameters={"type": "object", "properties": {"command": {"type": "string"}}})


def test_two_blocks_and_prose() -> None:
    text = ('Build, then test.\n```tool\n{"name": "bash", "arguments": {"command": "cargo build"}}\n```\n'
            'and\n```tool\n{"name": "bash", "arguments": {"command": "cargo test"}}\n```\n')
    prose, calls = parse_tool_calls(text, seed="3")
    assert prose == "Build, then test.\n\nand"
    assert [json.loads(c.arguments)["command"] for c in calls] == ["cargo build", "cargo test"]
    assert calls[0].id != calls[1].id
    assert [c.id for c in parse_tool_calls(text, seed="3")[1]] == [c.id for c in calls]  # deterministic
    assert parse_tool_calls(text, seed="5")[1][0].id != calls[0].id  # another point in the conversation


def test_fences_inside_arguments_do_not_end_the_block() -> None:
    content = "# Notes\n```rust\nfn main() {}\n```\n"
    block = json.dumps({"name": "write_file", "arguments": {"path": "NOTES.md", "content": content}})
    _, calls = parse_tool_calls(f"```tool\n{block}\n```")
    assert len(calls) == 1 and json.loads(calls[0].arguments)["content"] == content


def test_string_arguments_are_kept_as_written() -> None:
    _, calls = parse_tool_calls('```tool\n{"name": "bash", "arguments": "{\\"command\\": \\"ls\\"}"}\n```')
    assert calls[0].arguments == '{"command": "ls"}'


def test_malformed_block_becomes_a_call_with_the_raw_text() -> None:
    bad = '{"name": "bash", "arguments": {"command": "ls"'
    _, calls = parse_tool_calls(f"```tool\n{bad}\n```")
    assert (calls[0].name, calls[0].arguments) == ("bash", bad)  # the agent answers with a JSON error
    _, calls = parse_tool_calls("```tool\nrun ls please\n```")
    assert (calls[0].name, calls[0].arguments) == (MALFORMED, "run ls please")


def test_unclosed_block_at_the_end_is_still_a_call() -> None:
    prose, calls = parse_tool_calls('Let me see.\n```tool\n{"name": "bash", "arguments": {"command": "ls"}}')
    assert prose == "Let me see." and json.loads(calls[0].arguments) == {"command": "ls"}


def test_other_fences_are_not_calls() -> None:
    prose, calls = parse_tool_calls('```json\n{"name": "bash", "arguments": {}}\n```')
    assert calls == [] and prose.startswith("```json")


def test_render_without_system_prompt_adds_one_and_merges_user_turns() -> None:
    call = ToolCall(id="c1", name="bash", arguments="not json")
    msgs = [Message(role="user", content="go"), Message(role="assistant", content="", tool_calls=[call]),
            Message(role="tool", content="out1", tool_call_id="c1", name="bash"),
            Message(role="user", content="next")]
    out = render_messages(msgs, [BASH])
    assert [m.role for m in out] == ["system", "user", "assistant", "user"]
    assert "## bash" in out[0].content
    assert out[2].content == '```tool\n{"name": "bash", "arguments": "not json"}\n```' and out[2].tool_calls == []
    assert out[3].content == "[result of tool call bash c1]\nout1\n\nnext"


class Echo:
    """A model without tools that answers with a fixed text and records what it was sent."""

    name = "echo"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.seen: list[tuple[list[Message], list[ToolSpec]]] = []

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        self.seen.append((messages, tools))
        return ModelResponse(message=Message(role="assistant", content=self.reply), stop_reason="stop")


def test_wrapper_works_with_any_model() -> None:
    inner = Echo('```tool\n{"name": "bash", "arguments": {"command": "ls"}}\n```')
    resp = TextToolModel(inner).complete([Message(role="system", content="sys"), Message(role="user", content="go")],
                                         [BASH])
    assert resp.message.tool_calls[0].name == "bash" and resp.stop_reason == "tool_use"
    sent, tools = inner.seen[0]
    assert tools == [] and sent[0].content.startswith("sys\n\n# Tools")
