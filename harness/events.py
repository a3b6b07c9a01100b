"""The events of a run: every line of ``events.jsonl`` is one of these pydantic models.

``Event`` is a union discriminated on ``type``; ``parse_event`` reads one line (migrating lines
written by older versions) and ``SCHEMA_VERSION`` is written into ``run_start``. Readers rebuild
everything they show from these (see :mod:`harness.state`); nothing else is the record of a run.

Version history:
- 1 (no ``schema_version`` field): the untyped events of the first version; the same fields, so
  migrating only fills defaults.
- 2: typed events; ``sandbox_restarted``, ``waiting``, ``stopped``; ``iteration_end.reason`` an
  :class:`EndReason` value.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from harness.models.base import Message
from harness.models.base import Usage as TokenUsage
from harness.scorer.record import Score, Verification

SCHEMA_VERSION = 2


class EndReason(StrEnum):
    """How an episode ended."""

    SUBMITTED = "submitted"  # the model called submit (or finish)
    TOOL_CAP = "tool_cap"  # the per-iteration tool-call cap: the workspace is submitted as it is
    STUCK = "stuck"  # the stuck detector fired
    BUDGET = "budget"  # a run-wide budget ran out mid-episode: what is there is still scored
    MODEL_STOPPED = "model_stopped"  # the model had nothing more to say
    SANDBOX_FAILED = "sandbox_failed"  # the sandbox died more often than the restart limit allows
    RECOVERED = "recovered"  # finished after a crash from what the killed process left
    IMPORTED = "imported"  # an iteration of a run imported from elsewhere (a KCORES entry)
    AGENT_EXITED = "agent_exited"  # a scaffold's agent ended without submit: the workspace is submitted as it is
    TIMEOUT = "timeout"  # a scaffold's agent ran past its wall time and was stopped


class _Event(BaseModel):
    # Events are read back by versions that may add fields: unknown fields are kept, not refused.
    model_config = ConfigDict(extra="allow")
    seq: int = -1
    ts: float = 0.0


class RunStart(_Event):
    type: Literal["run_start"] = "run_start"
    schema_version: int = 1
    name: str = ""
    model: str = "?"
    provider: str = ""
    dataset: str = ""
    preset: str = ""
    host: str = ""
    prices: dict[str, Any] = Field(default_factory=dict)
    imported: bool = False
    scaffold: str = "builtin"  # the inner loop: the built-in tool loop or a coding agent (agent.scaffold)

    @property
    def label(self) -> str:
        """The model as runs are grouped and labelled: with its scaffold when it is not the built-in loop."""
        return self.model if self.scaffold == "builtin" else f"{self.model} via {self.scaffold}"


class RunResume(_Event):
    type: Literal["run_resume"] = "run_resume"
    repaired_bytes: int = 0
    host: str = ""
    pid: int = 0


class IterationStart(_Event):
    type: Literal["iteration_start"] = "iteration_start"
    iteration: int
    attempt: int = 0
    start_ref: str = "start"


class ModelCall(_Event):
    type: Literal["model_call"] = "model_call"
    iteration: int
    attempt: int = 0
    turn: int = 0
    message: Message
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = 0.0
    latency_s: float = 0.0
    stop_reason: str | None = None
    model: str | None = None
    attempts: int = 1


class GatewayCall(_Event):
    """A call a scaffold's agent made through the model gateway: the protocol it spoke, what the
    gateway answered (200, or the refusal: a budget or limit reached), and the file holding the
    request and the response (``iterations/NNNN/gateway/``). Usage is in the ``model_call`` of the
    same iteration and turn (none for a refusal)."""

    type: Literal["gateway_call"] = "gateway_call"
    iteration: int
    attempt: int = 0
    turn: int | None = None
    protocol: Literal["openai", "anthropic"] = "openai"
    stream: bool = False
    status: int = 200
    error: str | None = None
    tool_calls: int = 0
    latency_s: float = 0.0
    record: str | None = None


class ToolCallEvent(_Event):
    type: Literal["tool_call"] = "tool_call"
    iteration: int
    attempt: int = 0
    turn: int = 0
    call_id: str = ""
    name: str | None = None
    arguments: str = ""
    is_error: bool = False
    output: str = ""
    full_output: str | None = None
    exit_code: int | None = None
    duration_s: float | None = None


class SandboxRestarted(_Event):
    """The sandbox died under the agent and was made anew from the workspace."""

    type: Literal["sandbox_restarted"] = "sandbox_restarted"
    iteration: int
    attempt: int = 0
    cause: Literal["oom", "exited", "gone", "unknown"]
    detail: str = ""
    restarts: int = 1  # restarts in this iteration so far, this one included


class Waiting(_Event):
    """The run waited for something outside it (a retried call ends in a normal event later)."""

    type: Literal["waiting"] = "waiting"
    what: Literal["docker", "model_api", "scorer_slot"]
    detail: str = ""
    # scorer_slot: how long the scoring waited for the machine's slot, once it held it (counted
    # apart from the run's working hours).
    seconds: float | None = None
    iteration: int | None = None


class IterationAbandoned(_Event):
    type: Literal["iteration_abandoned"] = "iteration_abandoned"
    iteration: int
    attempt: int = 0
    detail: str = ""


class Submission(_Event):
    type: Literal["submission"] = "submission"
    iteration: int
    message: str = ""
    commit: str = ""
    tag: str = ""
    reason: str = EndReason.SUBMITTED.value
    files_changed: int = 0
    lines_added: int = 0
    lines_removed: int = 0


class ScoreEvent(_Event):
    type: Literal["score"] = "score"
    iteration: int
    score: Score


class IterationEnd(_Event):
    type: Literal["iteration_end"] = "iteration_end"
    iteration: int
    reason: EndReason
    tool_calls: int = 0
    compactions: int = 0
    sandbox_restarts: int = 0


class Stopped(_Event):
    """The process stopped before the run's end (a signal, the engine or the API gone, a full disk);
    ``staircase resume`` continues it."""

    type: Literal["stopped"] = "stopped"
    reason: str
    kind: Literal["signal", "docker", "model_api", "disk", "error"] = "signal"


class RunEnd(_Event):
    type: Literal["run_end"] = "run_end"
    reason: str


class Verified(_Event):
    """The run's top submissions rescored in paired rounds (at its end, or by `staircase verify`)."""

    type: Literal["verified"] = "verified"
    verification: Verification


Event = Annotated[
    RunStart | RunResume | IterationStart | ModelCall | GatewayCall | ToolCallEvent | SandboxRestarted | Waiting
    | IterationAbandoned | Submission | ScoreEvent | IterationEnd | Stopped | RunEnd
    | Verified,
    Field(discriminator="type"),
]
EVENT_TYPES = frozenset({"run_start", "run_resume", "iteration_start", "model_call", "gateway_call", "tool_call",
                         "sandbox_restarted", "waiting", "iteration_abandoned", "submission", "score", "iteration_end",
                         "stopped", "run_end", "verified"})
_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """An event as written by any earlier version -> the current shape."""
    if raw.get("type") == "iteration_end" and raw.get("reason") not in {r.value for r in EndReason}:
        raw = raw | {"reason": EndReason.RECOVERED.value}  # version 1 wrote free text in rare paths
    return raw


def parse_event(raw: dict[str, Any]) -> Event:
    """One event from its JSON object (older versions' lines migrated)."""
    return _ADAPTER.validate_python(migrate(raw))


def event_json(event: _Event) -> bytes:
    """The one line an event is written as (no newline)."""
    return event.model_dump_json(exclude_none=False).encode()
