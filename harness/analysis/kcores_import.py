"""``staircase import kcores``: a published KCORES vector-db-bench entry as a run of ours.

The entry's ``agent_log.jsonl`` gives the tool calls and their times; each benchmark the agent ran
(``benchmarks/benchmark_NNN.json``, written by ``run_benchmark`` and ``finish`` in that order) becomes
a scored submission, so ``report`` and ``compare`` draw the entry beside our runs. Its figures are
the original harness's (1,000 or 10,000 queries, id-overlap recall, its own machine): the run is
marked imported and its hardware says so.

The entry's code is taken as ``staircase score`` takes it (``harness.scorer.submission.prepare_entry``):
the benchmark whose sources ``src_best_qps/`` holds (the best recall-passing QPS) carries the tree
hash of the ``best`` variant, the last one (``finish``) that of ``final`` (``src/``), each with the
files left out and why, so an imported point and a scoring of the same variant name the same tree.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli_options import Json
from harness.console import emit_json, fail, log
from harness.events import SCHEMA_VERSION, event_json, parse_event
from harness.scorer.record import Hardware, Score, Status
from harness.scorer.submission import SubmissionError, prepare_entry, tree_hash

BENCH_TOOLS = ("run_benchmark", "finish")


def _ts(s: str | None, default: float) -> float:
    if not s:
        return default
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")[:32]).timestamp()
    except ValueError:
        return default


def entry_trees(entry: Path) -> dict[str, dict[str, Any]]:
    """The tree hash and left-out files of each variant of ``entry`` that it has (``best``: its
    ``src_best_qps/`` over ``src/``; ``final``: ``src/``), as ``staircase score`` lays them out."""
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="staircase-kcores-") as tmp:
        for variant in ("best", "final"):
            try:
                prepared = prepare_entry(entry, Path(tmp) / variant, variant)  # type: ignore[arg-type]
            except SubmissionError:
                continue
            out[variant] = {"tree_hash": tree_hash(prepared.root), "left_out": prepared.left_out}
    return out


def _wrote_benchmark(r: dict[str, Any]) -> bool:
    """Whether a logged tool result is one that wrote a ``benchmarks/`` file (an error did not)."""
    return r.get("event") == "tool_result" and r.get("tool") in BENCH_TOOLS and (
        (r.get("result") or {}).get("type") != "Error")


def benchmark_tools(records: list[dict[str, Any]], n_files: int) -> list[str]:
    """Which tool wrote each ``benchmarks/`` file, in file order: the logged results that were not
    errors, then ``finish`` for a file past them when the session hit its tool-call limit (the
    agent runs that finish itself and logs no result for it), else ``run_benchmark``."""
    tools = [str(r.get("tool")) for r in records if _wrote_benchmark(r)][:n_files]
    ended = next((r.get("reason") for r in records if r.get("event") == "session_end"), None)
    while len(tools) < n_files:
        tools.append("finish" if ended == "tool_call_limit" and len(tools) == n_files - 1 else "run_benchmark")
    return tools


def _best_index(benches: list[dict[str, Any]], tools: list[str]) -> int | None:
    """The benchmark whose sources ``src_best_qps/`` holds: the first ``run_benchmark`` with the
    highest QPS among those whose recall passed (agent/src/tools.rs copies ``src/`` there only for
    a ``run_benchmark`` result with a strictly higher QPS; never for ``finish``)."""
    best: int | None = None
    for i, b in enumerate(benches):
        if tools[i] == "run_benchmark" and _passed(b) and (
                best is None or (b.get("qps") or 0) > (benches[best].get("qps") or 0)):
            best = i
    return best


def published_variant(entry: Path, qps: float | None) -> str:
    """Which variant's sources the published figure ``qps`` was measured on: ``final`` when a
    ``finish`` benchmark measured it (it ran on ``src/``), else ``best``."""
    records = _records(entry)
    files = sorted((entry / "benchmarks").glob("benchmark_*.json")) if (entry / "benchmarks").is_dir() else []
    tools = benchmark_tools(records, len(files))
    for f, tool in zip(files, tools, strict=True):
        try:
            b = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if qps is not None and b.get("qps") == qps:
            return "final" if tool == "finish" else "best"
    return "best"


def _records(entry: Path) -> list[dict[str, Any]]:
    log_path = entry / "agent_log.jsonl"
    out = []
    if log_path.is_file():
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict):
                out.append(r)
    return out


def _passed(b: dict[str, Any]) -> bool:
    return bool(b.get("recall_passed", (b.get("recall") or 0) >= b.get("recall_threshold", 0.95)))


def import_entry(entry: Path, run_dir: Path) -> dict[str, Any]:
    log_path = entry / "agent_log.jsonl"
    if not log_path.is_file():
        raise ValueError(f"{entry}: no agent_log.jsonl; not a KCORES leaderboard entry")
    if (run_dir / "events.jsonl").exists():
        raise ValueError(f"{run_dir} already holds a run")
    records = _records(entry)
    bench_files = sorted((entry / "benchmarks").glob("benchmark_*.json")) if (entry / "benchmarks").is_dir() else []
    benches = [json.loads(f.read_text()) for f in bench_files]
    trees = entry_trees(entry)
    tools = benchmark_tools(records, len(benches))
    # Which benchmark each variant's sources were measured by: best's the best passing one, final's the last.
    tree_of: dict[int, dict[str, Any]] = {}
    if "final" in trees and benches:
        tree_of[len(benches) - 1] = {"variant": "final", **trees["final"]}
    best_i = _best_index(benches, tools)
    if "best" in trees and best_i is not None:
        tree_of[best_i] = {"variant": "best", **trees["best"]}
    start: dict[str, Any] = next((r for r in records if r.get("event") == "session_start"), {})
    model = str(start.get("model", "unknown"))
    t = _ts(start.get("timestamp"), 0.0)
    # Events keep the original times, so the hours axis is the original session's.
    events: list[dict[str, Any]] = []
    events.append({"type": "run_start", "ts": t, "schema_version": SCHEMA_VERSION, "name": entry.name,
                   "model": model, "provider": "kcores", "imported": True, "source": str(entry)})
    n = 0
    for r in records:
        at = _ts(r.get("timestamp"), t)
        if r.get("event") == "tool_call":
            events.append({"type": "tool_call", "ts": at, "iteration": n + 1, "name": r.get("tool"),
                           "arguments": r.get("arguments", ""), "call_id": r.get("tool_call_id") or "", "output": "",
                           "is_error": False})
        elif _wrote_benchmark(r) and n < len(benches):
            n += 1
            events += _scored(n, at, benches[n - 1], r.get("tool"), model, tree_of.get(n - 1))
        elif r.get("event") == "session_end":
            events.append({"type": "run_end", "ts": at, "reason": f"kcores: {r.get('reason', 'ended')}"})
    for k in range(n, len(benches)):  # benchmarks the log does not mention, in file order
        events += _scored(k + 1, t, benches[k], tools[k], model, tree_of.get(k))
        n = k + 1
    if not any(e["type"] == "run_end" for e in events):
        events.append({"type": "run_end", "ts": t, "reason": "kcores: imported"})
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "events.jsonl").open("wb") as f:
        for seq, e in enumerate(events):
            f.write(event_json(parse_event({"seq": seq, **e})) + b"\n")
    (run_dir / "IMPORTED").write_text(f"imported from {entry}\n")
    return {"run_dir": str(run_dir), "model": model, "submissions": n,
            "tool_calls": sum(1 for e in events if e["type"] == "tool_call"), "variants": trees,
            "variant_iterations": {v["variant"]: i + 1 for i, v in sorted(tree_of.items())}}


def _scored(n: int, at: float, b: dict[str, Any], tool: str | None, model: str,
            tree: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    ok = _passed(b)
    sources = f"; its sources are the entry's {tree['variant']} variant" if tree else ""
    score = Score(
        status=Status.VALID if ok else Status.INVALID,
        reason=(f"KCORES {tool} on {b.get('total_queries')} queries (imported; the original harness's "
                f"figures{sources})"),
        valid=ok, qps=b.get("qps"), recall=b.get("recall"), recall_floor=b.get("recall_threshold", 0.95),
        p50_ms=b.get("p50_latency_ms"), p95_ms=b.get("p95_latency_ms"), p99_ms=b.get("p99_latency_ms"),
        queries=int(b.get("total_queries") or 0), protocol="kcores-original", dataset="sift-1m (KCORES)",
        dataset_sha256="", tree_hash=tree["tree_hash"] if tree else "", settings_hash="",
        left_out=(tree["left_out"] or None) if tree else None,
        hardware=Hardware(cpu_model="unknown (KCORES submission)", host_cpus=0, server_cpus="?", loadgen_cpus="?",
                          memory_limit="?", runner="kcores"),
        scored_at=datetime.fromtimestamp(at).isoformat() if at else "")
    return [
        {"type": "iteration_start", "ts": at, "iteration": n, "attempt": 0, "start_ref": ""},
        {"type": "submission", "ts": at, "iteration": n, "message": f"{tool} #{n}", "tag": "", "commit": "",
         "reason": "imported", "files_changed": 0, "lines_added": 0, "lines_removed": 0},
        {"type": "score", "ts": at, "iteration": n, "score": score.model_dump(mode="json")},
        {"type": "iteration_end", "ts": at, "iteration": n, "reason": "imported"},
    ]


def import_kcores(
    entry: Annotated[Path, typer.Argument(help="A KCORES leaderboard entry folder (with agent_log.jsonl).")],
    runs_dir: Annotated[Path, typer.Option(help="Where to create the run.")] = Path("runs"),
    name: Annotated[str | None, typer.Option(help="Run directory name (default kcores-<entry>).")] = None,
    json_: Json = False,
) -> None:
    """Turn a published KCORES leaderboard entry into a run (marked imported) for report and compare."""
    try:
        out = import_entry(entry, runs_dir / (name or f"kcores-{entry.name}"))
    except (ValueError, OSError) as e:
        fail(str(e))
    if json_:
        emit_json(out)
    else:
        log(f"imported {out['submissions']} benchmarks and {out['tool_calls']} tool calls into {out['run_dir']}")
