"""``staircase run``, ``resume`` and ``demo``: start, continue and show off a run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from harness.config import ConfigError, load_config
from harness.console import emit_json, err, fail, log
from harness.datasets.sources import generate_dataset
from harness.datasets.store import DatasetError, DatasetStore

REPO = Path(__file__).resolve().parents[1]
SPARK = "▁▂▃▄▅▆▇█"
# The demo's dataset (configs/demo.yaml names it): small enough that the whole demo takes a few
# minutes on 2 cores, with 5,000 hidden queries so that a scoring's passes of a fast stage last long
# enough (~0.3 s at 15K QPS) for its QPS to mean something.
DEMO_DATASET = "demo-20k"

Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a setting: dotted.key=value (repeatable).")]
Json = Annotated[bool, typer.Option("--json", help="Print the final summary as one JSON value.")]


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    return "".join(SPARK[int((v - lo) / (hi - lo) * (len(SPARK) - 1)) if hi > lo else 0] for v in values)


class Progress:
    """Live progress on stderr: one line per event that matters, with a best-so-far sparkline."""

    def __init__(self) -> None:
        self.best: list[float] = []

    def __call__(self, message: str) -> None:
        if ": valid " in message or ": invalid " in message or "QPS" in message:
            try:
                qps = float(message.split(" valid ")[1].split(" QPS")[0].replace(",", "")) if " valid " in message \
                    else None
            except (IndexError, ValueError):
                qps = None
            prev = self.best[-1] if self.best else 0.0
            self.best.append(max(prev, qps or 0.0))
            message += f"   best so far {sparkline(self.best)} {self.best[-1]:,.0f}"
        log(message)


def _summary_out(summary: object, json: bool) -> None:
    from harness.analysis.report import write_report
    from harness.analysis.staircase import load_staircase

    data = dataclasses.asdict(summary)  # type: ignore[call-overload]
    run_dir = Path(data["run_dir"])
    png, page = write_report(load_staircase(run_dir), "iterations", run_dir)
    data["staircase_png"], data["report_html"] = str(png), str(page)
    if json:
        emit_json(data)
    else:
        err.print(f"[bold]run ended[/]: {data['end_reason']}; {data['iterations']} iterations; best valid QPS "
                  f"{data['best_valid_qps']} (iteration {data['best_iteration']}); run directory {data['run_dir']}")
        log(f"staircase plot: {png}\nreport:         {page}")


def run(
    config: Annotated[Path, typer.Argument(help="A YAML run config (see configs/).")],
    set_: Sets = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where to write the run (default runs/<name>-<time>).")] = None,
    json: Json = False,
) -> None:
    """Start a run: iterate until a budget ends or the model stops."""
    from harness.run import Run

    try:
        cfg = load_config(config, set_ or [])
        r = Run.create(cfg, run_dir, log=Progress())
    except (ConfigError, DatasetError, FileExistsError, ValueError) as e:
        fail(str(e))
    log(f"run directory: {r.dir}")
    _summary_out(r.execute(), json)


def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run directory to continue.")],
    json: Json = False,
) -> None:
    """Continue a run that was stopped or killed, exactly where it was."""
    from harness.run import Run

    try:
        r = Run.open(run_dir, log=Progress())
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    _summary_out(r.execute(), json)


def demo(
    set_: Sets = None,
    json: Json = False,
) -> None:
    """The built-in demo: the scripted reference model on a generated dataset (no API key needed)."""
    from harness.run import Run

    try:
        cfg = load_config(REPO / "configs" / "demo.yaml", set_ or [])
        store = DatasetStore(cfg.dataset.data_dir)
        if cfg.dataset.name == DEMO_DATASET and not store.exists(DEMO_DATASET):
            log(f"generating the demo dataset {DEMO_DATASET}")
            generate_dataset(store, DEMO_DATASET, n=20_000, queries=5_000, dev_queries=200, seed=0, log=log)
        r = Run.create(cfg, None, log=Progress())
    except (ConfigError, DatasetError, FileExistsError, ValueError) as e:
        fail(str(e))
    log(f"run directory: {r.dir}")
    _summary_out(r.execute(), json)
