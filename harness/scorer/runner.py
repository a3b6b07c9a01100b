"""Where a submission is built and served: the ``Runner`` protocol and the local process runner.

The scorer speaks to a runner only through this protocol, so the same benchmark runs as local
processes (quick, for development; no isolation) or in containers (``docker_runner``: the default,
isolated and resource-limited).
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.config import ScorerConfig
from harness.paths import REPO_ROOT
from harness.scorer.record import Hardware
from harness.scorer.submission import package_name


@dataclass
class BuildOutcome:
    ok: bool
    timed_out: bool
    seconds: float
    log_tail: str
    binary: Path | None = None


@dataclass
class LoadgenRun:
    exit_code: int | None
    timed_out: bool
    output: str


class MeasurementVoid(Exception):
    """The runner's own machinery failed while the submission ran, then recovered (the Docker
    engine went away and came back): whatever was measured cannot be trusted. The scorer scores
    again; it is never the submission's result."""


class Server(Protocol):
    def alive(self) -> bool: ...

    def exit_reason(self) -> str | None:
        """Why the server is gone ("oom", "exit code 101", "signal 6"), or None while it runs."""
        ...

    def log_tail(self, limit: int) -> str: ...

    def stop(self) -> None: ...


class Background(Protocol):
    """A load generator started in the background by a ``Driver``."""

    def alive(self) -> bool: ...

    def stop(self) -> None:
        """Kill it (when it has not exited already)."""
        ...


class Driver(Protocol):
    """A load generator that stays ready next to one server, for many short passes (paired rounds):
    starting one per pass would cost more than the pass."""

    def run(self, args: list[str], timeout_s: float) -> LoadgenRun:
        """Run the load generator with ``args``; ``{io}`` stands for the driver's folder (writable),
        ``{addr}`` for the server's address."""
        ...

    def spawn(self, args: list[str], timeout_s: float, stderr: str) -> Background:
        """Start the load generator with ``args`` in the background, in the folder ``{io}``, its
        standard error to the file ``{io}/<stderr>``; killed after ``timeout_s`` at the latest."""
        ...


class Runner(Protocol):
    name: str

    def hardware(self) -> Hardware: ...

    def build(self, src: Path, timeout_s: float) -> BuildOutcome: ...

    def start(self, build: BuildOutcome) -> Server: ...

    def wait_accepting(self, server: Server, timeout_s: float) -> bool: ...

    def loadgen(self, server: Server, args: list[str], inputs: dict[str, Path], out_dir: Path,
                timeout_s: float) -> LoadgenRun:
        """Run the load generator against ``server``. In ``args``, ``{in}`` stands for the folder
        holding ``inputs`` (read-only) and ``{out}`` for ``out_dir`` (writable), as the runner sees them."""
        ...

    def driver(self, server: Server, io: Path) -> AbstractContextManager[Driver]:
        """A ``Driver`` for ``server`` whose ``{io}`` is the folder ``io``, released on exit."""
        ...

    def close(self) -> None:
        """Release the runner: its engine connection, and any container it still has."""
        ...


def make_runner(cfg: ScorerConfig, *, build_cache: str | None = None, labels: dict[str, str] | None = None,
                log: Callable[[str], None] | None = None, on_wait: Callable[[str], None] | None = None) -> Runner:
    """The runner ``cfg`` asks for: containers (default) or local processes. ``build_cache`` names
    a shared build cache (a run's); None builds every submission from a fresh one. ``labels`` are
    added to every container and ``on_wait`` is told while the Docker engine is waited for (the
    local runner has neither)."""
    if cfg.runner == "local":
        return LocalRunner(cfg.server_cpus, cfg.loadgen_cpus, cfg.memory_limit)
    from harness.scorer.docker_runner import DockerRunner

    return DockerRunner(cfg, log=log, build_cache=build_cache, labels=labels, on_wait=on_wait)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cargo_target_cache() -> Path:
    """A build cache shared by local builds (``$STAIRCASE_CARGO_TARGET`` to move it)."""
    env = os.environ.get("STAIRCASE_CARGO_TARGET")
    return Path(env) if env else Path.home() / ".cache" / "staircase" / "cargo-target"


