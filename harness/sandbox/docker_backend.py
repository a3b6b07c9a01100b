"""The Docker backend of :class:`~harness.sandbox.base.Sandbox`, on the ``docker`` Python SDK.

The container: no network, a CPU set, memory (no swap) and pids limits, every capability dropped,
no-new-privileges, a non-root user, tmpfs /tmp, the workspace as the only writable bind mount, dev
data read-only under /data, and an environment built here from scratch (the host's never enters,
so neither do its API keys). PID 1 is Docker's init running ``sleep infinity``; commands are
``docker exec``-ed into it.

Ownership of the workspace: files the agent writes must stay editable by the harness and the other
way round. When the workspace is owned by a normal user, the container runs as that uid:gid (the
files stay that user's). When root owns it (the harness runs as root), the container runs as
``agent`` (1000:1000) and the workspace is handed to 1000:1000 at start; the harness (root) can
still do anything there, but files it creates later are root's: call :meth:`claim_workspace`
after writing into the workspace from the host (git runs on the host need
``-c safe.directory=*``, since the repository is no longer root's).

Timeouts: a command runs as ``timeout -k GRACE T bash -lc CMD``. GNU timeout puts itself in a new
process group and, on expiry, signals the whole group (TERM, then KILL after GRACE), so background
children die too. If the stream still has not ended a little later (a child that left the group
and holds the output pipe), every process carrying the command's ``STAIRCASE_EXEC_ID`` environment
marker is killed from a second exec.
"""

from __future__ import annotations

import functools
import os
import posixpath
import socket
import struct
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.types import Mount

from harness.docker_util import call_docker, hardened, never_reached
from harness.paths import REPO_ROOT
from harness.sandbox.base import (
    DATA_ROOT,
    WORKSPACE,
    DeathCause,
    ExecResult,
    FileTooLarge,
    Sandbox,
    SandboxConfig,
    SandboxDied,
    SandboxError,
)
from harness.sandbox.output import FullOutputLog, StreamCapture

T = TypeVar("T")
AGENT_UID = 1000
CONTAINER_PATH = "/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABEL = "staircase.sandbox"
GATEWAY_MOUNT = "/run/staircase"  # where a scaffold's sandbox finds the model gateway's socket
_POLL_S = 0.25  # how often a silent exec stream checks its deadline
_WATCHDOG_SLACK_S = 5.0  # after timeout + grace, how long before the harness kills by marker
_SWEEP_LIMIT_S = 30.0  # how long the marker sweep keeps trying to get a process slot and finish
# The marker sweep: bash builtins only, so that it needs exactly one process slot. Each pass reads
# every process's environment and kills the marked ones; a process forked meanwhile inherits the
# marker and is found by the next pass. Exit 0 once a pass finds none, 1 when passes run out.
_SWEEP_SCRIPT = r"""
for pass in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  found=0
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    while IFS= read -r -d '' kv; do
      if [ "$kv" = "$1" ]; then kill -9 "${p#/proc/}" 2>/dev/null; found=1; break; fi
    done < "$p/environ"
  done 2>/dev/null
  [ "$found" = 0 ] && exit 0
done
exit 1
"""


def claim_workspace(workspace: Path, uid: int = AGENT_UID, gid: int = AGENT_UID) -> int:
    """Give every file of ``workspace`` to uid:gid (links not followed). Returns files changed."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(workspace):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(name)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.lchown(name, uid, gid)
                changed += 1
    return changed


def _container_user(workspace: Path, configured: str) -> tuple[str, bool]:
    """The user the container runs as, and whether the workspace must be claimed for it."""
    if configured != "auto":
        if configured.split(":", 1)[0] in ("0", "root"):
            raise SandboxError("refusing to run a sandbox as root")
        return configured, False
    st = workspace.stat()
    if os.geteuid() == 0:
        # The harness runs as root, so what it writes there (git's files on a reset) is root's: it is
        # always handed over, to the workspace's owner, or to agent when root owns it. (A resumed run
        # finds the workspace already the agent's, and must still claim what its reset rewrote.)
        return (f"{st.st_uid}:{st.st_gid}" if st.st_uid != 0 else f"{AGENT_UID}:{AGENT_UID}"), True
    if st.st_uid != 0:
        return f"{st.st_uid}:{st.st_gid}", False
    raise SandboxError(f"{workspace} is owned by root; cannot hand it to the sandbox user")


def _demux(buf: bytearray, state: list[int], sink: Callable[[int, bytes], None]) -> None:
    """Feed Docker's multiplexed stream (8-byte header: stream, 0, 0, 0, big-endian length) to
    ``sink(stream, payload)`` piece by piece; ``state`` = [stream, payload bytes still due]."""
    while buf:
        if state[1] == 0:
            if len(buf) < 8:
                return
            stream, length = struct.unpack(">BxxxL", bytes(buf[:8]))
            del buf[:8]
            state[0], state[1] = stream, length
            continue
        piece = bytes(buf[: state[1]])
        del buf[: len(piece)]
        state[1] -= len(piece)
        sink(state[0], piece)


def _already_buffered(sock: object, raw: socket.socket) -> bytes:
    """Bytes the docker SDK's HTTP response read past its headers, taken without blocking."""
    try:
        reader = sock._response.raw._fp.fp  # type: ignore[attr-defined]
    except AttributeError:
        return b""
    timeout = raw.gettimeout()
    try:
        raw.settimeout(0.0)  # peek must not wait for new data: only what is buffered
        data = reader.peek(1 << 16)
        return reader.read(len(data)) if data else b""
    except (OSError, ValueError):
        return b""
    finally:
        raw.settimeout(timeout)


