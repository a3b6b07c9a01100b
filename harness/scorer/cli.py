"""``staircase score``: benchmark one submission and print its score record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from harness.config import ConfigError, RunConfig, load_config
from harness.console import emit_json, err, fail, log
from harness.datasets.store import DatasetError, DatasetStore
from harness.scorer.record import Score
from harness.scorer.runner import LocalRunner, Runner
from harness.scorer.scorer import Scorer
from harness.scorer.submission import SubmissionError


def score_cache_dir() -> Path:
    env = os.environ.get("STAIRCASE_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "staircase") / "scores"


def make_runner(cfg: RunConfig, build_cache: str | None = None) -> Runner:
    """The runner the config asks for: containers (default) or local processes. ``build_cache``
    names a shared build cache (a run's); None builds every submission from a fresh one."""
    s = cfg.scorer
    if s.runner == "local":
        return LocalRunner(s.server_cpus, s.loadgen_cpus, s.memory_limit)
    from harness.scorer.docker_runner import DockerRunner

    return DockerRunner(s, log=log, build_cache=build_cache)


def make_scorer(cfg: RunConfig, dataset_name: str | None = None, *, build_cache: str | None = None) -> Scorer:
    dataset = DatasetStore(cfg.dataset.data_dir).get(dataset_name or cfg.dataset.name)
    return Scorer(cfg.scorer, dataset, make_runner(cfg, build_cache), cache_dir=score_cache_dir(), log=log)


def score(
    path: Annotated[Path, typer.Argument(help="A crate of the skeleton's shape, or a KCORES leaderboard entry.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset name (default: the config's).")] = None,
    config: Annotated[Path | None, typer.Option(help="A run config to take settings from.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: scorer.KEY=VALUE (repeatable).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Measure again even if a score is cached.")] = False,
    variant: Annotated[str, typer.Option(help="For a KCORES entry: best (src_best_qps/) or final (src/).")] = "best",
    json: Annotated[bool, typer.Option("--json", help="Print the score record as one JSON value.")] = False,
) -> None:
    """Benchmark a submission: build, start, load, query, judge; print the score record."""
    try:
        cfg = load_config(config, set_ or [])
        scorer = make_scorer(cfg, dataset)
        result = scorer.score(path, use_cache=not no_cache, variant=variant)
    except (ConfigError, DatasetError, SubmissionError) as e:
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
    t.add_row("QPS (median of passes)", fmt(s.qps), "spread (max/min)", fmt(s.qps_spread, "{:.3f}"))
    t.add_row("recall@10", fmt(s.recall, "{:.4f}"), "floor", f"{s.recall_floor}")
    t.add_row("latency p50/p95/p99 ms", f"{fmt(s.p50_ms, '{:.2f}')} / {fmt(s.p95_ms, '{:.2f}')} / "
              f"{fmt(s.p99_ms, '{:.2f}')}", "queries", str(s.queries))
    t.add_row("phases (s)", ", ".join(f"{k} {v:.1f}" for k, v in s.phase_seconds.items()), "protocol", s.protocol)
    t.add_row("hardware", f"{s.hardware.cpu_model}", "runner", f"{s.hardware.runner} server={s.hardware.server_cpus} "
              f"loadgen={s.hardware.loadgen_cpus}")
    t.add_row("tree", s.tree_hash[:16], "cached", str(s.cached))
    err.print(t)
    if s.status.value not in ("valid", "invalid") and s.server_log_tail:
        err.print("[dim]server log tail:[/]")
        err.print(s.server_log_tail[-2000:], markup=False, highlight=False)
