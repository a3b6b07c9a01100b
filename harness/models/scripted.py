"""A deterministic model that plays a script of tool calls, one list of calls per iteration.

The built-in script ``reference`` replays the reference trajectory (``harness.reference``): for
each stage, write its files (a tuning variant: ``str_replace`` its knob lines), measure with
devbench, note the result, submit. The run's seed picks the path: seed 0 is the reference trajectory,
another seed skips some stages and tries other variants in another order
(:func:`harness.reference.seeded_trajectory`). Any other script is a YAML or JSON file:
``{"episodes": [[{"name": ..., "arguments": {...}}, ...], ...]}``, where an argument
``content_from: PATH`` (relative to the script file) is replaced by ``content`` read from it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from harness.agent.context import estimate_tokens
from harness.models.base import Message, ModelExhausted, ModelResponse, ToolCall, ToolSpec, Usage
from harness.paths import REFERENCE
from harness.reference import Stage, seeded_trajectory, stage_files

Step = dict[str, Any]


class ScriptedModel:
    def __init__(self, episodes: list[list[Step]], name: str = "scripted") -> None:
        self.episodes = episodes
        self.name = name
        self.iteration = 1
        self.cursor = 0

    @classmethod
    def from_config(cls, script: str | None, seed: int = 0) -> ScriptedModel:
        """The built-in ``reference`` script (its path drawn by ``seed``) or a script file (played as written)."""
        if script in (None, "reference"):
            return cls(reference_episodes(seed=seed), name="scripted-reference")
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


def reference_episodes(root: Path = REFERENCE, seed: int = 0) -> list[list[Step]]:
    """One episode per stage of the seed's path (:func:`seeded_trajectory`; seed 0: every stage in
    order): change the code, measure with devbench, note the result, submit.

    A base stage writes its files. A variant is a tuning step: ``str_replace`` on its knob lines in
    the tree the previous iteration submitted (the workspace an iteration starts from), which must
    be its base or another variant of it; otherwise the episode first writes its base's files.
    """
    episodes = []
    tree: dict[str, str] = {}  # the files the previous episodes laid over the skeleton
    previous: Stage | None = None
    for stage in seeded_trajectory(seed, root):
        files = stage_files(stage, root)
        steps: list[Step] = []
        tuning = stage.is_variant and previous is not None and previous.family == stage.family
        if not tuning:
            start = stage_files(stage.family, root) if stage.is_variant else files
            steps += [{"name": "write_file", "arguments": {"path": rel, "content": t}} for rel, t in start.items()]
            tree.update(start)
        stale = set(tree) - set(files)
        if stale:
            raise ValueError(f"{stage.name}: files of an earlier stage would stay: {', '.join(sorted(stale))}")
        steps += tuning_steps(stage.name, tree, files)
        steps.append({"name": "bash", "arguments": {"command": "devbench --quick --queries 200 2>&1 | tail -n 15"}})
        steps.append({"name": "bash", "arguments": {
            "command": f"printf '%s\\n' {json.dumps('- ' + stage.name + ': ' + stage.message)} >> NOTES.md"}})
        steps.append({"name": "submit", "arguments": {"message": stage.message}})
        episodes.append(steps)
        previous = stage
    return episodes


def tuning_steps(name: str, tree: dict[str, str], files: dict[str, str]) -> list[Step]:
    """``str_replace`` calls, one per changed line, that turn ``tree`` into ``files`` (updating ``tree``)."""
    steps: list[Step] = []
    for rel, text in files.items():
        before, after = tree[rel].split("\n"), text.split("\n")
        if len(before) != len(after):
            raise ValueError(f"{name}: {rel} has other lines than the previous tree, not only other values")
        for old, new in zip(before, after, strict=True):
            if old != new:
                if tree[rel].count(old) != 1:
                    raise ValueError(f"{name}: {old!r} is not unique in {rel}: str_replace would refuse it")
                tree[rel] = tree[rel].replace(old, new, 1)
                steps.append({"name": "str_replace", "arguments": {"path": rel, "old": old, "new": new}})
        assert tree[rel] == text
    return steps
