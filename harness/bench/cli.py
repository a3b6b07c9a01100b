"""``staircase bench``: measurements of the harness itself and of reference points."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from harness.bench import scorer_bench as sb
from harness.bench.oracle import oracle_command
from harness.cli_options import ConfigFile, Json, Sets
from harness.config import ConfigError, load_config
from harness.console import emit_json, err, fail, log
from harness.datasets.store import DatasetError
from harness.docker_util import EngineUnavailable
from harness.paths import REPO_ROOT
from harness.scorer.runner import cpu_model
from harness.scorer.scorer import BenchmarkScorer
from harness.scorer.submission import SubmissionError

app = typer.Typer(help="Benchmarks of the harness itself and of reference points.", no_args_is_help=True)
app.command("oracle")(oracle_command)

ROWS = ("ceiling", "overhead", "noise", "brute")


@app.command("scorer")
def scorer_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset for the scorings (the issue's figures use gen-1m).")] = "gen-1m",
    submission: Annotated[Path, typer.Option(help="The commit rescored for overhead and noise.")] = (
        REPO_ROOT / "reference" / "stage05-two-level"),
    rescorings: Annotated[int, typer.Option(min=2, help="How many times it is scored (no cache).")] = 5,
    brute_force: Annotated[Path, typer.Option(help="An exact-scan submission.")] = (
        REPO_ROOT / "reference" / "stage01-brute-force"),
    brute_force_queries: Annotated[int, typer.Option(min=1, help="Hidden queries for the brute force.")] = 200,
    ceiling_rounds: Annotated[int, typer.Option(min=1)] = 5,
    ceiling_seconds: Annotated[float, typer.Option(min=0.5, help="Seconds per generator per round.")] = 3.0,
    only: Annotated[str, typer.Option(help="Comma-separated rows: ceiling,overhead,noise,brute.")] = ",".join(ROWS),
    config: ConfigFile = None,
    set_: Sets = None,
    json: Json = False,
) -> None:
    """Measure the scorer: generator ceiling vs wrk, overhead, noise across rescorings, brute force."""
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    if not wanted or wanted - set(ROWS):
        fail(f"--only: choose among {', '.join(ROWS)} (got {only!r})")
    try:
        cfg = load_config(config, set_ or [])
        scorer = BenchmarkScorer.from_config(cfg, dataset) if wanted & {"overhead", "noise", "brute"} else None
    except (ConfigError, DatasetError, EngineUnavailable) as e:
        fail(str(e))
    s = cfg.scorer
    report = sb.ScorerBenchReport(
        dataset=dataset, n_base=scorer.dataset.manifest.n_base if scorer else 0, cpu_model=cpu_model(),
        server_cpus=s.server_cpus, loadgen_cpus=s.loadgen_cpus, runner=s.runner, submission=str(submission))
    try:
        if "ceiling" in wanted:
            report.ceiling_rounds = sb.measure_ceiling(
                server_cpus=s.server_cpus, loadgen_cpus=s.loadgen_cpus, concurrency=s.concurrency,
                rounds=ceiling_rounds, seconds=ceiling_seconds, log=log)
            report.rows.append(sb.ceiling_row(report.ceiling_rounds))
        if scorer is not None and wanted & {"overhead", "noise"}:
            report.scorings = sb.rescore(scorer, submission, rescorings if "noise" in wanted else 1, log)
            if "overhead" in wanted:
                report.rows.append(sb.overhead_row(report.scorings))
            if "noise" in wanted:
                report.rows.append(sb.noise_row(report.scorings))
        if scorer is not None and "brute" in wanted:
            brute_cfg = cfg.model_copy(update={"scorer": s.model_copy(update={"max_queries": brute_force_queries})})
            brute = BenchmarkScorer.from_config(brute_cfg, dataset)
            try:
                report.brute_force = brute.score(brute_force, use_cache=False)
            finally:
                brute.close()
            log(f"brute force: {report.brute_force.reason}")
            report.rows.append(sb.brute_force_row(report.brute_force))
    except (SubmissionError, RuntimeError, EngineUnavailable) as e:
        fail(str(e))
    finally:
        if scorer is not None:
            scorer.close()
    if json:
        emit_json(report)
    else:
        show(report)


def show(report: sb.ScorerBenchReport) -> None:
    t = Table(title=(f"scorer bench: {report.dataset} ({report.n_base:,} vectors), {report.runner} runner, "
                     f"server cpus {report.server_cpus}, generator cpus {report.loadgen_cpus}; {report.cpu_model}"),
              title_justify="left")
    for col in ("row", "figure", "target", "met", "detail"):
        t.add_column(col, overflow="fold")
    for r in report.rows:
        fig = "-" if r.figure is None else f"{r.figure:,.4g} {r.unit}"
        met = "-" if r.met is None else ("[green]yes[/]" if r.met else "[red]no[/]")
        t.add_row(r.name, fig, r.target, met, r.detail)
    err.print(t)


@app.command("noise")
def noise_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset for the scorings (the issue's figures use gen-1m).")] = "gen-1m",
    submission: Annotated[Path, typer.Option(help="The submission rescored.")] = (
        REPO_ROOT / "reference" / "stage05-two-level"),
    rescorings: Annotated[int, typer.Option(min=2, help="Rescorings per case.")] = 5,
    tries: Annotated[int, typer.Option(min=1, help="Tries of each paired match.")] = 5,
    slowdown: Annotated[float, typer.Option(min=0.01, max=0.9, help="The step: the slowed copy serves this share "
                                            "fewer queries per second (a busy wait per search, sized from the "
                                            "submission's measured QPS).")] = 0.10,
    only: Annotated[str, typer.Option(help="Comma-separated: quiet,neighbour,step,self.")] = (
        "quiet,neighbour,step,self"),
    config: ConfigFile = None,
    set_: Sets = None,
    json: Json = False,
) -> None:
    """Rescore one submission on the quiet machine and under changing neighbours (raw vs relative
    QPS max/min); match it in paired rounds against a slowed copy and against itself."""
    from harness.bench import noise as nb

    parts = [w.strip() for w in only.split(",") if w.strip()]
    if not parts or set(parts) - {"quiet", "neighbour", "step", "self"}:
        fail(f"--only: choose among quiet, neighbour, step, self (got {only!r})")
    try:
        cfg = load_config(config, ["scorer.paired=true", *(set_ or [])])
        scorer = BenchmarkScorer.from_config(cfg, dataset, build_cache="bench-noise")
    except (ConfigError, DatasetError, EngineUnavailable) as e:
        fail(str(e))
    s = cfg.scorer
    report = nb.NoiseReport(dataset=dataset, n_base=scorer.dataset.manifest.n_base, submission=str(submission),
                            slowed_by=slowdown, anchor=s.anchor, rounds=s.pair_rounds, round_s=s.pair_round_s,
                            server_cpus=s.server_cpus)
    try:
        with tempfile.TemporaryDirectory(prefix="staircase-noise-") as tmp:
            for case in ("quiet", "neighbour"):
                if case in parts:
                    report.cases.append(nb.rescore(scorer, submission, rescorings, case, log))
            if "step" in parts:
                quiet = [c.raw_qps for c in report.cases if c.case == "quiet"]
                qps = statistics.median(quiet[0]) if quiet else nb.measure_qps(scorer, submission, log)
                report.extra_us = round(nb.spin_for(slowdown, qps), 2)
                log(f"step: a copy that waits {report.extra_us:g} µs per search ({slowdown:.0%} of {qps:,.0f} QPS)")
                slowed = nb.slowed_copy(submission, Path(tmp) / "slowed", report.extra_us)
                report.matches.append(nb.match(scorer, submission, slowed, tries, f"{slowdown:.0%} slower copy", log))
            if "self" in parts:
                report.matches.append(nb.match(scorer, submission, submission, tries, "self", log))
    except (SubmissionError, EngineUnavailable, RuntimeError, ValueError) as e:
        fail(str(e))
    finally:
        scorer.close()
    shares = [p / t for c in report.cases for p, t in zip(c.paired_s, c.total_s, strict=True) if t > 0]
    report.pairing_share = round(float(sorted(shares)[len(shares) // 2]), 4) if shares else None
    if json:
        emit_json(report)
        raise typer.Exit(0)
    t = Table(title=f"noise on {dataset} ({report.n_base:,} vectors), {report.rounds} rounds of "
                    f"{report.round_s:g} s against {report.anchor}", title_justify="left")
    for col in ("case", "raw QPS", "raw max/min", "relative QPS", "relative max/min", "neighbours"):
        t.add_column(col)
    for c in report.cases:
        rel = [f"{a.ratio:.3f} [{a.low:.3f}, {a.high:.3f}]" for a in c.anchor] if len(c.anchor) == len(
            c.relative_qps) else [f"{r:.3f}" for r in c.relative_qps]
        t.add_row(c.case, ", ".join(f"{q:,.0f}" for q in c.raw_qps), f"{c.raw_max_min or 0:.3f}",
                  ", ".join(rel), f"{c.relative_max_min or 0:.3f}",
                  "; ".join(c.neighbours))
    err.print(t)
    for m in report.matches:
        n_conf = m.verdicts.count("confirmed")
        err.print(f"{m.kind}: {n_conf} of {len(m.verdicts)} confirmed, {len(m.verdicts) - n_conf} within noise; "
                  "A/B " + ", ".join(f"{r:.3f} [{lo:.3f}, {hi:.3f}]" for r, lo, hi in zip(m.ratios, m.lows, m.highs,
                                                                                   strict=True)))
    if report.pairing_share is not None:
        err.print(f"pairing cost: {report.pairing_share:.1%} of a scoring's wall time (median)")
    raise typer.Exit(0)


@app.command("kcores")
def kcores_cmd(
    entries: Annotated[Path, typer.Option("--entries", help="A folder of KCORES leaderboard entries (the original "
                                          "repository's leaderboard/), each with src_best_qps/ or src/.")],
    top: Annotated[int | None, typer.Option("--top", min=1, help="Only the best entry of each of the N best-ranked "
                                            "models (by published QPS).")] = None,
    every_entry: Annotated[bool, typer.Option("--every-entry", help="Every entry, not one per model.")] = False,
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the config's).")] = None,
    variant: Annotated[str, typer.Option(help="published (the sources the published figure was measured on: "
                                         "final when finish measured it), best (src_best_qps/) or final (src/).")] = (
        "published"),
    leaderboard: Annotated[Path | None, typer.Option(help="The original's results/leaderboard.json (default: found "
                                                     "beside or in the entries folder).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Measure again even if a score is cached.")] = False,
    config: ConfigFile = None,
    set_: Sets = None,
    json: Json = False,
) -> None:
    """Score published KCORES entries under the kcores protocol, one at a time, and print the
    published QPS and recall beside ours."""
    from harness.bench import kcores as kb

    if variant not in ("published", "best", "final"):
        fail(f"--variant: choose published, best or final (got {variant!r})")
    try:
        found = kb.pick(kb.find_entries(entries, leaderboard), top, every_entry)
        cfg = load_config(config, ["scorer.protocol=kcores", *(set_ or [])])
        scorer = BenchmarkScorer.from_config(cfg, dataset)
    except (ValueError, ConfigError, DatasetError, EngineUnavailable) as e:
        fail(str(e))
    s, hw = cfg.scorer, scorer.hardware
    limits = {"build_timeout_s": s.build_timeout_s, "start_timeout_s": s.start_timeout_s,
              "benchmark_timeout_s": s.benchmark_timeout_s, "warmup_queries": s.warmup_queries,
              "concurrency": s.concurrency}
    report = kb.KcoresBenchReport(
        entries_dir=str(entries), variant=variant, dataset=scorer.dataset.name, n_base=scorer.dataset.manifest.n_base,
        protocol=s.protocol, cpu_model=hw.cpu_model, host_cpus=hw.host_cpus, server_cpus=s.server_cpus,
        loadgen_cpus=s.loadgen_cpus, runner=s.runner, limits=limits, not_as_original=scorer.kcores_cpus_note())
    try:
        report.rows = kb.score_entries(scorer, found, variant, log, use_cache=not no_cache)  # type: ignore[arg-type]
    except (SubmissionError, EngineUnavailable) as e:
        fail(str(e))
    finally:
        scorer.close()
    if json:
        emit_json(report)
        raise typer.Exit(0)
    t = Table(title=(f"KCORES entries ({variant}): published (SIFT-1M, 4 server CPUs) vs ours on {report.dataset} "
                     f"({report.n_base:,} vectors), {report.runner} runner, server cpus {report.server_cpus}; "
                     f"{report.cpu_model}"), title_justify="left")
    for col in ("entry", "model", "variant", "published QPS", "published recall", "status", "QPS", "recall",
                "reason"):
        t.add_column(col, overflow="fold")
    for r in report.rows:
        p = r.published
        t.add_row(r.entry, r.model, r.variant, "-" if p.qps is None else f"{p.qps:,.1f}",
                  "-" if p.recall is None else f"{p.recall:.4f}", r.status or "-",
                  "-" if r.qps is None else f"{r.qps:,.1f}", "-" if r.recall is None else f"{r.recall:.4f}", r.reason)
    err.print(t)
    for note in report.not_as_original:
        err.print(f"not as the original: {note}", markup=False, highlight=False)
    raise typer.Exit(0)
