"""The tools a model uses inside its sandbox, for both agent presets.

A tool takes the model's JSON arguments and returns text for the model. Bad arguments are the
model's mistake, not a crash: they come back as an error message the model can read and fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.models.base import ToolSpec
from harness.sandbox.base import ExecResult, Sandbox, SandboxDied, SandboxError

BUILD_CMD = "cargo build --release --offline 2>&1 | tail -n 60"
# perf needs the kernel's permission, which containers often lack: say so rather than fail silently.
PROFILE_CMD = (
    "if perf record -q -g -o /tmp/perf.data -- true 2>/dev/null; then "
    "perf record -q -g -o /tmp/perf.data -- devbench --queries 500 >/tmp/devbench.out 2>&1; "
    "tail -n 12 /tmp/devbench.out; perf report -i /tmp/perf.data --stdio --no-children 2>/dev/null | "
    "grep -v '^#' | grep -v '^$' | head -n 60; "
    "else echo 'perf is not permitted in this sandbox; timing the dev benchmark instead'; "
    "devbench --queries 500 2>&1 | tail -n 30; fi"
)


@dataclass
class ToolResult:
    text: str
    is_error: bool = False
    submitted: str | None = None  # the submission message, when the tool ends the iteration
    exec: ExecResult | None = None


@dataclass
class Tool:
    spec: ToolSpec
    run: Callable[[Sandbox, dict[str, Any]], ToolResult]
    meta: dict[str, Any] = field(default_factory=dict)


class ToolArgumentError(ValueError):
    pass


def parse_arguments(raw: str, spec: ToolSpec) -> dict[str, Any]:
    """The model's JSON arguments, checked for required keys and basic types."""
    try:
        args = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
        raise ToolArgumentError(f"arguments are not valid JSON ({e.msg} at position {e.pos}): {raw[:200]!r}") from None
    if not isinstance(args, dict):
        raise ToolArgumentError(f"arguments must be a JSON object, got {type(args).__name__}")
    props = spec.parameters.get("properties", {})
    missing = [k for k in spec.parameters.get("required", []) if k not in args]
    if missing:
        raise ToolArgumentError(f"missing required argument(s): {', '.join(missing)}")
    unknown = [k for k in args if k not in props]
    if unknown:
        raise ToolArgumentError(f"unknown argument(s): {', '.join(unknown)}; expected {', '.join(props)}")
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
    for k, v in args.items():
        want = props[k].get("type")
        if want in types and not isinstance(v, types[want]):  # type: ignore[arg-type]
            raise ToolArgumentError(f"argument {k!r} must be a {want}, got {type(v).__name__}")
    return args


def _exec_text(r: ExecResult) -> str:
    parts = []
    if r.stdout:
        parts.append(r.stdout.rstrip("\n"))
    if r.stderr:
        parts.append("[stderr]\n" + r.stderr.rstrip("\n"))
    status = "timed out (killed)" if r.timed_out else f"exit code {r.exit_code}"
    parts.append(f"[{status}, {r.duration_s:.1f} s]")
    return "\n".join(parts)


def _spec(name: str, description: str, props: dict[str, Any], required: list[str]) -> ToolSpec:
    return ToolSpec(name=name, description=description,
                    parameters={"type": "object", "properties": props, "required": required})


# -- long-horizon preset ---------------------------------------------------------------------------


