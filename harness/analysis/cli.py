"""``staircase report`` and ``staircase runs``."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from harness.analysis.report import write_report
from harness.analysis.staircase import AXES, load_staircase
from harness.console import emit_json, err, fail, log

Json = Annotated[bool, typer.Option("--json", help="Print one JSON value on stdout.")]


def _recall_floor(run_dir: Path) -> float:
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        return float(cfg["scorer"]["recall_floor"])
    except (OSError, KeyError, TypeError, ValueError):
        return 0.95


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    axis: Annotated[str, typer.Option(help="x axis: " + ", ".join(AXES))] = "iterations",
    jump: Annotated[float | None, typer.Option(help="Relative rise of the best that counts as a transition "
                                                    "(default: 2x the measured noise, at least 5%).")] = None,
    json: Json = False,
) -> None:
    """Write the staircase PNG and an HTML report into the run directory."""
    if axis not in AXES:
        fail(f"--axis must be one of {', '.join(AXES)}, not {axis!r}")
    if not (run_dir / "events.jsonl").is_file():
        fail(f"{run_dir}: not a run directory (no events.jsonl)")
    sc = load_staircase(run_dir, jump=jump)
    png, page = write_report(sc, axis, run_dir, _recall_floor(run_dir))
    best = sc.best()
    out = {"png": str(png), "html": str(page), "points": len(sc.points), "best_valid_qps": best.qps if best else None,
           "best_iteration": best.iteration if best else None, "noise": sc.noise, "threshold": sc.threshold,
           "transitions": [t.model_dump() for t in sc.transitions]}
    if json:
        emit_json(out)
        return
    log(f"staircase: {png}\nreport:    {page}")
    t = Table("iteration", "from", "to", "jump", "plateau", "message", title="transitions")
    for tr in sc.transitions:
        t.add_row(str(tr.iteration), f"{tr.from_qps or 0:,.0f}", f"{tr.to_qps:,.0f}",
                  f"{tr.ratio:.2f}x" if tr.ratio else "first", str(tr.plateau_iterations), tr.message[:60])
    err.print(t)


def runs(
    root: Annotated[Path, typer.Argument(help="The folder holding run directories.")] = Path("runs"),
    json: Json = False,
) -> None:
    """List the runs under a folder: status, budget used, best score."""
    rows = []
    for d in sorted(p for p in root.iterdir() if (p / "events.jsonl").is_file()) if root.is_dir() else []:
        sc = load_staircase(d)
        best = sc.best()
        state = {}
        if (d / "state.json").is_file():
            state = jsonlib.loads((d / "state.json").read_text())
        rows.append({"run": d.name, "path": str(d), "model": sc.model, "status": "ended" if sc.end_reason else
                     "interrupted or running", "end_reason": sc.end_reason, "iterations": len(sc.points),
                     "tool_calls": sc.usage["tool_calls"], "tokens": sc.usage["tokens"],
                     "dollars": round(sc.usage["dollars"], 4), "hours": round(sc.usage["hours"], 3),
                     "best_valid_qps": best.qps if best else None, "updated": state.get("updated")})
    if json:
        emit_json(rows)
        return
    t = Table("run", "model", "status", "iterations", "tool calls", "tokens", "$", "hours", "best QPS", title=str(root))
    for r in rows:
        t.add_row(r["run"], r["model"], r["status"], str(r["iterations"]), f"{r['tool_calls']:.0f}",
                  f"{r['tokens']:,.0f}", f"{r['dollars']:.2f}", f"{r['hours']:.2f}",
                  f"{r['best_valid_qps']:,.0f}" if r["best_valid_qps"] else "-")
    err.print(t)
