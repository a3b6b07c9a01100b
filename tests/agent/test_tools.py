"""harness/agent/tools.py: the model's tools, run in a LocalSandbox on a temporary folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from harness.agent.tools import (
    Tool,
    ToolArgumentError,
    kcores_tools,
    long_horizon_tools,
    parse_arguments,
    run_tool,
)
from harness.models.base import ToolSpec
from harness.sandbox.base import ExecResult, SandboxDied
from harness.sandbox.local_backend import LocalSandbox

SPEC = ToolSpec(name="read_file", description="Read a file.", parameters={
    "type": "object", "required": ["path"],
    "properties": {"path": {"type": "string"}, "start_line": {"type": "integer"}, "ratio": {"type": "number"},
                   "force": {"type": "boolean"}}})


@pytest.fixture
def sb(tmp_path: Path) -> LocalSandbox:
    return LocalSandbox(tmp_path)


@pytest.fixture
def tools() -> dict[str, Tool]:
    return {t.spec.name: t for t in long_horizon_tools(command_timeout_s=10)}


def call(tools: dict[str, Tool], sb: LocalSandbox, name: str, **args: Any) -> Any:
    return run_tool(tools, sb, name, json.dumps(args))


# ---- parse_arguments -----------------------------------------------------------------------------


def test_well_formed_arguments_are_returned_as_a_dict() -> None:
    assert parse_arguments('{"path": "a.rs", "start_line": 3, "ratio": 1, "force": true}', SPEC) == {
        "path": "a.rs", "start_line": 3, "ratio": 1, "force": True}
    assert parse_arguments('{"path": "a.rs", "ratio": 0.5}', SPEC)["ratio"] == 0.5
    no_args = ToolSpec(name="get_status", description="", parameters={"type": "object", "properties": {}})
    assert parse_arguments("", no_args) == {} and parse_arguments("  ", no_args) == {}


@pytest.mark.parametrize(("raw", "message"), [
    ('{"path": "src/db.rs', "arguments are not valid JSON (Unterminated string"),
    ("not json at all", "arguments are not valid JSON (Expecting value at position 0)"),
    ('["src/db.rs"]', "arguments must be a JSON object, got list"),
    ('"src/db.rs"', "arguments must be a JSON object, got str"),
    ("{}", "missing required argument(s): path"),
    ('{"path": "a", "colour": "red"}', "unknown argument(s): colour; expected path, start_line, ratio, force"),
    ('{"path": 7}', "argument 'path' must be a string, got int"),
    ('{"path": "a", "start_line": "3"}', "argument 'start_line' must be a integer, got str"),
    ('{"path": "a", "ratio": "fast"}', "argument 'ratio' must be a number, got str"),
    ('{"path": "a", "force": "yes"}', "argument 'force' must be a boolean, got str"),
])
def test_bad_arguments_are_explained(raw: str, message: str) -> None:
    with pytest.raises(ToolArgumentError) as info:
        parse_arguments(raw, SPEC)
    assert str(info.value).startswith(message)


def test_invalid_json_is_quoted_back_but_cut() -> None:
    raw = '{"path": "' + "x" * 1000
    with pytest.raises(ToolArgumentError) as info:
        parse_arguments(raw, SPEC)
    text = str(info.value)
    assert repr(raw[:200]) in text and len(text) < 300


# ---- run_tool: what the model reads when it gets a call wrong --------------------------------------


def test_an_unknown_tool_names_the_tools_there_are(tools: dict[str, Tool], sb: LocalSandbox) -> None:
    r = run_tool(tools, sb, "edit_file", "{}")
    assert r.is_error and r.submitted is None
    assert r.text == "unknown tool 'edit_file'; the tools are: bash, read_file, write_file, str_replace, submit"


def test_argument_errors_come_back_as_text_prefixed_with_the_tool(tools: dict[str, Tool], sb: LocalSandbox) -> None:
    r = run_tool(tools, sb, "write_file", '{"path": "x.rs", "content": "fn main() {}')  # cut off
    assert r.is_error and r.text.startswith("write_file: arguments are not valid JSON")
    r = run_tool(tools, sb, "write_file", '{"path": "x.rs"}')
    assert r.is_error and r.text == "write_file: missing required argument(s): content"
    assert not (sb.workspace / "x.rs").exists()


def test_sandbox_errors_come_back_as_text(tools: dict[str, Tool], sb: LocalSandbox) -> None:
    r = call(tools, sb, "read_file", path="src/nope.rs")
    assert r.is_error and r.text == "read_file: cannot read src/nope.rs: No such file or directory"
    (sb.workspace / "src").mkdir()
    r = call(tools, sb, "read_file", path="src")
    assert r.is_error and r.text.startswith("read_file: cannot read src: ")


def test_a_dead_sandbox_is_not_the_models_mistake(tools: dict[str, Tool]) -> None:
    class Dead(LocalSandbox):
        def exec(self, command: str, timeout_s: float | None = None, workdir: str | None = None) -> ExecResult:
            raise SandboxDied("the container is gone")

    with pytest.raises(SandboxDied):
        run_tool(tools, Dead(Path("/nonexistent")), "bash", '{"command": "ls"}')


# ---- the long-horizon tools ------------------------------------------------------------------------


def test_bash_reports_output_stderr_and_exit_code(tools: dict[str, Tool], sb: LocalSandbox) -> None:
    ok = call(tools, sb, "bash", command="echo hello; pwd")
    assert not ok.is_error and ok.exec is not None and ok.exec.exit_code == 0
    assert ok.text.splitlines()[:2] == ["hello", str(sb.workspace)]
    assert ok.text.splitlines()[-1].startswith("[exit code 0, ")
    bad = call(tools, sb, "bash", command="echo out; echo err >&2; exit 3")
    assert bad.is_error and bad.text.startswith("out\n[stderr]\nerr\n[exit code 3, ")


def test_bash_timeout_cannot_exceed_the_configured_limit(sb: LocalSandbox) -> None:
    tools = {t.spec.name: t for t in long_horizon_tools(command_timeout_s=0.5)}
    t0 = time.monotonic()
    r = call(tools, sb, "bash", command="sleep 20", timeout_s=600)
    assert time.monotonic() - t0 < 5
    assert r.is_error and r.exec is not None and r.exec.timed_out and "timed out (killed)" in r.text


def test_read_file_numbers_lines_and_pages(tools: dict[str, Tool], sb: LocalSandbox) -> None:
    (sb.workspace / "f.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    whole = call(tools, sb, "read_file", path="f.txt")
    assert whole.text.splitlines()[0] == "     1\tline 1" and whole.text.splitlines()[-1] == "    10\tline 10"
    assert "more lines" not in whole.text

    page = call(tools, sb, "read_file", path="f.txt", start_line=3, max_lines=4)
    assert page.text == ("     3\tline 3\n     4\tline 4\n     5\tline 5\n     6\tline 6\n"
                         "\n[4 more lines: read on with start_line]")
    last = call(tools, sb, "read_file", path="f.txt", start_line=7, max_lines=4)
    assert last.text.splitlines()[-1] == "    10\tline 10" and "more lines" not in last.text
    assert call(tools, sb, "read_file", path="f.txt", start_line=0, max_lines=1).text.startswith("     1\tline 1\n")
    assert call(tools, sb, "read_file", path="f.txt", start_line=50).text == ""


def test_write_file_counts_bytes_and_makes_folders(tools: dict[str, Tool], sb: LocalSandbox) -> None:
    r = call(tools, sb, "write_file", path="/workspace/src/new/é.rs", content="// café\n")
    assert not r.is_error and r.text == "wrote 9 bytes to /workspace/src/new/é.rs"
    assert (sb.workspace / "src/new/é.rs").read_text() == "// café\n"


@pytest.mark.parametrize(("text", "count"), [("fn a() {}\n", 0), ("let x = 1;\nlet x = 1;\n", 2)])
def test_str_replace_refuses_unless_old_occurs_exactly_once(tools: dict[str, Tool], sb: LocalSandbox,
                                                             text: str, count: int) -> None:
    (sb.workspace / "db.rs").write_text(text)
    r = call(tools, sb, "str_replace", path="db.rs", old="let x = 1;", new="let x = 2;")
    assert r.is_error and r.text == f"`old` occurs {count} times in db.rs; it must occur exactly once"
    assert (sb.workspace / "db.rs").read_text() == text  # untouched


def test_str_replace_replaces_the_one_occurrence(tools: dict[str, Tool], sb: LocalSandbox) -> None:
    (sb.workspace / "db.rs").write_text("let x = 1;\nlet y = 1;\n")
    r = call(tools, sb, "str_replace", path="db.rs", old="let x = 1;", new="let x = 2;")
    assert not r.is_error and r.text == "replaced 1 occurrence in db.rs"
    assert (sb.workspace / "db.rs").read_text() == "let x = 2;\nlet y = 1;\n"


def test_submit_ends_the_iteration_with_the_message(tools: dict[str, Tool], sb: LocalSandbox) -> None:
    r = call(tools, sb, "submit", message="SIMD distances")
    assert r.submitted == "SIMD distances" and not r.is_error


# ---- the kcores-50 preset --------------------------------------------------------------------------


def kcores(status: str = "tool calls used: 3; left: 47 of 50") -> dict[str, Tool]:
    return {t.spec.name: t for t in kcores_tools(command_timeout_s=10, status=lambda: status)}


def test_kcores_has_the_original_nine_tools_in_order() -> None:
    assert list(kcores()) == ["read_file", "write_file", "list_files", "build_project", "run_benchmark",
                              "run_correctness_test", "run_profiling", "get_status", "finish"]
    no_args = ["build_project", "run_benchmark", "run_correctness_test", "run_profiling", "get_status"]
    assert all(kcores()[n].spec.parameters["properties"] == {} for n in no_args)


def test_kcores_file_tools_status_and_finish(sb: LocalSandbox) -> None:
    tools = kcores()
    assert run_tool(tools, sb, "write_file", '{"path": "src/db.rs", "content": "// db\\n"}').text == "wrote src/db.rs"
    assert run_tool(tools, sb, "read_file", '{"path": "src/db.rs"}').text == "// db\n"  # no line numbers here
    (sb.workspace / "target").mkdir()
    (sb.workspace / "target/big.rlib").write_text("x")
    listing = run_tool(tools, sb, "list_files", "")
    assert not listing.is_error and listing.text.splitlines()[0] == "./src/db.rs" and "target" not in listing.text
    assert run_tool(tools, sb, "get_status", "").text == "tool calls used: 3; left: 47 of 50"
    assert run_tool(tools, sb, "finish", "{}").submitted == "finish"
    assert run_tool(tools, sb, "finish", '{"summary": "done"}').submitted == "done"
    extra = run_tool(tools, sb, "get_status", '{"verbose": true}')
    assert extra.is_error and extra.text.startswith("get_status: unknown argument(s): verbose")
