"""How each scaffold is started in the sandbox for one iteration: one shell command, run under
``staircase-agent-run`` (which opens the gateway's loopback port and stops the agent when the
harness says the iteration is over). Every agent gets the same environment: the gateway's URLs for
both protocols, a placeholder key (the real one never leaves the harness), the model name, and the
iteration's prompt in a file."""

from __future__ import annotations

import shlex

from harness.config import RunConfig

WORK = "/tmp/staircase"  # the iteration's prompt and the agent's trajectory (tmpfs, outside the workspace)
PROMPT_FILE = f"{WORK}/prompt.md"
PLACEHOLDER_KEY = "staircase-gateway"  # what agents send as their key; the gateway ignores it

# Where each scaffold writes its own trajectory (kept beside the gateway's record).
TRAJECTORY = {"mini-swe-agent": f"{WORK}/trajectory.json", "claude-code": f"{WORK}/trajectory.jsonl",
              "command": f"{WORK}/trajectory.json"}

SCAFFOLD_NOTE = """
## How you work here
You work through your own tools in this sandbox (where the text above names tools such as `read_file`, \
`write_file`, `str_replace`, use your equivalents: a shell command is always available). The machine has \
no network. To end the iteration, run this shell command:

    submit "what you changed and why"

The harness then commits /workspace and scores it. Do not end your work any other way.
"""


def model_alias(cfg: RunConfig) -> str:
    return cfg.scaffold.model_alias or cfg.model.name


def environment(cfg: RunConfig, iteration: int) -> dict[str, str]:
    port = cfg.scaffold.gateway_port
    return {
        "STAIRCASE_GATEWAY_PORT": str(port),
        "STAIRCASE_PROMPT_FILE": PROMPT_FILE,
        "STAIRCASE_TRAJECTORY": TRAJECTORY[cfg.agent.scaffold],
        "STAIRCASE_MODEL": model_alias(cfg),
        "STAIRCASE_ITERATION": str(iteration),
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "OPENAI_API_KEY": PLACEHOLDER_KEY,
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ANTHROPIC_API_KEY": PLACEHOLDER_KEY,
    }


def agent_argv(cfg: RunConfig) -> list[str]:
    """The agent's command line (run by ``staircase-agent-run`` in /workspace)."""
    kind, alias = cfg.agent.scaffold, model_alias(cfg)
    if kind == "mini-swe-agent":
        port = cfg.scaffold.gateway_port
        return ["env", "MSWEA_CONFIGURED=true", "MSWEA_SILENT_STARTUP=1", "MSWEA_COST_TRACKING=ignore_errors",
                "LITELLM_LOCAL_MODEL_COST_MAP=True", "mini", "--yolo", "--exit-immediately", "--cost-limit", "0",
                "--model", f"openai/{alias}", "--output", TRAJECTORY[kind], "--config", "mini.yaml",
                "--config", f"model.model_kwargs.api_base=http://127.0.0.1:{port}/v1",
                "--config", f"model.model_kwargs.api_key={PLACEHOLDER_KEY}",
                "--config", "environment.cwd=/workspace",
                "--config", f"environment.timeout={int(cfg.agent.command_timeout_s)}",
                "--task", "__PROMPT__"]
    if kind == "claude-code":
        return ["env", "DISABLE_TELEMETRY=1", "DISABLE_AUTOUPDATER=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
                "claude", "--print", "--model", alias, "--dangerously-skip-permissions", "--output-format",
                "stream-json", "--verbose", "__PROMPT__"]
    if kind == "command":
        assert cfg.scaffold.command
        return ["bash", "-c", cfg.scaffold.command]
    raise ValueError(f"agent.scaffold: {kind!r} is not a scaffold")


def command(cfg: RunConfig, iteration: int) -> str:
    """The shell command an iteration runs in the sandbox."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in environment(cfg, iteration).items())
    argv = " ".join('"$(cat "$STAIRCASE_PROMPT_FILE")"' if a == "__PROMPT__" else shlex.quote(a)
                    for a in agent_argv(cfg))
    run = f"export {env}; staircase-agent-run {argv}"
    if cfg.agent.scaffold == "claude-code":
        run += f' > {TRAJECTORY["claude-code"]}'  # its stream of events is its trajectory
    return run