def long_horizon_tools(command_timeout_s: float) -> list[Tool]:
    def bash(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
        timeout = min(float(a.get("timeout_s", command_timeout_s)), command_timeout_s)
        r = sb.exec(a["command"], timeout_s=timeout)
        return ToolResult(_exec_text(r), is_error=not r.ok, exec=r)

    def read_file(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
        text = sb.read_file(a["path"])
        lines = text.splitlines(keepends=True)
        start = max(1, int(a.get("start_line", 1)))
        count = int(a.get("max_lines", 2000))
        chunk = lines[start - 1 : start - 1 + count]
        body = "".join(f"{start + i:6d}\t{ln}" for i, ln in enumerate(chunk))
        more = len(lines) - (start - 1 + len(chunk))
        return ToolResult(body + (f"\n[{more} more lines: read on with start_line]" if more > 0 else ""))

    def write_file(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
        sb.write_file(a["path"], a["content"])
        return ToolResult(f"wrote {len(a['content'].encode())} bytes to {a['path']}")

    def str_replace(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
        text = sb.read_file(a["path"])
        n = text.count(a["old"])
        if n != 1:
            return ToolResult(f"`old` occurs {n} times in {a['path']}; it must occur exactly once", is_error=True)
        sb.write_file(a["path"], text.replace(a["old"], a["new"], 1))
        return ToolResult(f"replaced 1 occurrence in {a['path']}")

    def submit(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
        return ToolResult("submitted for scoring", submitted=str(a["message"]))

    s = "string"
    return [
        Tool(_spec("bash", "Run a shell command in /workspace (bash -lc). No network. Output is cut to its "
                   "head and tail when long.", {"command": {"type": s}, "timeout_s": {"type": "number"}},
                   ["command"]), bash),
        Tool(_spec("read_file", "Read a text file, with line numbers.",
                   {"path": {"type": s}, "start_line": {"type": "integer"}, "max_lines": {"type": "integer"}},
                   ["path"]), read_file),
        Tool(_spec("write_file", "Create or overwrite a file with the given content.",
                   {"path": {"type": s}, "content": {"type": s}}, ["path", "content"]), write_file),
        Tool(_spec("str_replace", "Replace the one occurrence of `old` in a file by `new`.",
                   {"path": {"type": s}, "old": {"type": s}, "new": {"type": s}}, ["path", "old", "new"]),
             str_replace),
        Tool(_spec("submit", "Submit the workspace as it is now for official scoring; this ends the iteration. "
                   "Say in `message` what you changed and why.", {"message": {"type": s}}, ["message"]), submit),
    ]


# -- kcores-50 preset: the original challenge's nine tools ----------------------------------------


def kcores_tools(command_timeout_s: float, status: Callable[[], str]) -> list[Tool]:
    """The tools of KCORES vector-db-bench's agent, backed by the sandbox and the dev split."""

    def read_file(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
        return ToolResult(sb.read_file(a["path"]))

    def write_file(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
        sb.write_file(a["path"], a["content"])
        return ToolResult(f"wrote {a['path']}")

    def list_files(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
        r = sb.exec(f"find {_q(a.get('path', '.'))} -path ./target -prune -o -type f -print | sort | head -500",
                    timeout_s=30)
        return ToolResult(_exec_text(r), is_error=not r.ok)

    def run(cmd: str) -> Callable[[Sandbox, dict[str, Any]], ToolResult]:
        def go(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
            r = sb.exec(cmd, timeout_s=command_timeout_s)
            return ToolResult(_exec_text(r), is_error=not r.ok, exec=r)

        return go

    def get_status(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
        return ToolResult(status())

    def finish(sb: Sandbox, a: dict[str, Any]) -> ToolResult:
        return ToolResult("finished: the final benchmark runs now", submitted=str(a.get("summary", "finish")))

    s = "string"
    none: dict[str, Any] = {}
    return [
        Tool(_spec("read_file", "Read a file of the project.", {"path": {"type": s}}, ["path"]), read_file),
        Tool(_spec("write_file", "Write a file of the project (src/db.rs, src/distance.rs, Cargo.toml, ...).",
                   {"path": {"type": s}, "content": {"type": s}}, ["path", "content"]), write_file),
        Tool(_spec("list_files", "List the project's files.", {"path": {"type": s}}, []), list_files),
        Tool(_spec("build_project", "cargo build --release.", none, []), run(BUILD_CMD)),
        Tool(_spec("run_benchmark", "Build, start the server, load the vectors and measure QPS and recall@10 on "
                   "the dev queries.", none, []), run("devbench --queries 1000 2>&1 | tail -n 40")),
        Tool(_spec("run_correctness_test", "100 queries at concurrency 1: recall@10 against exact answers.",
                   none, []), run("devbench --queries 100 --concurrency 1 2>&1 | tail -n 40")),
        Tool(_spec("run_profiling", "Profile the server under load and show the hottest functions.", none, []),
             run(PROFILE_CMD)),
        Tool(_spec("get_status", "Tool calls used and left, and the last benchmark.", none, []), get_status),
        Tool(_spec("finish", "End the session: the final benchmark is run on the current code.",
                   {"summary": {"type": s}}, []), finish),
    ]


def _q(path: str) -> str:
    import shlex

    return shlex.quote(path)


def run_tool(tools: dict[str, Tool], sandbox: Sandbox, name: str, raw_args: str) -> ToolResult:
    """Run one tool call; every failure the model caused comes back as readable text."""
    tool = tools.get(name)
    if tool is None:
        return ToolResult(f"unknown tool {name!r}; the tools are: {', '.join(tools)}", is_error=True)
    try:
        args = parse_arguments(raw_args, tool.spec)
        return tool.run(sandbox, args)
    except ToolArgumentError as e:
        return ToolResult(f"{name}: {e}", is_error=True)
    except SandboxDied:
        raise  # the loop recreates the sandbox; not the model's doing
    except SandboxError as e:  # a missing file, a file over the cap, a path that is a folder...
        return ToolResult(f"{name}: {e}", is_error=True)