def parse_memory(limit: str) -> int:
    """Docker-style memory sizes ("512m", "8g") in bytes."""
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    s = limit.strip().lower()
    if s and s[-1] in units:
        return int(float(s[:-1]) * units[s[-1]])
    return int(s)


class _TailBuffer:
    """Keeps only the last bytes of a stream, however much is written: a flooding server costs
    bounded memory and no disk."""

    def __init__(self, limit: int = 1 << 16) -> None:
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.total = 0
        self.limit = limit
        self.lock = threading.Lock()

    def drain(self, stream) -> None:  # type: ignore[no-untyped-def]
        for chunk in iter(lambda: stream.read1(1 << 16), b""):
            with self.lock:
                self.chunks.append(chunk)
                self.size += len(chunk)
                self.total += len(chunk)
                while self.size - len(self.chunks[0]) >= self.limit:
                    self.size -= len(self.chunks.popleft())

    def tail(self, limit: int) -> str:
        with self.lock:
            data = b"".join(self.chunks)[-limit:]
        prefix = f"[... {self.total - len(data)} earlier bytes of output cut ...]\n" if self.total > len(data) else ""
        return prefix + data.decode("utf-8", "replace")


class LocalServer:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port
        self.output = _TailBuffer()
        assert proc.stdout is not None
        threading.Thread(target=self.output.drain, args=(proc.stdout,), daemon=True).start()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_reason(self) -> str | None:
        rc = self.proc.poll()
        if rc is None:
            return None
        return f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"

    def log_tail(self, limit: int) -> str:
        return self.output.tail(limit)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)


