"""A deterministic model that plays a script of tool calls, one list of calls per iteration.

The built-in script ``reference`` replays the reference trajectory (``reference/stageNN-*``): for
each stage, write its files, measure with devbench, note the result, submit. Any other script is a
YAML or JSON file: ``{"episodes": [[{"name": ..., "arguments": {...}}, ...], ...]}``, where an
argument ``content_from: PATH`` (relative to the script file) is replaced by ``content`` read from it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from harness.agent.context import estimate_tokens
from harness.models.base import Message, ModelExhausted, ModelResponse, ToolCall, ToolSpec, Usage
from harness.scorer.submission import REPO_ROOT

REFERENCE = REPO_ROOT / "reference"
Step = dict[str, Any]


class ScriptedModel:
    def __init__(self, episodes: list[list[Step]], name: str = "scripted") -> None:
        self.episodes = episodes
        self.name = name
        self.iteration = 1
        self.cursor = 0

    @classmethod
    def from_config(cls, script: str | None) -> ScriptedModel:
        if script in (None, "reference"):
            return cls(reference_episodes(), name="scripted-reference")
        return cls(load_script(Path(script)), name=f"scripted-{Path(script).stem}")

    def begin_episode(self, iteration: int) -> None:
        """Iteration n plays episode n (1-based); a restarted iteration plays it from its start."""
        self.iteration = iteration
        self.cursor = 0

    def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        t0 = time.monotonic()
        if self.iteration > len(self.episodes):
            raise ModelExhausted(f"the script has {len(self.episodes)} episodes")
        steps = self.episodes[self.iteration - 1]
        if self.cursor >= len(steps):
            raise ModelExhausted(f"episode {self.iteration} of the script has no more steps")
        step = steps[self.cursor]
        self.cursor += 1
        call = ToolCall(id=f"call-{self.iteration}-{self.cursor}", name=step["name"],
                        arguments=json.dumps(step.get("arguments", {})))
        msg = Message(role="assistant", content=step.get("say", ""), tool_calls=[call])
        # Token counts are estimates (no tokenizer runs), so that budgets on tokens behave as with a real model.
        usage = Usage(input_tokens=estimate_tokens(messages), output_tokens=estimate_tokens([msg]))
        return ModelResponse(message=msg, usage=usage, latency_s=time.monotonic() - t0, stop_reason="tool_use",
                             model=self.name)


def load_script(path: Path) -> list[list[Step]]:
    data = yaml.safe_load(path.read_text())
    episodes = data.get("episodes") if isinstance(data, dict) else None
    if not isinstance(episodes, list) or not all(isinstance(e, list) for e in episodes):
        raise ValueError(f"{path}: a script is {{'episodes': [[step, ...], ...]}}")
    for ep in episodes:
        for step in ep:
            args = step.setdefault("arguments", {})
            if "content_from" in args:
                args["content"] = (path.parent / args.pop("content_from")).read_text()
    return episodes


def reference_stages(root: Path = REFERENCE) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("stage"))


def stage_message(stage: Path) -> str:
    """The stage's MESSAGE file, else the first doc-comment line of its db.rs, else its name."""
    if (stage / "MESSAGE").is_file():
        return (stage / "MESSAGE").read_text().strip()
    db = stage / "src" / "db.rs"
    if db.is_file():
        for line in db.read_text().splitlines():
            if line.startswith("//!"):
                return line.removeprefix("//!").strip()
    return stage.name


def reference_episodes(root: Path = REFERENCE) -> list[list[Step]]:
    episodes = []
    for stage in reference_stages(root):
        steps: list[Step] = []
        for f in sorted(p for p in stage.rglob("*") if p.is_file() and p.name not in ("MESSAGE", "README.md")):
            rel = f.relative_to(stage).as_posix()
            steps.append({"name": "write_file", "arguments": {"path": rel, "content": f.read_text()}})
        message = stage_message(stage)
        steps.append({"name": "bash", "arguments": {"command": "devbench --quick --queries 200 2>&1 | tail -n 15"}})
        steps.append({"name": "bash", "arguments": {
            "command": f"printf '%s\\n' {json.dumps('- ' + stage.name + ': ' + message)} >> NOTES.md"}})
        steps.append({"name": "submit", "arguments": {"message": message}})
        episodes.append(steps)
    return episodes
