"""``staircase scaffold``: the scaffold image (the sandbox image plus the coding agents)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli_options import Json, Sets
from harness.config import ConfigError, load_config
from harness.console import emit_json, fail, log

app = typer.Typer(help="Scaffolds: coding agents as the inner loop, and their image.", no_args_is_help=True)


@app.command("image")
def image(
    config: Annotated[Path | None, typer.Argument(help="A run config (its scaffold and sandbox settings).")] = None,
    set_: Sets = None,
    json: Json = False,
) -> None:
    """Build the scaffold image for a config (a lookup when its tag exists) and print its tag."""
    from harness.agent.scaffolds.image import ensure_scaffold_image
    from harness.paths import REPO_ROOT
    from harness.sandbox.image import ImageBuildError, ensure_image

    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as e:
        fail(str(e))
    try:
        base = cfg.sandbox.image or ensure_image(REPO_ROOT, progress=log).tag
        built = ensure_scaffold_image(base, mini_swe_agent=cfg.scaffold.mini_swe_agent,
                                      claude_code=cfg.scaffold.claude_code, progress=log)
    except ImageBuildError as e:
        fail(str(e))
    if json:
        emit_json(built)
    else:
        log(f"{'found' if built.cached else 'built'} {built.tag} on {built.base} in {built.seconds:.1f} s")
