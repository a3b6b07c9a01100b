"""The model seam: one Protocol, a provider-neutral conversation, and what one call returns.

Conversations are kept in one neutral shape (close to OpenAI's chat format) so that the loop, the
ledger and the replay model never care which provider produced them; each adapter converts to and
from its own wire format.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class ToolSpec(BaseModel):
    """A tool the model may call: a name, a description, and a JSON Schema of its arguments."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    parameters: dict[str, Any]


class ToolCall(BaseModel):
    """One call the model asked for. ``arguments`` is the raw JSON text the model wrote: it may be
    malformed, and the agent answers that with an error the model can read."""

    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    arguments: str


class Message(BaseModel):
    """One turn of a conversation.

    - ``system`` / ``user``: ``content``;
    - ``assistant``: ``content`` (may be empty), ``tool_calls``, and ``reasoning`` when the
      provider returns its thinking (kept, so that a replay is exact);
    - ``tool``: ``content`` answering ``tool_call_id``.
    ``cache`` marks the end of a stable prefix (prompt caching, where the provider supports it).
    """

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    reasoning: str | None = None
    cache: bool = False


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


class ModelResponse(BaseModel):
    """What one model call returned, with its cost and latency."""

    model_config = ConfigDict(extra="forbid")
    message: Message
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_s: float = 0.0
    stop_reason: str | None = None
    model: str | None = None
    attempts: int = 1


class ModelError(RuntimeError):
    """The model could not be reached or answered unusably after every retry."""


class ModelExhausted(Exception):
    """A scripted or replayed model has nothing more to say: the run ends, as if the model stopped."""


@runtime_checkable
class Model(Protocol):
    """A chat model with tool calling."""

    name: str

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        """One call: the conversation so far and the tools on offer -> the assistant's turn."""
        ...

    def begin_episode(self, iteration: int) -> None:
        """A new iteration's conversation starts (scripted and replayed models move to its
        episode; a provider's model has nothing to do)."""
        return None
