"""Command-line options that several commands share, spelled once so that they read the same
everywhere (``--set``, ``--json``, ``--config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a setting: dotted.key=value, e.g. scorer.passes=5 (repeatable)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON value on stdout.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="A run config to take settings from.")]
