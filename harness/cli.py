"""The ``staircase`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.agent.scaffolds.cli import app as scaffold_app
from harness.analysis.cli import compare_cmd, report, runs
from harness.analysis.kcores_import import import_kcores
from harness.analysis.replay import replay
from harness.bench.cli import app as bench_app
from harness.cli_options import Json, Sets
from harness.config import ConfigError, config_to_yaml, load_config
from harness.console import emit_json, fail
from harness.datasets.cli import app as datasets_app
from harness.run_cli import demo, resume, run
from harness.sandbox.cli import app as sandbox_app
from harness.scorer.cli import score, verify
from harness.sweep.cli import app as sweep_app
from harness.view.cli import view

app = typer.Typer(
    name="staircase",
    help="Long-horizon agentic optimization: models climb a Rust vector-DB staircase; a fair scorer measures it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
config_app = typer.Typer(help="Inspect run configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(datasets_app, name="datasets")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(bench_app, name="bench")
app.add_typer(sweep_app, name="sweep")
app.add_typer(scaffold_app, name="scaffold")
app.command("score")(score)
app.command("verify")(verify)
app.command("run")(run)
app.command("resume")(resume)
app.command("demo")(demo)
app.command("report")(report)
app.command("runs")(runs)
app.command("compare")(compare_cmd)
app.command("replay")(replay)
app.command("view")(view)
import_app = typer.Typer(help="Bring runs from elsewhere.", no_args_is_help=True)
import_app.command("kcores")(import_kcores)
app.add_typer(import_app, name="import")


@config_app.command("show")
def config_show(
    config: Annotated[Path | None, typer.Argument(help="A YAML run config (default: built-in defaults).")] = None,
    set_: Sets = None,
    json: Json = False,
) -> None:
    """Print the resolved configuration (file + overrides + defaults)."""
    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as e:
        fail(str(e))
    if json:
        emit_json(cfg)
    else:
        typer.echo(config_to_yaml(cfg), nl=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
