"""``staircase report`` and ``staircase runs``."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from harness.analysis.report import write_report
from harness.analysis.staircase import AXES, load_staircase
from harness.cli_options import Json
from harness.console import emit_json, err, fail, log
from harness.ledger import lock_holder


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
    """List the runs under a folder (or a sweep directory): status, budget used, best score."""
    if (root / "sweep.jsonl").is_file():
        root = root / "runs"
    rows = []
    for d in sorted(p for p in root.iterdir() if (p / "events.jsonl").is_file()) if root.is_dir() else []:
        sc = load_staircase(d)
        best = sc.best()
        state = {}
        if (d / "state.json").is_file():
            state = jsonlib.loads((d / "state.json").read_text())
        status = sc.status
        if status == "running":
            holder = lock_holder(d)
            status = f"running (PID {holder.get('pid')} on {holder.get('host')})" if holder else "interrupted"
        rows.append({"run": d.name, "path": str(d), "model": sc.model, "status": status,
                     "end_reason": sc.end_reason or sc.stop_reason, "iterations": len(sc.points),
                     "tool_calls": sc.usage["tool_calls"], "tokens": sc.usage["tokens"],
                     "dollars": round(sc.usage["dollars"], 4), "hours": round(sc.usage["hours"], 3),
                     "best_valid_qps": best.qps if best else None, "updated": state.get("updated")})
    if json:
        emit_json(rows)
        return
    t = Table("run", "model", "status", "iterations", "tool calls", "tokens", "$", "hours", "best QPS", title=str(root))
    for r in rows:
        t.add_row(str(r["run"]), str(r["model"]), str(r["status"]), str(r["iterations"]), f"{r['tool_calls']:.0f}",
                  f"{r['tokens']:,.0f}", f"{r['dollars']:.2f}", f"{r['hours']:.2f}",
                  f"{r['best_valid_qps']:,.0f}" if r["best_valid_qps"] else "-")
    err.print(t)


def _expand(paths: list[Path]) -> tuple[list[Path], list[str] | None, list[int | None] | None]:
    """Run directories, and for a sweep directory its runs with their groups and seeds (runs not
    started yet are left out)."""
    from harness.sweep.sweep import RUNS, planned_groups

    dirs: list[Path] = []
    groups: list[str] = []
    seeds: list[int | None] = []
    sweeps = [d for d in paths if (d / "sweep.jsonl").is_file()]
    for d in paths:
        if d in sweeps:
            for run_id, planned in planned_groups(d).items():
                if (d / RUNS / run_id / "events.jsonl").is_file():
                    dirs.append(d / RUNS / run_id)
                    groups.append(planned.group if len(sweeps) == 1 else f"{d.name}/{planned.group}")
                    seeds.append(planned.seed)
            continue
        if not (d / "events.jsonl").is_file():
            fail(f"{d}: not a run directory (no events.jsonl) nor a sweep directory (no sweep.jsonl)")
        dirs.append(d)
        groups.append(d.name)
        seeds.append(None)
    return dirs, (groups if sweeps else None), (seeds if sweeps else None)


def compare_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories, or sweep directories (their runs grouped "
                                                        "by configuration, across seeds).")],
    budget: Annotated[str | None, typer.Option(help="AXIS=VALUE, e.g. iterations=50, tool_calls=500, "
                                                    "tokens=2e6, dollars=20, hours=4. Default: no cut.")] = None,
    threshold: Annotated[float | None, typer.Option(help="QPS level for 'first iteration reaching'.")] = None,
    out: Annotated[Path, typer.Option(help="Where to write the overlay plot.")] = Path("compare.png"),
    json: Json = False,
) -> None:
    """Compare runs cut at the same budget: best valid QPS (relative to the anchor where the scores have
    it), area under the staircase, invalid count, cost; a sweep's runs grouped by configuration with
    the median and spread over their seeds; which neighbours cannot be told apart."""
    from harness.analysis.compare import compare, plot_overlay

    axis, value = "iterations", None
    if budget:
        axis, _, raw = budget.partition("=")
        if axis not in AXES or not raw:
            fail(f"--budget must be AXIS=VALUE with AXIS one of {', '.join(AXES)}, not {budget!r}")
        try:
            value = float(raw)
        except ValueError:
            fail(f"--budget {budget!r}: {raw!r} is not a number")
    dirs, groups, seeds = _expand(run_dirs)
    if not dirs:
        fail("no run to compare (a sweep whose runs have not started?)")
    stairs = [load_staircase(d) for d in dirs]
    result = compare(stairs, axis, value, threshold, groups=groups, seeds=seeds)
    relative = result.metric == "relative_qps"
    png = plot_overlay(stairs, axis, value, out, groups=groups, relative=relative)
    if json:
        emit_json(result.model_dump(mode="json") | {"png": str(png)})
        return
    for w in result.warnings:
        err.print(f"[yellow]warning:[/] {w}")
    cut_at = f"cut at {axis} = {value:g}" if value is not None else "whole runs"
    t = Table("rank", "run", "model", "points", "best valid QPS", "relative [95%]", "mean level", "first >= thr",
              "invalid", "tokens", "$", title=f"{cut_at}; ranked by {result.metric}")
    for r in sorted(result.runs, key=lambda r: r.rank):
        rel = (f"{r.best_relative_qps:.3f} [{r.relative_low:.3f}, {r.relative_high:.3f}]"
               if r.best_relative_qps is not None and r.relative_low is not None and r.relative_high is not None
               else "-")
        t.add_row(str(r.rank), Path(r.run).name, r.model, str(r.points),
                  f"{r.best_valid_qps:,.0f}" if r.best_valid_qps else "-", rel, f"{r.area:,.0f}",
                  str(r.first_reaching or "-"), str(r.invalid), f"{r.tokens:,.0f}", f"{r.dollars:.2f}")
    err.print(t)
    if result.groups:
        fmt = (lambda v: f"{v:.3f}") if relative else (lambda v: f"{v:,.0f}")
        g = Table("rank", "group", "seeds", f"median {result.metric}", "interval (seeds' spread)", "best QPS min..max",
                  "mean level (median)", "invalid (mean)", "$ (mean)", title=f"by group, {cut_at}")
        for s in sorted(result.groups, key=lambda s: s.rank):
            g.add_row(str(s.rank), s.group, ",".join(map(str, s.seeds)), fmt(s.median) if s.median is not None else "-",
                      f"{fmt(s.low)}..{fmt(s.high)}" if s.low is not None and s.high is not None else "-",
                      f"{s.best_valid_qps_min or 0:,.0f}..{s.best_valid_qps_max or 0:,.0f}", f"{s.area_median:,.0f}",
                      f"{s.invalid_mean:.1f}", f"{s.dollars_mean:.2f}")
        err.print(g)
    elif any(m.runs > 1 for m in result.models):
        m = Table("model", "runs", "best QPS mean", "spread (sd)", title="by model")
        for ms in result.models:
            m.add_row(ms.model, str(ms.runs), f"{ms.best_valid_qps_mean or 0:,.0f}",
                      f"{ms.best_valid_qps_spread:,.0f}" if ms.best_valid_qps_spread else "-")
        err.print(m)
    for tie in result.ties:
        err.print(f"[yellow]cannot tell apart:[/] {tie}")
    log(f"overlay plot: {png}")
