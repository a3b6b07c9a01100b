"""Scaffold configs and the commands that start each agent (no Docker)."""

from __future__ import annotations

import pytest

from harness.agent.scaffolds import adapters
from harness.config import ConfigError, load_config
from harness.paths import REPO_ROOT


@pytest.mark.parametrize("name,scaffold", [("glm-5.1-claude-code", "claude-code"),
                                           ("mini-swe-agent-vllm", "mini-swe-agent"), ("glm-5.1", "builtin")])
def test_shipped_configs(name: str, scaffold: str) -> None:
    cfg = load_config(REPO_ROOT / f"configs/{name}.yaml")
    assert cfg.agent.scaffold == scaffold


def test_a_scaffold_missing_what_it_needs_is_named() -> None:
    with pytest.raises(ConfigError, match="scaffold.command"):
        load_config(None, ["agent.scaffold=command"])
    with pytest.raises(ConfigError, match="scaffold.claude_code"):
        load_config(None, ["agent.scaffold=claude-code"])
    with pytest.raises(ConfigError, match="agent.scaffold"):
        load_config(None, ["agent.scaffold=aider"])


def test_commands_carry_the_gateway_and_a_placeholder_key_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZAI_API_KEY", "sk-real-key-never-in-a-command")
    for name in ("glm-5.1-claude-code", "mini-swe-agent-vllm"):
        cfg = load_config(REPO_ROOT / f"configs/{name}.yaml")
        command = adapters.command(cfg, 7)
        assert "sk-real-key" not in command
        assert "OPENAI_BASE_URL=http://127.0.0.1:8765/v1" in command
        assert "ANTHROPIC_BASE_URL=http://127.0.0.1:8765" in command
        assert f"ANTHROPIC_API_KEY={adapters.PLACEHOLDER_KEY}" in command
        assert "STAIRCASE_ITERATION=7" in command and "staircase-agent-run" in command
    mini = adapters.command(load_config(REPO_ROOT / "configs/mini-swe-agent-vllm.yaml"), 1)
    assert "mini --yolo --exit-immediately" in mini and "--model openai/local-model" in mini
    claude = adapters.command(load_config(REPO_ROOT / "configs/glm-5.1-claude-code.yaml"), 1)
    assert "claude --print --model glm-5.1" in claude and claude.endswith("> /tmp/staircase/trajectory.jsonl")
