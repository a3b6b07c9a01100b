"""The scripted reference model, replayed through the real tools on a local copy of the skeleton:
each iteration leaves exactly the skeleton with its stage materialized over it (the workspace an
iteration starts from is the tree the previous one submitted), and a tuning variant gets there by
``str_replace`` on its knob lines alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.agent.tools import long_horizon_tools, run_tool
from harness.models.scripted import ScriptedModel, Step, reference_episodes
from harness.paths import SKELETON
from harness.reference import reference_stages, stage_files
from harness.sandbox.local_backend import LocalSandbox


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def replay(episode: list[Step], sandbox: LocalSandbox) -> str:
    """Run an episode's tool calls (devbench aside: it needs the sandbox image); the submitted message."""
    tools = {t.spec.name: t for t in long_horizon_tools(command_timeout_s=30)}
    submitted = None
    for step in episode:
        if step["name"] == "bash" and step["arguments"]["command"].startswith("devbench"):
            continue
        result = run_tool(tools, sandbox, step["name"], json.dumps(step["arguments"]))
        assert not result.is_error, (step, result.text)
        submitted = result.submitted if result.submitted is not None else submitted
    assert episode[-1]["name"] == "submit" and submitted is not None
    return submitted


def test_episodes_yield_exactly_the_materialized_stages(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(SKELETON, ws, ignore=shutil.ignore_patterns("target"))
    skeleton = tree(ws)
    sandbox = LocalSandbox(ws)
    stages, episodes = reference_stages(), reference_episodes()
    assert ScriptedModel.from_config("reference").episodes == episodes
    assert len(episodes) == len(stages) == 10
    notes = ""
    for n, (stage, episode) in enumerate(zip(stages, episodes, strict=True), start=1):
        assert replay(episode, sandbox) == stage.message
        notes += f"- {stage.name}: {stage.message}\n"
        expected = skeleton | {rel: text.encode() for rel, text in stage_files(stage).items()}
        assert tree(ws) == expected | {"NOTES.md": notes.encode()}, f"iteration {n}: {stage.name}"
        names = [s["name"] for s in episode[:-3]]
        if stage.is_variant:
            # A tuning step from the previous tree (its base or a sibling variant): one edit per knob.
            assert stages[n - 2].family == stage.family
            assert names == ["str_replace"] * len(names) and 0 < len(names) <= len(stage.consts) + len(stage.lines)
        else:
            assert names == ["write_file"] * len(stage_files(stage))


def test_a_variant_after_another_family_first_writes_its_base(tmp_path: Path) -> None:
    root = tmp_path / "reference"
    for name, value in (("stage01-one", "1"), ("stage01-two", "2")):
        (root / name / "src").mkdir(parents=True)
        (root / name / "src" / "db.rs").write_text(f"//! {name}\nconst A: usize = {value};\n")
    (root / "variants.yaml").write_text("stage01b-tuned:\n  base: stage01-one\n  message: tuned\n  consts: {A: 7}\n")
    episodes = reference_episodes(root)
    assert [[s["name"] for s in e[:-3]] for e in episodes] == [["write_file"], ["write_file"],
                                                                ["write_file", "str_replace"]]
    ws = tmp_path / "ws"
    ws.mkdir()
    for episode in episodes:
        replay(episode, LocalSandbox(ws))
    assert (ws / "src" / "db.rs").read_text() == "//! stage01-one\nconst A: usize = 7;\n"
