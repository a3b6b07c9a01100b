"""A sandbox that runs commands as local processes in the workspace: NO isolation.

For tests of the loop and for quick experiments on a trusted model only; real runs use the Docker
backend. It honours the same interface, timeouts (whole process group) and output caps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from harness.sandbox.base import ExecResult, FileTooLarge, Sandbox, SandboxConfig, SandboxError


class LocalSandbox(Sandbox):
    def __init__(self, workspace: Path, config: SandboxConfig | None = None, env: dict[str, str] | None = None):
        self.workspace = Path(workspace).resolve()
        self.config = config or SandboxConfig()
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workspace), **(env or {})}
        self._alive = True

    def _path(self, path: str) -> Path:
        p = Path(path)
        p = p if p.is_absolute() else self.workspace / p
        if p.is_absolute() and str(p).startswith("/workspace"):
            p = self.workspace / p.relative_to("/workspace")
        return p

    def exec(self, command: str, timeout_s: float | None = None, workdir: str | None = None) -> ExecResult:
        timeout = timeout_s or self.config.default_timeout_s
        t0 = time.monotonic()
        proc = subprocess.Popen(["bash", "-c", command], cwd=self._path(workdir) if workdir else self.workspace,
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
        except BaseException:  # a stop signal mid-command: the command does not outlive it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        head, tail = self.config.output_head_bytes, self.config.output_tail_bytes

        def cut(b: bytes) -> tuple[str, bool]:
            if len(b) <= head + tail:
                return b.decode(errors="replace"), False
            return (b[:head] + f"\n[... {len(b) - head - tail} bytes cut ...]\n".encode() + b[-tail:]).decode(
                errors="replace"), True

        so, st = cut(out)
        se, et = cut(err)
        return ExecResult(exit_code=proc.returncode if not timed_out else 124, stdout=so, stderr=se,
                          duration_s=time.monotonic() - t0, stdout_truncated=st, stderr_truncated=et,
                          timed_out=timed_out)

    def read_file(self, path: str) -> str:
        p = self._path(path)
        try:
            if p.stat().st_size > self.config.file_cap_bytes:
                raise FileTooLarge(f"{path}: over the {self.config.file_cap_bytes}-byte cap")
            return p.read_text(errors="replace")
        except OSError as e:
            raise SandboxError(f"cannot read {path}: {e.strerror}") from None

    def write_file(self, path: str, content: str) -> None:
        p = self._path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(content)
        except OSError as e:
            raise SandboxError(f"cannot write {path}: {e.strerror}") from None

    def stop(self) -> None:
        self._alive = False

    def alive(self) -> bool:
        return self._alive

    def restart(self) -> None:
        self._alive = True
