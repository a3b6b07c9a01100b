"""``staircase run``, ``resume`` and ``demo``: start, continue and show off a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from harness.cli_options import Json, Sets
from harness.config import ConfigError, load_config
from harness.console import emit_json, err, fail, log
from harness.datasets.sources import generate_dataset
from harness.datasets.store import DatasetError, DatasetStore
from harness.events import Event, IterationStart, SandboxRestarted, ScoreEvent, Stopped, Waiting
from harness.ledger import DiskFull, RunLocked
from harness.models.base import ModelError
from harness.paths import CONFIGS
from harness.run import Run, RunSummary
from harness.view.cli import view_command

SPARK = "▁▂▃▄▅▆▇█"
# The demo's dataset (configs/demo.yaml names it): small enough that the whole demo takes a few
# minutes on 2 cores, with 5,000 hidden queries so that a scoring's passes of a fast stage last long
# enough (~0.3 s at 15K QPS) for its QPS to mean something.
DEMO_DATASET = "demo-20k"



def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    return "".join(SPARK[int((v - lo) / (hi - lo) * (len(SPARK) - 1)) if hi > lo else 0] for v in values)


class Progress:
    """Live progress on stderr, read from the run's typed events as they are appended: one line per
    event that matters, with the best valid QPS so far as a sparkline."""

    def __init__(self) -> None:
        self.best: list[float] = []

    def __call__(self, e: Event) -> None:
        match e:
            case IterationStart():
                log(f"iteration {e.iteration}" + (f" (attempt {e.attempt + 1})" if e.attempt else ""))
            case ScoreEvent():
                s = e.score
                qps = f"{s.qps:,.0f} QPS" if s.qps is not None else "-"
                prev = self.best[-1] if self.best else 0.0
                self.best.append(max(prev, s.qps or 0.0) if s.valid else prev)
                log(f"iteration {e.iteration}: {s.status.value} {qps} recall {s.recall}: {s.reason}"
                    f"   best so far {sparkline(self.best)} {self.best[-1]:,.0f}")
            case SandboxRestarted():
                log(f"iteration {e.iteration}: the sandbox died ({e.cause}: {e.detail}); made anew "
                    f"({e.restarts} in this iteration)")
            case Waiting():
                log(e.detail)
            case Stopped():
                log(f"stopped: {e.reason}")


def _summary_out(summary: RunSummary, json: bool) -> None:
    from harness.analysis.report import write_report
    from harness.analysis.staircase import load_staircase

    data = summary.model_dump()
    run_dir = Path(data["run_dir"])
    png, page = write_report(load_staircase(run_dir), "iterations", run_dir)
    data["staircase_png"], data["report_html"] = str(png), str(page)
    if json:
        emit_json(data)
    else:
        err.print(f"[bold]run {'ended' if summary.status == 'ended' else 'stopped'}[/]: {data['end_reason']}; "
                  f"{data['iterations']} iterations; best valid QPS {data['best_valid_qps']} (iteration "
                  f"{data['best_iteration']}); run directory {data['run_dir']}", markup=True, highlight=False)
        if summary.verified_relative is not None:
            r, lo, hi = summary.verified_relative
            err.print(f"verified best (paired rounds): iteration {summary.verified_iteration}, {r:.3f}x the anchor "
                      f"[{lo:.3f}, {hi:.3f}]", markup=False, highlight=False)
        log(f"staircase plot: {png}\nreport:         {page}")
        if summary.status == "stopped":
            log(f"continue with: staircase resume {run_dir}")
    if summary.status == "stopped":
        raise typer.Exit(3)


def _execute(make: Callable[[], Run], json: bool, announce: bool = True) -> None:
    """Open or create the run (errors the user can fix are one line) and run it to its end or stop."""
    try:
        r = make()
    except (ConfigError, DatasetError, FileExistsError, FileNotFoundError, ValueError, RunLocked, DiskFull,
            ModelError) as e:
        fail(str(e))
    if announce:
        log(f"run directory: {r.dir}")
    log(f"watch it in a browser: {view_command(r.dir)}")
    _summary_out(r.execute(), json)


def run(
    config: Annotated[Path, typer.Argument(help="A YAML run config (see configs/).")],
    set_: Sets = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where to write the run (default runs/<name>-<time>).")] = None,
    json: Json = False,
) -> None:
    """Start a run: iterate until a budget ends or the model stops."""
    _execute(lambda: Run.create(load_config(config, set_ or []), run_dir, observers=[Progress()]), json)


def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run directory to continue.")],
    json: Json = False,
) -> None:
    """Continue a run that was stopped or killed, exactly where it was."""
    _execute(lambda: Run.open(run_dir, observers=[Progress()]), json, announce=False)


def demo(
    set_: Sets = None,
    json: Json = False,
) -> None:
    """The built-in demo: the scripted reference model on a generated dataset (no API key needed)."""

    def make() -> Run:
        cfg = load_config(CONFIGS / "demo.yaml", set_ or [])
        store = DatasetStore(cfg.dataset.data_dir)
        if cfg.dataset.name == DEMO_DATASET and not store.exists(DEMO_DATASET):
            log(f"generating the demo dataset {DEMO_DATASET}")
            generate_dataset(store, DEMO_DATASET, n=20_000, queries=5_000, dev_queries=200, seed=0, log=log)
        return Run.create(cfg, None, observers=[Progress()])

    _execute(make, json)
