"""``staircase view``: a local web app over run and sweep directories (read-only, live)."""

from __future__ import annotations

import threading
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from harness.cli_options import Json
from harness.console import emit_json, fail, log


def view_command(run_dir: Path) -> str:
    """The command that shows a run in the browser (printed by run, resume and demo)."""
    return f"staircase view {run_dir}"


def view(
    dirs: Annotated[list[Path] | None, typer.Argument(help="Run or sweep directories, or directories holding "
                                                           "them (default: runs/).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (only this machine by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    open_: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
    json: Json = False,
) -> None:
    """Browse runs in a web page: the staircase live, every iteration's transcript, diff and score, and
    runs compared. Reads the run directories only (never writes, locks or truncates them)."""
    import uvicorn

    from harness.view.app import create_app

    roots = dirs or [Path("runs")]
    for d in roots:
        if not d.is_dir():
            fail(f"DIRS: {d} is not a directory")
    app = create_app(roots)
    runs = app.state.registry.scan(force=True)
    url = f"http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}/"
    if json:
        emit_json({"url": url, "dirs": [str(d.resolve()) for d in roots], "runs": sorted(runs)})
    else:
        log(f"staircase view: {len(runs)} runs under {', '.join(str(d) for d in roots)} at {url} (Ctrl-C stops)")
    if open_:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")
