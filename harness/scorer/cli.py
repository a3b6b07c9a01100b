"""``staircase score``: benchmark one submission and print its score record."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from harness.cli_options import ConfigFile, Json, Sets
from harness.config import ConfigError, load_config
from harness.console import emit_json, err, fail
from harness.datasets.store import DatasetError
from harness.docker_util import EngineUnavailable
from harness.scorer.record import Score
from harness.scorer.scorer import BenchmarkScorer
from harness.scorer.submission import SubmissionError


def score(
    path: Annotated[Path, typer.Argument(help="A crate of the skeleton's shape, or a KCORES leaderboard entry.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset name (default: the config's).")] = None,
    config: ConfigFile = None,
    set_: Sets = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Measure again even if a score is cached.")] = False,
    variant: Annotated[str, typer.Option(help="For a KCORES entry: best (src_best_qps/) or final (src/).")] = "best",
    json: Json = False,
) -> None:
    """Benchmark a submission: build, start, load, query, judge; print the score record."""
    try:
        cfg = load_config(config, set_ or [])
        scorer = BenchmarkScorer.from_config(cfg, dataset)
        try:
            result = scorer.score(path, use_cache=not no_cache, variant=variant)
        finally:
            scorer.close()
    except (ConfigError, DatasetError, SubmissionError, EngineUnavailable) as e:
        fail(str(e))
    if json:
        emit_json(result)
    else:
        show(result)
    raise typer.Exit(0)


def fmt(v: float | None, f: str = "{:,.1f}") -> str:
    return "-" if v is None else f.format(v)


def show(s: Score) -> None:
    colour = "green" if s.valid else "red"
    t = Table(show_header=False, title=f"[{colour}]{s.status.value}[/]: {s.reason}", title_justify="left")
    source = {"first_pass": "pass 1 only"}.get(str(s.qps_source), "median of passes")
    confidence = " (low confidence)" if str(s.qps_confidence) == "low" else ""
    t.add_row(f"QPS ({source}){confidence}", fmt(s.qps), "spread (max/min)", fmt(s.qps_spread, "{:.3f}"))
    t.add_row("recall@10", fmt(s.recall, "{:.4f}"), "floor", f"{s.recall_floor}")
    t.add_row("latency p50/p95/p99 ms", f"{fmt(s.p50_ms, '{:.2f}')} / {fmt(s.p95_ms, '{:.2f}')} / "
              f"{fmt(s.p99_ms, '{:.2f}')}", "queries", str(s.queries))
    t.add_row("phases (s)", ", ".join(f"{k} {v:.1f}" for k, v in s.phase_seconds.items()), "protocol", s.protocol)
    t.add_row("hardware", f"{s.hardware.cpu_model}", "runner", f"{s.hardware.runner} server={s.hardware.server_cpus} "
              f"loadgen={s.hardware.loadgen_cpus}")
    if s.anchor is not None:
        t.add_row("relative to the anchor", f"{s.anchor.ratio:.3f}x [{s.anchor.low:.3f}, {s.anchor.high:.3f}]",
                  "rounds", f"{s.anchor.rounds} ({s.anchor.seconds:.1f} s)")
    if s.step is not None:
        t.add_row("step", s.step.verdict.value, f"vs {s.step.paired.against}",
                  f"{s.step.paired.ratio:.3f}x [{s.step.paired.low:.3f}, {s.step.paired.high:.3f}]")
    t.add_row("tree", s.tree_hash[:16], "cached", str(s.cached))
    err.print(t)
    for finding in s.findings:
        err.print(f"finding: {finding}", markup=False, highlight=False)
    for note in s.not_as_original or []:
        err.print(f"not as the original: {note}", markup=False, highlight=False)
    for left in s.left_out or []:
        err.print(f"left out: {left}", markup=False, highlight=False)
    if s.status.value not in ("valid", "invalid") and s.server_log_tail:
        err.print("[dim]server log tail:[/]")
        err.print(s.server_log_tail[-2000:], markup=False, highlight=False)


def verify(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (not running: verification writes to it).")],
    top: Annotated[int, typer.Option("--top", min=1, help="How many of the best valid submissions to rescore.")] = 3,
    json: Json = False,
) -> None:
    """Rescore a run's top valid submissions in paired rounds against each other and the anchor;
    the verified best (highest ratio to the anchor, with its interval) is recorded in the run."""
    from harness.ledger import RunLocked
    from harness.run import Run

    try:
        run = Run.open(run_dir, resume=False)
    except (FileNotFoundError, ConfigError, RunLocked) as e:
        fail(str(e))
    try:
        v = run.verify(top)
    except (DatasetError, EngineUnavailable) as e:
        fail(str(e))
    finally:
        run._close()
    if v is None:
        fail(f"{run_dir}: no valid submission to verify")
    if json:
        emit_json(v)
        raise typer.Exit(0)
    t = Table(title=f"verified: {v.rounds} paired rounds, {v.seconds:.0f} s", title_justify="left")
    for col in ("submission", "QPS (rounds)", "recall", "x anchor", "95% interval", "problems"):
        t.add_column(col)
    for entry in v.entries:
        r = entry.relative
        t.add_row(entry.label + (" (best)" if entry.label == v.best else ""), fmt(entry.qps),
                  fmt(entry.recall, "{:.4f}"), fmt(r.ratio if r else None, "{:.3f}"),
                  f"[{r.low:.3f}, {r.high:.3f}]" if r else "-", "; ".join(entry.problems) or "")
    err.print(t)
    if v.best_vs_next is not None:
        b = v.best_vs_next
        err.print(f"{v.best} vs {b.against}: {b.ratio:.3f}x [{b.low:.3f}, {b.high:.3f}]: "
                  + ("told apart" if v.told_apart else "cannot be told apart at this budget of rounds"))
    raise typer.Exit(0)
