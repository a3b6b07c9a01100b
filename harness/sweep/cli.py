"""``staircase sweep SWEEP.yaml``, ``staircase sweep status DIR``, ``staircase sweep resume DIR``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table
from typer.core import TyperGroup

from harness.cli_options import Json, Sets
from harness.config import ConfigError
from harness.console import emit_json, err, fail, log
from harness.sweep.record import SweepLocked
from harness.sweep.spec import SweepSpec, default_concurrency, load_sweep
from harness.sweep.sweep import Executor, Sweep, SweepSummary, sweep_summary
from harness.view.cli import view_command


class _SweepGroup(TyperGroup):
    """``staircase sweep FILE ...`` is ``staircase sweep start FILE ...``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_SweepGroup, no_args_is_help=True,
                  help="Many runs at once (configs x seeds), on this machine or a Ray cluster; "
                       "`staircase sweep SWEEP.yaml` starts one.")

ExecutorOpt = Annotated[str | None, typer.Option("--executor", help="local (default) or ray; default: the file's.")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray: HOST:PORT of the cluster's head.")]


def make_executor(spec: SweepSpec, executor: str | None, address: str | None, sweep_dir: Path) -> Executor:
    name = executor or spec.executor
    if name == "local":
        from harness.sweep.local import LocalExecutor

        return LocalExecutor(spec.concurrency or default_concurrency(), spec.run_command)
    if name == "ray":
        try:
            from harness.sweep.ray_executor import RayExecutor
        except ImportError as e:
            fail(f"--executor ray needs Ray: pip install 'staircase[ray]' ({e})")
        return RayExecutor(spec, address or spec.ray.address)
    fail(f"--executor must be local or ray, not {name!r}")


def _finish(summary: SweepSummary, json: bool) -> None:
    if json:
        emit_json(summary)
    else:
        err.print(_table(summary))
        log(f"sweep directory: {summary.sweep_dir}")
        if summary.status != "ended":
            log(f"continue with: staircase sweep resume {summary.sweep_dir}")
    if summary.status != "ended":
        raise typer.Exit(3)


def _table(summary: SweepSummary) -> Table:
    t = Table("run", "group", "seed", "status", "iterations", "best QPS", "node", "launches", "last exit",
              title=f"sweep {summary.name}: {summary.sweep_dir}")
    for r in summary.runs:
        t.add_row(r.run_id, r.group, str(r.seed), r.status, str(r.iterations),
                  f"{r.best_valid_qps:,.0f}" if r.best_valid_qps else "-", r.node[:16], str(r.launches),
                  (r.last_exit or "-").split(":")[0])
    return t


@app.command("start")
def start(
    sweep_file: Annotated[Path, typer.Argument(help="A sweep file (see configs/sweeps/demo.yaml).")],
    set_: Sets = None,
    sweep_dir: Annotated[Path | None, typer.Option(help="Where to write the sweep (default runs/sweep-<name>-<time>).")]
    = None,
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    json: Json = False,
) -> None:
    """Start a sweep: every run of the file (configs x matrix x seeds) to its end. `--set sweep.KEY=V`
    changes the sweep file (e.g. sweep.seeds=[0,1]); any other `--set` applies to every run."""
    try:
        spec, run_sets = load_sweep(sweep_file, set_ or [])
        target = sweep_dir or Path("runs") / f"sweep-{spec.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        ex = make_executor(spec, executor, address, target)
        sweep = Sweep.create(spec, run_sets, target)
    except (ConfigError, FileExistsError, SweepLocked) as e:
        fail(str(e))
    log(f"sweep directory: {sweep.dir} ({len(sweep.state.runs)} runs, executor {ex.name})")
    log(f"watch it in a browser: {view_command(sweep.dir)}")
    _finish(sweep.execute(ex), json)


@app.command("resume")
def resume(
    sweep_dir: Annotated[Path, typer.Argument(help="The sweep directory to continue.")],
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    json: Json = False,
) -> None:
    """Continue a sweep that was killed or stopped: ended runs are left alone, unfinished ones
    resumed, missing ones started."""
    try:
        sweep = Sweep.open(sweep_dir)
    except (FileNotFoundError, SweepLocked) as e:
        fail(str(e))
    try:
        ex = make_executor(sweep.spec, executor, address, sweep_dir)
    except BaseException:
        sweep.close()
        raise
    log(f"watch it in a browser: {view_command(sweep_dir)}")
    _finish(sweep.execute(ex, resumed=True), json)


@app.command("status")
def status(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep the table up to date until interrupted.")]
    = False,
    json: Json = False,
) -> None:
    """The sweep's runs as their ledgers show them now (read-only: safe while the sweep runs)."""
    try:
        summary = sweep_summary(sweep_dir)
    except FileNotFoundError as e:
        fail(str(e))
    if json:
        emit_json(summary)
        return
    if not follow:
        err.print(_table(summary))
        return
    with Live(_table(summary), console=err, refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(2)
                live.update(_table(sweep_summary(sweep_dir)))
        except KeyboardInterrupt:
            pass
