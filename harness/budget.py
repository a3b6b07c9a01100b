"""Budgets: what a run has used, rebuilt from its events, and the limits it may not pass."""

from __future__ import annotations

from pydantic import BaseModel, PrivateAttr

from harness.config import BudgetConfig
from harness.events import Event, IterationEnd, ModelCall, RunResume, RunStart, ToolCallEvent, Waiting


class BudgetExhausted(Exception):
    """A limit is reached; ``reason`` names it ("max_tool_calls: 500 of 500")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Usage(BaseModel):
    """Everything a run has spent, on every axis that budgets and comparisons use."""

    iterations: int = 0
    tool_calls: int = 0
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    dollars: float = 0.0
    active_seconds: float = 0.0
    # Time spent waiting for the machine's scorer slot (other runs' scorings): not work.
    waiting_seconds: float = 0.0
    _last_ts: float | None = PrivateAttr(default=None)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def hours(self) -> float:
        """Working hours: active time, less the waits for the machine's scorer slot."""
        return max(0.0, self.active_seconds - self.waiting_seconds) / 3600

    def add_event(self, e: Event) -> None:
        if isinstance(e, ModelCall):
            self.model_calls += 1
            self.input_tokens += e.usage.input_tokens
            self.output_tokens += e.usage.output_tokens
            self.cached_input_tokens += e.usage.cached_input_tokens
            self.dollars += e.cost_usd
        elif isinstance(e, ToolCallEvent):
            self.tool_calls += 1
        elif isinstance(e, IterationEnd):
            self.iterations += 1
        elif isinstance(e, Waiting) and e.what == "scorer_slot" and e.seconds:
            self.waiting_seconds += e.seconds
        # Active time: the time between events of one session (a crash's downtime is not counted).
        if self._last_ts is not None and not isinstance(e, RunStart | RunResume):
            self.active_seconds += max(0.0, e.ts - self._last_ts)
        self._last_ts = e.ts


class Budget:
    """The limits of a run, checked against its usage before every model call."""

    def __init__(self, cfg: BudgetConfig, usage: Usage) -> None:
        self.cfg = cfg
        self.usage = usage

    def check(self) -> None:
        """Raise :class:`BudgetExhausted` if any run-wide limit is reached."""
        c, u = self.cfg, self.usage
        limits: list[tuple[str, float | None, float]] = [
            ("max_iterations", c.max_iterations, u.iterations),
            ("max_tool_calls", c.max_tool_calls, u.tool_calls),
            ("max_model_calls", c.max_model_calls, u.model_calls),
            ("max_tokens", c.max_tokens, u.tokens),
            ("max_dollars", c.max_dollars, u.dollars),
            ("max_hours", c.max_hours, u.hours),
        ]
        for name, limit, used in limits:
            if limit is not None and used >= limit:
                raise BudgetExhausted(f"{name}: {used:g} of {limit:g} used")

    def iteration_cap_reached(self, iteration_tool_calls: int) -> bool:
        cap = self.cfg.max_tool_calls_per_iteration
        return cap is not None and iteration_tool_calls >= cap
