"""What the model sees of an episode: a view of the conversation, compacted near the context window.

The ledger keeps every turn in full; here, when the estimated size nears the window, the oldest tool
outputs are replaced by a short placeholder (the system prompt, the task and the latest turns stay).
Compaction only ever shrinks the view.
"""

from __future__ import annotations

from harness.models.base import Message

KEEP_RECENT = 8  # messages at the end that are never compacted
CHARS_PER_TOKEN = 3.5  # a conservative estimate for code and logs


def estimate_tokens(messages: list[Message]) -> int:
    chars = sum(len(m.content) + sum(len(c.arguments) for c in m.tool_calls) + len(m.reasoning or "")
                for m in messages)
    return int(chars / CHARS_PER_TOKEN) + 8 * len(messages)


class Context:
    def __init__(self, window: int, fraction: float) -> None:
        self.limit = int(window * fraction)
        self.messages: list[Message] = []
        self.compactions = 0
        self._reported: int | None = None  # the provider's own count of the last request, when known

    def start(self, messages: list[Message]) -> None:
        self.messages = list(messages)
        self._reported = None

    def add(self, message: Message, reported_input_tokens: int | None = None) -> None:
        if reported_input_tokens:
            self._reported = reported_input_tokens
        self.messages.append(message)

    def size(self) -> int:
        est = estimate_tokens(self.messages)
        return max(est, self._reported or 0)

    def view(self) -> list[Message]:
        if self.size() > self.limit:
            self.compact()
        return list(self.messages)

    def compact(self) -> bool:
        """Elide the oldest tool outputs until the view fits (by the larger of the estimate and the
        provider's last count); True if anything was elided. Outputs shorter than the placeholder
        are left alone: eliding them would grow the view."""
        target = self.limit * 0.7
        size, saved = self.size(), 0.0
        changed = False
        for i, m in enumerate(self.messages[: max(0, len(self.messages) - KEEP_RECENT)]):
            if m.role != "tool" or m.content.startswith("[output elided"):
                continue
            placeholder = (f"[output elided to save context: {len(m.content)} characters; "
                           "the full text is in the run's log]")
            if len(placeholder) >= len(m.content):
                continue
            self.messages[i] = m.model_copy(update={"content": placeholder})
            saved += (len(m.content) - len(placeholder)) / CHARS_PER_TOKEN
            changed = True
            if size - saved <= target:
                break
        if changed:
            self.compactions += 1
            self._reported = None
        return changed
