"""Plays back the model turns recorded in a run's events, iteration by iteration.

Each iteration replays the turns of its last attempt (the one that reached a submission), so a
replayed run makes the same tool calls as the recorded one and can be checked tree for tree.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from harness.events import ModelCall
from harness.ledger import read_events
from harness.models.base import Message, Model, ModelExhausted, ModelResponse, ToolSpec


class ReplayModel(Model):
    def __init__(self, run_dir: Path) -> None:
        by_attempt: dict[int, dict[int, list[ModelCall]]] = defaultdict(lambda: defaultdict(list))
        for e in read_events(Path(run_dir), "model_call"):
            assert isinstance(e, ModelCall)
            by_attempt[e.iteration][e.attempt].append(e)
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
        return ModelResponse(message=e.message, usage=e.usage, cost_usd=e.cost_usd, latency_s=0.0,
                             stop_reason=e.stop_reason, model=self.name)
