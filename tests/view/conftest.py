"""One view server and (for the browser tests) one headless Chromium per session, over a directory
with a finished scripted run, a sweep-like nest of a synthetic run, and a live run the tests append to."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.ledger import Ledger
from harness.run import Run
from harness.sandbox.local_backend import LocalSandbox
from harness.scorer.record import Score, Status
from tests.loop.support import StubScorer, make_config
from tests.view import support

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path("/work/notes/view-shots")


class EveryThirdInvalid(StubScorer):
    """The stub scorer, with every third submission under the recall floor (red crosses to find)."""

    def score(self, path: Path, **kw: object) -> Score:
        s = super().score(path, **kw)
        if self.calls % 3 == 0:
            return s.model_copy(update={"status": Status.INVALID, "valid": False, "recall": 0.61,
                                        "reason": "recall@10 0.61 is below the floor 0.95"})
        return s.model_copy(update={"status": Status.VALID, "valid": True, "recall": 0.99})


class Live:
    """The live run: its Ledger stays open (the run is 'running') and tests append iterations."""

    def __init__(self, run_dir: Path) -> None:
        self.ledger = Ledger(run_dir)
        support.start(self.ledger, "live-run", model="live-model")
        self.n = 0
        for qps, valid, verdict in [(400, True, "confirmed"), (200, False, None), (410, True, "within_noise"),
                                    (700, True, "confirmed")]:
            self.add(qps, valid, verdict)

    def add(self, qps: float, valid: bool = True, verdict: str | None = None) -> int:
        self.n += 1
        support.iteration(self.ledger, self.n, support.score(qps, valid, 1000.0 + self.n, verdict))
        return self.n


@pytest.fixture(scope="session")
def view_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("view")
    root = tmp / "runs"
    scorer = EveryThirdInvalid()
    finished = Run.create(make_config(tmp / "scripted", episodes=8), root / "finished",
                          sandbox_factory=lambda run: LocalSandbox(run.workspace.path),
                          scorer_factory=lambda run: scorer)
    finished.execute()
    for group, seed, top in [("group-a", 0, 600), ("group-a", 1, 650), ("group-b", 0, 900)]:
        support.write_run(root / "sweep-1" / group / f"seed-{seed}",
                          [(300, True, "confirmed"), (250, False, None), (top, True, "confirmed")], name="swept")
    live = Live(root / "live")
    yield {"root": root, "finished": finished.dir, "live": live}
    live.ledger.close()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def server(view_root: dict[str, Any]) -> Iterator[str]:
    import uvicorn

    from harness.view.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app([view_root["root"]]), host="127.0.0.1", port=port,
                                        log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert time.monotonic() < deadline, "the view server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    pw_sync = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with pw_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(10_000)
    yield p
    context.close()


def shot(page: Any, name: str, artifacts: Path) -> Path:
    """Keep a screenshot as a test artifact (and for the issue's note when its folder exists)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    if SHOTS.parent.is_dir():
        SHOTS.mkdir(exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
    return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "view-artifacts"
