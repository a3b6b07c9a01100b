"""harness/agent/context.py: the model's compacted view of an episode's conversation."""

from __future__ import annotations

from harness.agent.context import CHARS_PER_TOKEN, KEEP_RECENT, Context, estimate_tokens
from harness.models.base import Message, ToolCall

ELIDED = "[output elided"


def conversation(old_tools: int, tool_chars: int = 3500) -> list[Message]:
    """System, task and prompt, then ``old_tools`` rounds of an assistant call and its tool output,
    then KEEP_RECENT small recent messages."""
    msgs = [Message(role="system", content="You optimize a vector DB."),
            Message(role="user", content="The task: " + "t" * 700, cache=True),
            Message(role="user", content="Iteration 1. Go.")]
    for i in range(old_tools):
        msgs.append(Message(role="assistant", tool_calls=[ToolCall(id=f"c{i}", name="bash", arguments="{}")]))
        msgs.append(Message(role="tool", content=f"out{i} " + "x" * tool_chars, tool_call_id=f"c{i}", name="bash"))
    msgs += [Message(role="tool", content=f"recent {i} " + "r" * 350, tool_call_id=f"r{i}", name="bash")
             for i in range(KEEP_RECENT)]
    return msgs


def started(window: int, fraction: float, msgs: list[Message]) -> Context:
    ctx = Context(window, fraction)
    ctx.start(msgs)
    return ctx


# ---- token estimates ---------------------------------------------------------------------------


def test_estimate_counts_content_arguments_reasoning_and_a_cost_per_message() -> None:
    assert estimate_tokens([]) == 0
    assert estimate_tokens([Message(role="user", content="a" * 350)]) == 100 + 8
    call = Message(role="assistant", content="", reasoning="r" * 35,
                   tool_calls=[ToolCall(id="1", name="bash", arguments="a" * 70)])
    assert estimate_tokens([call]) == int(105 / CHARS_PER_TOKEN) + 8
    assert estimate_tokens([Message(role="user", content="a" * 350)] * 3) == 300 + 24


def test_size_is_the_larger_of_the_estimate_and_what_the_provider_reported() -> None:
    ctx = started(100_000, 0.8, [Message(role="user", content="a" * 350)])
    assert ctx.limit == 80_000
    assert ctx.size() == 108
    ctx.add(Message(role="assistant", content="ok"), reported_input_tokens=5000)
    assert ctx.size() == 5000
    ctx.add(Message(role="tool", content="b" * 35000, tool_call_id="x"))  # the estimate now passes it
    assert ctx.size() == estimate_tokens(ctx.messages) > 5000
    ctx.start([Message(role="user", content="new episode")])  # a new start forgets the old report
    assert ctx.size() == estimate_tokens(ctx.messages)


# ---- compaction ----------------------------------------------------------------------------------


def test_below_the_threshold_the_view_is_the_conversation_untouched() -> None:
    msgs = conversation(old_tools=4)
    ctx = started(window=1_000_000, fraction=0.8, msgs=msgs)
    view = ctx.view()
    assert view == msgs and ctx.compactions == 0
    view.append(Message(role="user", content="appended to the view"))
    assert len(ctx.messages) == len(msgs)  # the view is a copy


def test_the_threshold_is_the_window_times_the_fraction() -> None:
    msgs = conversation(old_tools=10)
    size = estimate_tokens(msgs)
    just_over = started(window=int(size / 0.5) - 10, fraction=0.5, msgs=msgs)
    just_under = started(window=int(size / 0.5) + 10, fraction=0.5, msgs=msgs)
    just_over.view()
    just_under.view()
    assert (just_over.compactions, just_under.compactions) == (1, 0)


