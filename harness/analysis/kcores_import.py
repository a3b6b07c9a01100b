"""``staircase import kcores``: a published KCORES vector-db-bench entry as a run of ours.

The entry's ``agent_log.jsonl`` gives the tool calls and their times; each benchmark the agent ran
(``benchmarks/benchmark_NNN.json``, written by ``run_benchmark`` and ``finish`` in that order) becomes
a scored submission, so ``report`` and ``compare`` draw the entry beside our runs. Its figures are
the original harness's (1,000 or 10,000 queries, id-overlap recall, its own machine): the run is
marked imported and its hardware says so.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli_options import Json
from harness.console import emit_json, fail, log
from harness.events import SCHEMA_VERSION, event_json, parse_event
from harness.scorer.record import Hardware, Score, Status

BENCH_TOOLS = ("run_benchmark", "finish")


def _ts(s: str | None, default: float) -> float:
    if not s:
        return default
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")[:32]).timestamp()
    except ValueError:
        return default


def import_entry(entry: Path, run_dir: Path) -> dict[str, Any]:
    log_path = entry / "agent_log.jsonl"
    if not log_path.is_file():
        raise ValueError(f"{entry}: no agent_log.jsonl; not a KCORES leaderboard entry")
    if (run_dir / "events.jsonl").exists():
        raise ValueError(f"{run_dir} already holds a run")
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    benches = sorted((entry / "benchmarks").glob("benchmark_*.json")) if (entry / "benchmarks").is_dir() else []
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
        elif r.get("event") == "tool_result" and r.get("tool") in BENCH_TOOLS and n < len(benches):
            n += 1
            b = json.loads(benches[n - 1].read_text())
            events += _scored(n, at, b, r.get("tool"), model)
        elif r.get("event") == "session_end":
            events.append({"type": "run_end", "ts": at, "reason": f"kcores: {r.get('reason', 'ended')}"})
    for k in range(n, len(benches)):  # benchmarks the log does not mention, in file order
        b = json.loads(benches[k].read_text())
        events += _scored(k + 1, t, b, "run_benchmark", model)
        n = k + 1
    if not any(e["type"] == "run_end" for e in events):
        events.append({"type": "run_end", "ts": t, "reason": "kcores: imported"})
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "events.jsonl").open("wb") as f:
        for seq, e in enumerate(events):
            f.write(event_json(parse_event({"seq": seq, **e})) + b"\n")
    (run_dir / "IMPORTED").write_text(f"imported from {entry}\n")
    return {"run_dir": str(run_dir), "model": model, "submissions": n,
            "tool_calls": sum(1 for e in events if e["type"] == "tool_call")}


def _scored(n: int, at: float, b: dict[str, Any], tool: str | None, model: str) -> list[dict[str, Any]]:
    ok = bool(b.get("recall_passed", (b.get("recall") or 0) >= b.get("recall_threshold", 0.95)))
    score = Score(
        status=Status.VALID if ok else Status.INVALID,
        reason=f"KCORES {tool} on {b.get('total_queries')} queries (imported; the original harness's figures)",
        valid=ok, qps=b.get("qps"), recall=b.get("recall"), recall_floor=b.get("recall_threshold", 0.95),
        p50_ms=b.get("p50_latency_ms"), p95_ms=b.get("p95_latency_ms"), p99_ms=b.get("p99_latency_ms"),
        queries=int(b.get("total_queries") or 0), protocol="kcores-original", dataset="sift-1m (KCORES)",
        dataset_sha256="", tree_hash="", settings_hash="",
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
