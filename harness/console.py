"""Terminal output shared by every command: progress and logs on stderr, results on stdout.

A command run with ``--json`` prints exactly one JSON value on stdout and nothing else there.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


class UserError(Exception):
    """A problem the user can fix (bad config, missing dataset...): printed without a traceback."""


def emit_json(value: Any) -> None:
    """Print one JSON value on stdout."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def log(message: str) -> None:
    err.print(message, highlight=False, markup=False, soft_wrap=True)