def test_over_the_threshold_the_oldest_tool_outputs_are_elided_until_the_view_fits() -> None:
    msgs = conversation(old_tools=10)  # ten tool outputs of ~1000 tokens each
    ctx = started(window=10_000, fraction=0.8, msgs=msgs)
    assert ctx.size() > ctx.limit
    view = ctx.view()

    assert ctx.compactions == 1
    assert estimate_tokens(view) <= 0.7 * ctx.limit  # it goes well below, not just under
    # What the model sees still starts with the system prompt, the task and the prompt, verbatim.
    assert view[:3] == msgs[:3]
    # Nothing is dropped or reordered: one message for each, same roles, same tool call ids.
    assert [(m.role, m.tool_call_id) for m in view] == [(m.role, m.tool_call_id) for m in msgs]
    # Only tool outputs change, the oldest first, and only as many as needed.
    changed = [i for i, (a, b) in enumerate(zip(msgs, view, strict=True)) if a != b]
    assert all(msgs[i].role == "tool" for i in changed)
    elided = [m.content.startswith(ELIDED) for m in view if m.role == "tool"]
    n = sum(elided)
    assert 0 < n < 10 and elided == [True] * n + [False] * (len(elided) - n)
    assert f"{len(msgs[4].content)} characters" in view[4].content  # the placeholder says what was there
    # The latest messages are never elided.
    assert view[-KEEP_RECENT:] == msgs[-KEEP_RECENT:]


def test_compaction_keeps_the_callers_messages_whole() -> None:
    """The ledger keeps the full conversation: compaction replaces messages in the view, it never
    edits the Message objects it was given."""
    msgs = conversation(old_tools=10)
    originals = [m.content for m in msgs]
    ctx = started(window=10_000, fraction=0.8, msgs=msgs)
    ctx.view()
    assert [m.content for m in msgs] == originals
    assert any(m.content.startswith(ELIDED) for m in ctx.messages)


def test_the_recent_messages_are_kept_even_when_the_view_cannot_fit() -> None:
    recent_only = conversation(old_tools=0)
    ctx = started(window=100, fraction=0.8, msgs=recent_only)
    assert ctx.size() > ctx.limit
    assert ctx.view() == recent_only and ctx.compactions == 0
    assert ctx.compact() is False


def test_elided_outputs_are_not_elided_again() -> None:
    ctx = started(window=10, fraction=1.0, msgs=conversation(old_tools=3))
    assert ctx.compact() is True
    once = list(ctx.messages)
    assert all(m.content.startswith(ELIDED) for m in once[3:9] if m.role == "tool")
    assert ctx.compact() is False and ctx.compactions == 1
    assert ctx.messages == once


def test_a_provider_count_over_the_limit_compacts_and_is_then_forgotten() -> None:
    msgs = conversation(old_tools=10)
    ctx = started(window=1_000_000, fraction=0.8, msgs=msgs)
    ctx.add(Message(role="assistant", content="thinking"), reported_input_tokens=900_000)
    assert ctx.size() == 900_000 > ctx.limit
    view = ctx.view()
    assert ctx.compactions == 1 and view[4].content.startswith(ELIDED)
    assert ctx.size() == estimate_tokens(ctx.messages)  # the old count described the uncompacted view


def test_messages_added_after_a_compaction_are_kept_whole() -> None:
    ctx = started(window=10_000, fraction=0.8, msgs=conversation(old_tools=10))
    ctx.view()
    new = Message(role="tool", content="fresh output " + "f" * 200, tool_call_id="n1", name="bash")
    ctx.add(new)
    assert ctx.view()[-1] == new


def test_eliding_a_short_tool_output_does_not_crash_the_episode() -> None:
    msgs = [Message(role="system", content="sys"), Message(role="user", content="task"),
            Message(role="assistant", tool_calls=[ToolCall(id="w", name="write_file", arguments="{}")]),
            Message(role="tool", content="wrote 12 bytes to src/db.rs", tool_call_id="w", name="write_file"),
            *conversation(old_tools=0)[-KEEP_RECENT:]]
    ctx = started(window=100_000, fraction=0.8, msgs=msgs)
    ctx.add(Message(role="assistant", content="next"), reported_input_tokens=90_000)  # schemas, overhead...
    view = ctx.view()  # it crashed here once: the placeholder is longer than the short output
    assert estimate_tokens(view) <= estimate_tokens(msgs) + 10
    assert view[3].content == "wrote 12 bytes to src/db.rs", "a short output is not worth eliding"