class _StartFailed(Exception):
    """An exec start that failed after it may have reached the engine: raised as its error, never retried."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def remove_labelled(key: str, value: str, client: docker.DockerClient | None = None) -> int:
    """Remove every container labelled ``key=value`` (a run's, at its end); returns how many. An
    engine that does not answer within a few seconds is not waited for (EngineUnavailable)."""
    own = client is None
    client = client or docker.from_env(timeout=60)
    try:
        found = call_docker(lambda: client.api.containers(all=True, filters={"label": f"{key}={value}"}),
                            engine_wait_s=5)
        for c in found:
            call_docker(functools.partial(_remove, client, c["Id"]), engine_wait_s=5)
        return len(found)
    finally:
        if own:
            client.close()


def _remove(client: docker.DockerClient, name_or_id: str) -> None:
    """Remove a container; one already gone, or being removed by someone else, is fine."""
    try:
        client.api.remove_container(name_or_id, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as e:
        if e.status_code != 409 or "already in progress" not in str(e):
            raise


class DockerSandbox(Sandbox):
    """A running sandbox container. Create with :meth:`start`; use as a context manager or call
    :meth:`stop`."""

    def __init__(
        self,
        client: docker.DockerClient,
        workspace: Path,
        config: SandboxConfig,
        image: str,
        dev_data: dict[str, Path],
        log_dir: Path | None,
        labels: dict[str, str] | None = None,
        on_wait: Callable[[str], None] | None = None,
        gateway_dir: Path | None = None,
    ) -> None:
        self._client = client
        self.gateway_dir = gateway_dir
        self.labels = dict(labels or {})
        self.on_wait = on_wait
        self.workspace = workspace
        self.config = config
        self.image = image
        self.dev_data = dev_data
        self.log_dir = log_dir
        self.user, self._claims_workspace = _container_user(workspace, config.user)
        self.container_id = ""
        self.name = ""
        self._exec_count = 0
        self._oom_kills = 0

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workspace: Path,
        config: SandboxConfig | None = None,
        dev_data: dict[str, Path] | None = None,
        log_dir: Path | None = None,
        *,
        client: docker.DockerClient | None = None,
        labels: dict[str, str] | None = None,
        on_wait: Callable[[str], None] | None = None,
        gateway_dir: Path | None = None,
    ) -> DockerSandbox:
        """Start a sandbox on ``workspace`` (a host directory), ``dev_data`` mounted read-only at
        /data/<name>, full outputs of long commands kept in ``log_dir``. ``labels`` are added to the
        container's; ``on_wait`` is told while the Docker engine is waited for. ``gateway_dir``: a
        host folder holding the model gateway's Unix socket, mounted read-only at /run/staircase (a
        scaffold's way to its model; the network stays off)."""
        config = config or SandboxConfig()
        workspace = workspace.resolve()
        if not workspace.is_dir():
            raise SandboxError(f"workspace {workspace} is not a directory")
        for name, path in (dev_data or {}).items():
            if "/" in name or name in ("", ".", ".."):
                raise SandboxError(f"bad dev data name {name!r}")
            if not path.exists():
                raise SandboxError(f"dev data {name!r}: {path} does not exist")
        client = client or docker.from_env(timeout=int(config.docker_timeout_s))
        image = config.image
        if image is None:
            from harness.sandbox.image import ensure_image  # the build machinery is only needed here

            image = ensure_image(REPO_ROOT).tag
        sandbox = cls(client, workspace, config, image, dict(dev_data or {}), log_dir, labels, on_wait, gateway_dir)
        sandbox._create()
        return sandbox

    def _environment(self) -> dict[str, str]:
        home = "/home/agent" if self.user.split(":", 1)[0] in (str(AGENT_UID), "agent") else "/tmp"
        env = {
            "PATH": CONTAINER_PATH,
            "HOME": home,
            "USER": "agent",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "RUSTUP_HOME": "/usr/local/rustup",
            "CARGO_HOME": "/usr/local/cargo",
            "CARGO_TERM_COLOR": "never",
            "STAIRCASE_WORKSPACE": WORKSPACE,
            "STAIRCASE_DATA": DATA_ROOT,
        }
        env.update(self.config.env)
        return env

    def _create(self) -> None:
        cfg = self.config
        self.claim_workspace()
        mounts = [Mount(target=WORKSPACE, source=str(self.workspace), type="bind", read_only=False)]
        mounts += [
            Mount(target=f"{DATA_ROOT}/{name}", source=str(path.resolve()), type="bind", read_only=True)
            for name, path in sorted(self.dev_data.items())
        ]
        if self.gateway_dir is not None:
            mounts.append(Mount(target=GATEWAY_MOUNT, source=str(self.gateway_dir), type="bind", read_only=True))
        name = f"staircase-sandbox-{uuid.uuid4().hex[:10]}"

        def create() -> Any:
            self._remove_quietly(name)  # a retried create may find its own first attempt
            return self._client.containers.run(
                self.image,
                command=["sleep", "infinity"],
                name=name,
                detach=True,
                init=True,
                user=self.user,
                working_dir=WORKSPACE,
                environment=self._environment(),
                cpuset_cpus=cfg.cpuset,
                mem_limit=cfg.memory,
                memswap_limit=cfg.memory,
                pids_limit=cfg.pids_limit,
                mounts=mounts,
                tmpfs={"/tmp": f"rw,exec,nosuid,nodev,size={cfg.tmpfs_size},mode=1777"},
                hostname="sandbox",
                **hardened(labels={LABEL: "1", "staircase.workspace": str(self.workspace), **self.labels}),
            )

        container = self._call(create)
        self.container_id, self.name, self._oom_kills = container.id, name, 0

    def _remove_quietly(self, name_or_id: str) -> None:
        _remove(self._client, name_or_id)

    def stop(self) -> None:
        """Remove the container (the workspace stays on the host)."""
        if self.container_id:
            self._call(lambda: self._remove_quietly(self.container_id))

    def restart(self) -> None:
        """Recreate the container from the same workspace, config and dev data."""
        if self.container_id:
            try:
                self.stop()
            except SandboxError:
                pass
        self._create()

    def alive(self) -> bool:
        try:
            state = self._call(lambda: self._client.api.inspect_container(self.container_id))["State"]
        except docker.errors.NotFound:
            return False
        return bool(state.get("Running")) and not state.get("Restarting")

    def death_cause(self) -> DeathCause:
        """Why the container is not running: the OOM killer, an exit (stopped or killed), or gone."""
        try:
            state = self._call(lambda: self._client.api.inspect_container(self.container_id))["State"]
        except docker.errors.NotFound:
            return "gone"
        if state.get("Status") in ("removing", "dead"):
            return "gone"
        if state.get("OOMKilled"):
            return "oom"
        return "unknown" if state.get("Running") else "exited"

    def _died(self, what: str) -> SandboxDied:
        cause = self.death_cause()
        detail = {"oom": f"OOM-killed at its {self.config.memory} memory limit", "gone": "removed",
                  "exited": "stopped or killed"}.get(cause, "not running")
        return SandboxDied(f"sandbox {self.name} {what} ({detail})", cause)

    def _dying(self) -> bool:
        """After a command was SIGKILLed: was it the container going down? Its state may lag the
        kill by a moment, so look a few times (costs ~1 s only after such a kill)."""
        for _ in range(10):
            if not self.alive():
                return True
            time.sleep(0.1)
        return False

    def claim_workspace(self) -> None:
        """After the host wrote into the workspace: hand new files to the sandbox user (a no-op
        when the workspace belongs to a normal user)."""
        if self._claims_workspace:
            uid, gid = (int(x) for x in self.user.split(":"))
            claim_workspace(self.workspace, uid, gid)

    def __enter__(self) -> DockerSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- commands --------------------------------------------------------------------------

    def exec(self, command: str, timeout_s: float | None = None, workdir: str | None = None) -> ExecResult:
        """Run ``command`` under ``bash -lc`` in ``workdir`` (default /workspace)."""
        cfg = self.config
        timeout = float(timeout_s if timeout_s is not None else cfg.default_timeout_s)
        self._exec_count += 1
        exec_id = uuid.uuid4().hex
        log_path = self.log_dir / f"exec-{self._exec_count:05d}-{exec_id[:8]}.log" if self.log_dir else None
        out = StreamCapture(cfg.output_head_bytes, cfg.output_tail_bytes)
        err = StreamCapture(cfg.output_head_bytes, cfg.output_tail_bytes)
        full = FullOutputLog(log_path, cfg.full_output_cap_bytes, 2 * (cfg.output_head_bytes + cfg.output_tail_bytes))

        def sink(stream: int, data: bytes) -> None:
            (err if stream == 2 else out).feed(data)
            full.feed(data, out.truncated or err.truncated)

        argv = ["timeout", f"--kill-after={cfg.kill_grace_s:.3f}s", f"{timeout:.3f}s", "bash", "-lc", command]
        started = time.monotonic()
        try:
            exit_code, watchdog_fired = self._run(
                argv,
                sink,
                deadline=started + timeout + cfg.kill_grace_s + _WATCHDOG_SLACK_S,
                workdir=workdir,
                exec_id=exec_id,
            )
        finally:
            full_path = full.close()
        duration = time.monotonic() - started
        timed_out = watchdog_fired or (duration >= timeout and exit_code in (124, 137))
        if timed_out:
            self._kill_marked(exec_id)  # stragglers that left timeout's process group
        elif exit_code == 137 and self._oom_killed_since_last_look():
            err.feed(f"\n[staircase: a process of this command was killed by the out-of-memory killer: the "
                     f"sandbox's memory limit is {cfg.memory}]\n".encode())
        return ExecResult(
            exit_code=exit_code,
            stdout=out.text(),
            stderr=err.text(),
            duration_s=round(duration, 4),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            timed_out=timed_out,
            full_output_path=full_path,
        )

    def _run(
        self,
        argv: list[str],
        sink: Callable[[int, bytes], None],
        *,
        deadline: float,
        workdir: str | None = None,
        exec_id: str | None = None,
        stdin: bytes | None = None,
    ) -> tuple[int, bool]:
        """Exec ``argv``, stream its output to ``sink``; returns (exit code, watchdog fired)."""
        api = self._client.api
        env = {"STAIRCASE_EXEC_ID": exec_id} if exec_id else None
        exec_ids: list[str] = []

        def start() -> Any:
            created = api.exec_create(self.container_id, argv, stdout=True, stderr=True, stdin=stdin is not None,
                                      user=self.user, workdir=workdir or WORKSPACE, environment=env)
            exec_ids.append(created["Id"])
            try:
                return api.exec_start(created["Id"], socket=True)
            except Exception as e:
                if never_reached(e):
                    raise  # not started: waited for and made anew (a fresh exec) by _call
                # A start that may have reached the engine is not sent again (it could run the
                # command twice): raised outside this handler, so that _call sees no engine error in it.
                failed = _StartFailed(e)
            raise failed

        try:
            try:
                sock = self._call(start)
            except _StartFailed as failed:
                raise failed.error from None
        except docker.errors.APIError as e:
            if e.status_code in (404, 409):
                raise self._died(f"is not running: {e.explanation}") from e
            raise SandboxError(f"docker exec failed: {e}") from e
        raw: socket.socket = getattr(sock, "_sock", sock)
        watchdog_fired = False
        try:
            if stdin is not None:
                raw.sendall(stdin)
                raw.shutdown(socket.SHUT_WR)
            raw.settimeout(_POLL_S)
            buf, state = bytearray(), [1, 0]
            # The HTTP client may have read the first output frames together with the response
            # headers (under load they arrive in one read); they sit in its buffer, not the socket.
            buf += _already_buffered(sock, raw)
            _demux(buf, state, sink)
            give_up = deadline + _WATCHDOG_SLACK_S
            while True:
                try:
                    data = raw.recv(65536)
                except TimeoutError:
                    now = time.monotonic()
                    if now > deadline and exec_id and not watchdog_fired:
                        watchdog_fired = True
                        self._kill_marked(exec_id)
                    if now > give_up:
                        break
                    continue
                except OSError:
                    break
                if not data:
                    break
                buf += data
                _demux(buf, state, sink)
        finally:
            sock.close()
        return self._exit_code(exec_ids[-1]), watchdog_fired

    def _exit_code(self, exec_id: str) -> int:
        """The exec's exit code; raises SandboxDied when the container went down under it."""
        for _ in range(40):
            try:
                info = self._call(lambda: self._client.api.exec_inspect(exec_id))
            except docker.errors.NotFound as e:
                raise self._died("is gone") from e
            if not info.get("Running") and info.get("ExitCode") is not None:
                code = int(info["ExitCode"])
                if code in (126, 137, 255) and self._dying():
                    raise self._died("died during the command")
                return code
            time.sleep(0.05)
        if not self.alive():
            raise self._died("died during the command")
        return -1

    def _oom_killed_since_last_look(self) -> bool:
        """Whether the kernel's OOM killer struck in the container since this was last asked (the
        cgroup's ``oom_kill`` count, v2 or v1; the container itself survives a killed command)."""
        script = "cat /sys/fs/cgroup/memory.events 2>/dev/null || cat /sys/fs/cgroup/memory/memory.oom_control"
        code, out, _ = self._run_collect(["sh", "-c", script], 4096)
        count = next((int(line.split()[1]) for line in out.decode().splitlines() if line.startswith("oom_kill ")), 0)
        seen, self._oom_kills = self._oom_kills, count
        return code == 0 and count > seen

    def _kill_marked(self, exec_id: str) -> None:
        """SIGKILL every process whose environment carries this command's marker, until none is
        left. The sweep forks nothing (bash builtins only): a fork bomb may hold the container at
        its pids limit, where the sweep itself gets one process slot at best, and then only when
        a bomb process exits; so the exec is retried until a sweep runs and finds nobody left."""
        give_up = time.monotonic() + _SWEEP_LIMIT_S
        while True:
            try:
                if self._sweep_once(f"STAIRCASE_EXEC_ID={exec_id}"):
                    return
            except (SandboxError, docker.errors.APIError):
                if not self.alive():
                    return  # the container is gone, and everything in it
            if time.monotonic() > give_up:
                return  # best effort; the pids limit still holds the rest in
            time.sleep(0.2)

    def _sweep_once(self, marker: str) -> bool:
        """One run of the sweep; True when it ran and left no marked process."""
        api = self._client.api
        argv = ["bash", "--norc", "--noprofile", "-c", _SWEEP_SCRIPT, "sweep", marker]
        exec_id = self._call(lambda: api.exec_create(self.container_id, argv, user=self.user))["Id"]
        self._call(lambda: api.exec_start(exec_id))
        return self._call(lambda: api.exec_inspect(exec_id)).get("ExitCode") == 0

    # ---- files -----------------------------------------------------------------------------

    def _abspath(self, path: str) -> str:
        return path if path.startswith("/") else posixpath.normpath(posixpath.join(WORKSPACE, path))

    def _run_collect(self, argv: list[str], limit: int, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        out, err = bytearray(), bytearray()

        def sink(stream: int, data: bytes) -> None:
            target = err if stream == 2 else out
            if len(target) < limit:
                target += data[: limit - len(target)]

        deadline = time.monotonic() + self.config.docker_timeout_s
        code, _ = self._run(argv, sink, deadline=deadline, stdin=stdin)
        return code, bytes(out), bytes(err)

    def read_file(self, path: str) -> str:
        """The text of a file in the sandbox (as the sandbox user; invalid UTF-8 replaced)."""
        cap = self.config.file_cap_bytes
        script = 's=$(stat -L -c %s -- "$1") || exit 3; [ "$s" -le "$2" ] || { echo "$s" >&2; exit 4; }; cat -- "$1"'
        code, out, err = self._run_collect(["sh", "-c", script, "sh", self._abspath(path), str(cap)], cap + 1)
        if code == 4:
            raise FileTooLarge(f"{path}: {err.decode().strip()} bytes, over the {cap}-byte cap")
        if code != 0:
            raise SandboxError(f"cannot read {path}: {err.decode(errors='replace').strip()}")
        return out.decode("utf-8", errors="replace")

    def write_file(self, path: str, content: str) -> None:
        """Write ``content`` (UTF-8) to a file in the sandbox, creating parent directories."""
        data = content.encode()
        if len(data) > self.config.file_cap_bytes:
            raise FileTooLarge(f"{path}: {len(data)} bytes, over the {self.config.file_cap_bytes}-byte cap")
        script = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'
        code, _, err = self._run_collect(["sh", "-c", script, "sh", self._abspath(path)], 64 * 1024, stdin=data)
        if code != 0:
            raise SandboxError(f"cannot write {path}: {err.decode(errors='replace').strip()}")

    # ---- Docker calls ----------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """``fn()`` with bounded retries on engine 5xx (never on 4xx), waiting for an engine that is
        unreachable (up to ``config.engine_wait_s``, then :class:`~harness.docker_util.EngineUnavailable`)."""
        return call_docker(fn, retries=self.config.docker_retries, engine_wait_s=self.config.engine_wait_s,
                           on_wait=self.on_wait)
