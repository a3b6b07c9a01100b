"""What a preset gives the model: its tools and the task text, assembled from the run's settings and
read from the sandbox the run uses (its CPU, the vendored crates)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.agent.prompts import KCORES_TASK, LONG_HORIZON_TASK, api_md
from harness.agent.tools import Tool, kcores_tools, long_horizon_tools
from harness.budget import Usage
from harness.config import RunConfig, cpu_count
from harness.datasets.store import DatasetManifest
from harness.sandbox.base import Sandbox

# Where the image keeps the list of crates it vendored (sandbox/Dockerfile writes it).
VENDORED_CRATES = "/opt/staircase/vendored-crates.txt"
_HARDWARE_PROBE = ("echo cores: $(nproc); grep -m1 'model name' /proc/cpuinfo | cut -d: -f2; "
                   "grep -m1 -o -w -E 'avx512f|avx2|fma|sse4_2|neon|asimd' /proc/cpuinfo | sort -u | tr '\\n' ' '")


@dataclass(frozen=True)
class Task:
    tools: list[Tool]
    text: str  # the stable part of every iteration's prompt (cached by providers that can)


def make_task(cfg: RunConfig, sandbox: Sandbox, manifest: DatasetManifest, usage: Usage) -> Task:
    """The tools and task text of ``cfg.agent.preset``; ``usage`` is the run's live usage (the
    kcores-50 preset's ``get_status`` reports it)."""
    s, kcores = cfg.scorer, cfg.agent.preset == "kcores-50"
    fields = {"recall_floor": s.recall_floor, "hardware": probe_hardware(sandbox), "server_cpus":
              cpu_count(s.server_cpus), "concurrency": s.concurrency, "memory_limit": s.memory_limit,
              "n_base": manifest.n_base, "dim": manifest.dim, "notes_file": cfg.agent.notes_file,
              "api_md": api_md(), "crates": vendored_crates(sandbox),
              "tool_budget": cfg.budget.max_tool_calls or "unlimited"}
    text = (KCORES_TASK if kcores else LONG_HORIZON_TASK).format(**fields)
    timeout = cfg.agent.command_timeout_s
    if not kcores:
        return Task(long_horizon_tools(timeout), text)
    cap = cfg.budget.max_tool_calls

    def status() -> str:
        left = f"{cap - usage.tool_calls} of {cap}" if cap else "unlimited"
        return f"tool calls used: {usage.tool_calls}; left: {left}"

    return Task(kcores_tools(timeout, status), text)


def probe_hardware(sandbox: Sandbox) -> str:
    """The sandbox's CPU as the model should know it, read from the sandbox itself."""
    r = sandbox.exec(_HARDWARE_PROBE, timeout_s=30)
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    return f"sandbox CPU: {'; '.join(lines) or 'unknown'} (SIMD flags listed are those the CPU reports)"


def vendored_crates(sandbox: Sandbox) -> str:
    r = sandbox.exec(f"cat {VENDORED_CRATES} 2>/dev/null | head -n 200", timeout_s=30)
    return r.stdout.strip() or "(the vendored crate list is unavailable)"
