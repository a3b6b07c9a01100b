"""Plays back the model turns recorded in a run's events, iteration by iteration.

Each iteration replays the turns of its last attempt (the one that reached a submission), so a
replayed run makes the same tool calls as the recorded one and can be checked tree for tree.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.ledger import Ledger
from harness.models.base import Message, ModelExhausted, ModelResponse, ToolSpec, Usage


class ReplayModel:
    def __init__(self, run_dir: Path) -> None:
        ledger = Ledger(run_dir)
        by_attempt: dict[int, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for e in ledger.events("model_call"):
            by_attempt[e["iteration"]][e.get("attempt", 0)].append(e)
        ledger.close()
        self.turns = {n: attempts[max(attempts)] for n, attempts in by_attempt.items()}
        self.name = f"replay:{Path(run_dir).name}"
        self.iteration = 1
        self.cursor = 0

    def begin_episode(self, iteration: int) -> None:
        self.iteration = iteration
        self.cursor = 0

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        turns = self.turns.get(self.iteration, [])
        if self.cursor >= len(turns):
            raise ModelExhausted(f"the recording has no more turns for iteration {self.iteration}")
        e = turns[self.cursor]
        self.cursor += 1
        return ModelResponse(message=Message.model_validate(e["message"]), usage=Usage(**e.get("usage", {})),
                             cost_usd=e.get("cost_usd", 0.0), latency_s=0.0, stop_reason=e.get("stop_reason"),
                             model=self.name)