class LocalRunner:
    """Builds with the host's cargo and runs processes pinned with ``taskset``. No isolation:
    for development and for tests of well-behaved submissions only."""

    name = "local"

    def __init__(self, server_cpus: str = "0", loadgen_cpus: str = "1", memory_limit: str = "8g") -> None:
        self.server_cpus = server_cpus
        self.loadgen_cpus = loadgen_cpus
        self.memory_limit = memory_limit
        self._loadgen: Path | None = None

    def hardware(self) -> Hardware:
        return Hardware(cpu_model=cpu_model(), host_cpus=os.cpu_count() or 1, server_cpus=self.server_cpus,
                        loadgen_cpus=self.loadgen_cpus, memory_limit=self.memory_limit, runner=self.name)

    def build(self, src: Path, timeout_s: float) -> BuildOutcome:
        target = cargo_target_cache() / "submissions"
        t0 = time.monotonic()
        res = _run(["cargo", "build", "--release", "--quiet"], cwd=src, timeout_s=timeout_s,
                   env={"CARGO_TARGET_DIR": str(target)})
        seconds = time.monotonic() - t0
        binary = target / "release" / package_name(src)
        ok = res.returncode == 0 and binary.is_file()
        if ok:
            # Copy: the next build into the shared target dir must not change the binary under test.
            kept = src.parent / "server-bin"
            shutil.copy2(binary, kept)
            binary = kept
        return BuildOutcome(ok=ok, timed_out=res.returncode is None, seconds=seconds,
                            log_tail=res.output[-8000:], binary=binary if ok else None)

    def start(self, build: BuildOutcome) -> LocalServer:
        assert build.binary is not None
        self._loadgen_binary()  # built before the timed phases, not during them
        port = _free_port()
        mem = parse_memory(self.memory_limit)

        def limits() -> None:
            os.setsid()
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            _die_with_parent()

        proc = subprocess.Popen(
            _taskset(self.server_cpus) + [str(build.binary)],
            env={"PORT": str(port), "PATH": "/usr/bin:/bin", "RUST_BACKTRACE": "1"},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=limits,
        )
        return LocalServer(proc, port)

    def wait_accepting(self, server: Server, timeout_s: float) -> bool:
        assert isinstance(server, LocalServer)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not server.alive():
                return False
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def loadgen(self, server: Server, args: list[str], inputs: dict[str, Path], out_dir: Path,
                timeout_s: float) -> LoadgenRun:
        assert isinstance(server, LocalServer)
        in_dir = out_dir / "in"
        in_dir.mkdir(parents=True, exist_ok=True)
        for name, path in inputs.items():
            link = in_dir / name
            link.unlink(missing_ok=True)
            link.symlink_to(path.resolve())
        argv = [a.replace("{in}", str(in_dir)).replace("{out}", str(out_dir)) for a in args]
        argv = [a.replace("{addr}", f"127.0.0.1:{server.port}") for a in argv]
        res = _run(_taskset(self.loadgen_cpus) + [str(self._loadgen_binary()), *argv], cwd=out_dir,
                   timeout_s=timeout_s)
        return LoadgenRun(exit_code=res.returncode, timed_out=res.returncode is None, output=res.output[-8000:])

    @contextmanager
    def driver(self, server: Server, io: Path) -> Iterator[Driver]:
        assert isinstance(server, LocalServer)
        yield _LocalDriver(self, server, io)

    def close(self) -> None:
        pass

    def _loadgen_binary(self) -> Path:
        if self._loadgen is None:
            self._loadgen = build_loadgen_locally()
        return self._loadgen


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL it when the process that started it dies (Linux), so that a
    killed scorer leaves no server running (the anchor and the incumbent live across scorings)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class _LocalDriver:
    runner: LocalRunner
    server: LocalServer
    io: Path

    def run(self, args: list[str], timeout_s: float) -> LoadgenRun:
        argv = [a.replace("{io}", str(self.io)).replace("{addr}", f"127.0.0.1:{self.server.port}") for a in args]
        res = _run(_taskset(self.runner.loadgen_cpus) + [str(self.runner._loadgen_binary()), *argv], cwd=self.io,
                   timeout_s=timeout_s)
        return LoadgenRun(exit_code=res.returncode, timed_out=res.returncode is None, output=res.output[-8000:])

    def spawn(self, args: list[str], timeout_s: float, stderr: str) -> Background:
        argv = [a.replace("{io}", str(self.io)).replace("{addr}", f"127.0.0.1:{self.server.port}") for a in args]
        with open(self.io / stderr, "wb") as err:
            proc = subprocess.Popen(
                ["timeout", "-s", "KILL", str(math.ceil(timeout_s))] + _taskset(self.runner.loadgen_cpus)
                + [str(self.runner._loadgen_binary()), *argv],
                cwd=self.io, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                preexec_fn=_new_session_dying_with_parent)
        return _LocalBackground(proc)


@dataclass
class _LocalBackground:
    proc: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _new_session_dying_with_parent() -> None:
    os.setsid()
    _die_with_parent()


def build_loadgen_locally() -> Path:
    """Build the load generator with the host's cargo (once; cargo skips it when up to date)."""
    target = cargo_target_cache() / "loadgen"
    res = _run(["cargo", "build", "--release", "--quiet"], cwd=REPO_ROOT / "loadgen", timeout_s=900,
               env={"CARGO_TARGET_DIR": str(target)})
    if res.returncode != 0:
        raise RuntimeError(f"building the load generator failed:\n{res.output[-4000:]}")
    return target / "release" / "loadgen"


@dataclass
class _Result:
    returncode: int | None  # None: killed at the timeout
    output: str


def _run(argv: list[str], *, cwd: Path, timeout_s: float, env: dict[str, str] | None = None) -> _Result:
    """Run a command in its own process group; on timeout the whole group is killed."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    buf = _TailBuffer(1 << 20)
    assert proc.stdout is not None
    reader = threading.Thread(target=buf.drain, args=(proc.stdout,), daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout_s)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = None
    reader.join(timeout=5)
    return _Result(rc, buf.tail(1 << 20))


def _taskset(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus] if shutil.which("taskset") else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
