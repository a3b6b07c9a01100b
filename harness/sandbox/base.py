"""The sandbox seam: one Protocol, its config and result types, the errors a backend raises.

A sandbox is the agent's machine: a container with the run's workspace at /workspace, the dev
data read-only under /data, no network, and nothing of the host's environment. Backends
(``docker_backend.DockerSandbox`` today) implement :class:`Sandbox`.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

WORKSPACE = "/workspace"
DATA_ROOT = "/data"


class SandboxError(Exception):
    """A sandbox operation failed for a reason other than the command itself."""


DeathCause = Literal["oom", "exited", "gone", "unknown"]


class SandboxDied(SandboxError):
    """The container is gone or stopped (killed, OOM-killed, engine restart): the loop calls
    ``restart()``. ``cause``: ``oom`` (the kernel's OOM killer, Docker's ``OOMKilled``), ``exited``
    (stopped or killed from outside), ``gone`` (removed), ``unknown``."""

    def __init__(self, message: str, cause: DeathCause = "unknown") -> None:
        super().__init__(message)
        self.cause: DeathCause = cause


class FileTooLarge(SandboxError):
    """``read_file``/``write_file`` refused content over the configured cap."""


class ExecResult(BaseModel):
    """What one command did. ``stdout``/``stderr`` are what the model may see: at most head + tail
    bytes of each stream, with a ``[... N bytes cut ...]`` marker where the middle was dropped."""

    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    # Both streams in arrival order, up to SandboxConfig.full_output_cap_bytes; written only
    # when something was cut for the model (otherwise stdout/stderr above are complete).
    full_output_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class SandboxConfig(BaseModel):
    """Limits and knobs of one sandbox. ``network`` exists only to say, in a saved config, that
    there is none: it cannot be set to anything else."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(
        default=None, description="Image tag; None = the image built from sandbox/ (ensure_image)."
    )
    cpuset: str | None = Field(default=None, description='CPUs the container may use, e.g. "0" or "0-1"; None = all.')
    memory: str = Field(default="4g", description="Memory limit (RAM + swap: no swap), docker syntax.")
    pids_limit: int = Field(default=1024, ge=16, description="Max processes + threads inside.")
    tmpfs_size: str = Field(default="1g", description="Size of the tmpfs mounted at /tmp.")
    user: str = Field(
        default="auto",
        description='"auto": the workspace owner\'s uid:gid, or 1000:1000 (agent) when root owns it; '
        'else a "uid:gid" or user name. Never root.',
    )
    default_timeout_s: float = Field(default=600.0, gt=0)
    kill_grace_s: float = Field(default=5.0, ge=1, description="SIGTERM -> SIGKILL delay when a command times out.")
    output_head_bytes: int = Field(default=10_000, ge=0, description="Bytes of each stream kept from its start.")
    output_tail_bytes: int = Field(default=10_000, ge=0, description="Bytes of each stream kept from its end.")
    full_output_cap_bytes: int = Field(default=32 * 1024 * 1024, ge=0, description="Cap of the full-output file.")
    file_cap_bytes: int = Field(default=8 * 1024 * 1024, ge=1, description="Cap of read_file/write_file content.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment inside (explicit only: never the host's)."
    )
    docker_timeout_s: float = Field(default=60.0, gt=0, description="Timeout of each Docker API call.")
    docker_retries: int = Field(default=3, ge=1, description="Attempts of an idempotent Docker call.")
    engine_wait_s: float = Field(default=600.0, gt=0, description="How long an unreachable engine is waited for.")
    network: Literal["none"] = "none"


@runtime_checkable
class Sandbox(Protocol):
    """The agent's machine. Paths are container paths; relative ones are under /workspace."""

    def exec(self, command: str, timeout_s: float | None = None, workdir: str | None = None) -> ExecResult:
        """Run ``command`` with ``bash -lc``; on timeout kill its whole process group."""
        ...

    def read_file(self, path: str) -> str: ...

    def write_file(self, path: str, content: str) -> None: ...

    def stop(self) -> None:
        """Remove the sandbox (the workspace stays)."""
        ...

    def alive(self) -> bool: ...

    def restart(self) -> None:
        """Make the sandbox anew from the same workspace, config and data (after it died)."""
        ...

    def claim_workspace(self) -> None:
        """After the host wrote into the workspace: give new files to the sandbox's user. Backends
        whose user is the host's need nothing here."""
        return None
