"""Scaffolds: a real coding agent (mini-swe-agent, Claude Code, any CLI) as the inner loop.

``agent.scaffold: builtin`` keeps the harness's own tool loop. Any other value makes each iteration a
:class:`~harness.agent.scaffolds.episode.ScaffoldEpisode`: the agent runs in the sandbox, built from
the scaffold image (``image.py``: the sandbox image plus the agents), and reaches the run's model only
through the run's :class:`~harness.gateway.Gateway`, whose Unix socket is the one thing mounted in for
it (the network stays off). The harness keeps the budget, the key, the record and the score.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from harness.agent.scaffolds.episode import ScaffoldEpisode
from harness.gateway import Gateway
from harness.sandbox.base import Sandbox

if TYPE_CHECKING:
    from harness.run import Run

SOCKET_NAME = "gateway.sock"
_RUNTIMES: weakref.WeakKeyDictionary[Run, ScaffoldRuntime] = weakref.WeakKeyDictionary()


class ScaffoldRuntime:
    """What a scaffold run holds for its life: the gateway on a socket in a folder of its own (the
    folder the sandbox gets mounted), and the way its sandboxes are made. It holds no reference to
    the run, so that the gateway closes when the run is collected (or the process exits)."""

    def __init__(self, run: Run) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="staircase-gw-"))
        self.dir.chmod(0o755)  # the sandbox's user must reach the socket inside
        self.gateway = Gateway(run.model, run.ledger, run.budget, socket_path=self.dir / SOCKET_NAME).start()
        self._closed = False
        atexit.register(self.close)

    def episode(self, run: Run, n: int, attempt: int, sandbox: Sandbox) -> ScaffoldEpisode:
        return ScaffoldEpisode(n, attempt, self.gateway, sandbox, run.cfg, run.ledger, run.budget, run.stop)

    def docker_sandbox(self, run: Run) -> Sandbox:
        """The run's Docker sandbox, on the scaffold image, with the gateway's folder mounted."""
        from harness.run import RUN_LABEL
        from harness.sandbox.docker_backend import DockerSandbox

        config = run.cfg.sandbox.model_copy(update={"image": scaffold_image(run)})
        sandbox = DockerSandbox.start(run.workspace.path, config, dev_data=run.dataset.dev_files(),
                                      log_dir=run.dir / "sandbox-logs", labels={RUN_LABEL: run.id},
                                      on_wait=run._waiting("docker"), gateway_dir=self.dir)
        self.restrict_to(sandbox.user)
        return sandbox

    def restrict_to(self, user: str) -> None:
        """Only the sandbox's group (and the harness) may reach the socket, not every local user."""
        parts = user.split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            return  # a user name: its group is not known here; the socket stays open to all
        gid = int(parts[1])
        socket_path = self.dir / SOCKET_NAME
        try:
            for path, mode in ((self.dir, 0o750), (socket_path, 0o660)):
                os.chown(path, -1, gid)
                path.chmod(mode)
        except OSError:
            pass  # not ours to give (a harness without that group): left as it was

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.gateway.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def scaffold_image(run: Run) -> str:
    """The scaffold image's tag: the configured one, or built on the run's sandbox image."""
    cfg = run.cfg
    if cfg.scaffold.image:
        return cfg.scaffold.image
    from harness.agent.scaffolds.image import ensure_scaffold_image
    from harness.paths import REPO_ROOT
    from harness.sandbox.image import ensure_image

    base = cfg.sandbox.image or ensure_image(REPO_ROOT).tag

    def say(line: str) -> None:
        print(f"scaffold image: {line}", file=sys.stderr)

    return ensure_scaffold_image(base, mini_swe_agent=cfg.scaffold.mini_swe_agent, claude_code=cfg.scaffold.claude_code,
                                 progress=say).tag


def scaffold_for(run: Run) -> ScaffoldRuntime | None:
    """None for the built-in loop; else the run's scaffold runtime, set up on first use (the gateway
    started, and the run's default Docker sandbox replaced by the scaffold's)."""
    if run.cfg.agent.scaffold == "builtin":
        return None
    runtime = _RUNTIMES.get(run)
    if runtime is None:
        runtime = _RUNTIMES[run] = ScaffoldRuntime(run)
        weakref.finalize(run, runtime.close)
        if run.sandbox is None and getattr(run._sandbox_factory, "__name__", "") == "_docker_sandbox":
            run._sandbox_factory = runtime.docker_sandbox
    return runtime
