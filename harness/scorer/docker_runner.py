"""The container runner: build, serve and load-test a submission in containers of the sandbox image.

- build: a container with no network compiles the submission offline against the vendored crates;
- serve: the binary runs in its own container with no network at all (loopback only), pinned to
  the server's CPUs, with memory, pids and log-size limits, a read-only root and nothing of the
  dataset but what it is sent;
- load: the load generator runs in a second container that joins the server's network namespace
  (``network_mode=container:<id>``), pinned to its own CPUs; the hidden queries exist only there,
  the ground truth only in the harness.

Every Docker call goes through ``harness.docker_util.call_docker``: an engine that cannot be reached
is waited for up to ``scorer.engine_wait_s``, then the scoring raises ``EngineUnavailable`` (never a
score: the engine's failure is not the submission's). An engine that went away while the scoring's
containers ran and came back voids the scoring (``EngineInterrupted``): its containers may have
died with it, and the scorer scores again. Every container is labelled ``staircase.scorer=1``
(plus the caller's labels, e.g. a run's id, so that the run's end can remove what an interrupted
process left) and is removed whatever ends its phase, an interrupt included.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors

from harness.config import ScorerConfig
from harness.docker_util import EngineUnavailable, call_docker, hardened, is_read_timeout
from harness.paths import REPO_ROOT
from harness.scorer.record import Hardware
from harness.scorer.runner import BuildOutcome, Driver, LoadgenRun, MeasurementVoid, Server, cpu_model
from harness.scorer.submission import package_name

T = TypeVar("T")
PORT = 8080
# Every scorer container carries this label (value "1"): `docker ps --filter label=staircase.scorer`.
SCORER_LABEL = "staircase.scorer"
# Removing a container waits at most this long for an unreachable engine: a removal runs while
# a scoring ends (perhaps interrupted), and a run removes what is left by label at its end.
CLEANUP_ENGINE_WAIT_S = 30.0


# Compile offline against the vendored crates. A Cargo.lock that pins versions we do not vendor is
# resolved again against the vendored set (said in the log), so published submissions still build.
BUILD_SCRIPT = r"""
set -u
mkdir -p /tmp/cargo-home && cp /usr/local/cargo/config.toml /tmp/cargo-home/ 2>/dev/null
[ -d /target/release ] || staircase-seed-target --release-only /target 2>/dev/null || true
cd /build/src
# A lock file written elsewhere may pin versions we do not vendor: move just those entries.
if [ -f Cargo.lock ] && command -v staircase-relock >/dev/null; then staircase-relock . 2>&1 | tail -n 20; fi
cargo build --release --offline > /tmp/build.log 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -qE "failed to select a version|no matching package|lock file" /tmp/build.log; then
  echo "[staircase] Cargo.lock still does not resolve: resolving it afresh against the vendored set"
  rm -f Cargo.lock
  cargo build --release --offline > /tmp/build.log 2>&1
  rc=$?
fi
tail -c 200000 /tmp/build.log
exit $rc
"""


def _user() -> str:
    """Containers run as the host user (never root inside when the host user is not root)."""
    return f"{os.getuid()}:{os.getgid()}"


def target_cache_dir() -> Path:
    """Where named build caches live (``$STAIRCASE_CARGO_TARGET`` to move them)."""
    env = os.environ.get("STAIRCASE_CARGO_TARGET")
    base = Path(env) if env else Path.home() / ".cache" / "staircase" / "cargo-target"
    return base / "docker-submissions"


def run_build_cache(run_dir: Path) -> str:
    """The build cache name of one run: its submissions share dependencies, no other run's do."""
    resolved = Path(run_dir).resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return f"run-{re.sub(r'[^A-Za-z0-9_.-]', '_', resolved.name)[:40]}-{digest}"


class EngineInterrupted(EngineUnavailable, MeasurementVoid):
    """The Docker engine was unreachable while a scoring's containers ran, and came back: they may
    have died with it, so the measurement is void. The scorer scores again; should it escape (void
    again and again), it is an ``EngineUnavailable`` to the caller."""


class DockerServer:
    def __init__(self, runner: DockerRunner, container: Any) -> None:
        self.runner = runner
        self.container = container

    def _state(self) -> dict[str, Any]:
        try:
            self.runner.call(self.container.reload)
            return dict(self.container.attrs.get("State", {}))
        except docker.errors.NotFound:
            return {"Status": "removed"}

    def alive(self) -> bool:
        return self._state().get("Status") == "running"

    def exit_reason(self) -> str | None:
        st = self._state()
        if st.get("Status") == "running":
            return None
        if st.get("OOMKilled"):
            return "oom"
        code = st.get("ExitCode")
        if code is not None and code > 128:
            return f"killed by signal {code - 128}" + (" (out of memory)" if code == 137 else "")
        return f"exit code {code}"

    def log_tail(self, limit: int) -> str:
        try:
            raw = self.runner.call(lambda: self.container.logs(stdout=True, stderr=True, tail=400))
        except docker.errors.APIError:
            return ""
        return bytes(raw)[-limit:].decode("utf-8", "replace")

    def stop(self) -> None:
        self.runner.remove(self.container)


class DockerRunner:
    """Runs the benchmark's build, server and load generator in containers."""

    name = "docker"

    def __init__(self, cfg: ScorerConfig, *, image: str | None = None, log: Callable[[str], None] | None = None,
                 build_cache: str | None = None, labels: dict[str, str] | None = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        """``labels`` are added to every container (``staircase.scorer=1`` always is); ``on_wait``
        is told, besides ``log``, each time the Docker engine is waited for."""
        self.cfg = cfg
        # None: every build gets a fresh target dir seeded from the image's pre-built dependencies,
        # so nothing a build writes (a build script can write anything there) reaches another
        # build. A name: builds share a cache under that name (a run's own submissions, which can
        # only poison themselves).
        self.build_cache = build_cache
        self.log = log or (lambda _m: None)
        self.on_wait = on_wait
        self.labels = {SCORER_LABEL: "1", **(labels or {})}
        self._live: dict[str, Any] = {}  # containers created and not yet removed, by id
        self._outages = 0  # how often a call found the engine unreachable
        self.client = self.call(lambda: docker.from_env(timeout=120))
        tag = image or cfg.image
        if tag is None:
            from harness.sandbox.image import ensure_image

            tag = ensure_image(REPO_ROOT, progress=self.log).tag
        self.image = self.call(lambda: self.client.images.get(tag))

    def hardware(self) -> Hardware:
        return Hardware(cpu_model=cpu_model(), host_cpus=os.cpu_count() or 1, server_cpus=self.cfg.server_cpus,
                        loadgen_cpus=self.cfg.loadgen_cpus, memory_limit=self.cfg.memory_limit, runner=self.name,
                        image_id=self.image.id)

    # -- build -----------------------------------------------------------------------------------

    def build(self, src: Path, timeout_s: float) -> BuildOutcome:
        # The crate is compiled in a copy, so the submission's own tree stays read-only. The target
        # dir is seeded from the image's pre-built dependencies when empty (see ``build_cache``).
        name = package_name(src)
        build_dir = src.parent / "build"
        shutil.copytree(src, build_dir / "src", dirs_exist_ok=True)
        if self.build_cache is None:
            target = build_dir / "target"
        else:
            target = target_cache_dir() / self.build_cache / name
        target.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with self._container(
            "build", ["bash", "-c", BUILD_SCRIPT], user=_user(),
            environment={"CARGO_HOME": "/tmp/cargo-home", "CARGO_TARGET_DIR": "/target", "HOME": "/tmp",
                         "PATH": "/usr/local/cargo/bin:/usr/local/bin:/usr/bin:/bin",
                         "RUSTUP_HOME": "/usr/local/rustup", "CARGO_TERM_COLOR": "never"},
            volumes={str(build_dir): {"bind": "/build", "mode": "rw"}, str(target): {"bind": "/target", "mode": "rw"}},
            tmpfs={"/tmp": "size=512m,exec"}, cpuset_cpus=_union(self.cfg.server_cpus, self.cfg.loadgen_cpus),
            mem_limit="4g", memswap_limit="4g", pids_limit=512,
        ) as c:
            timed_out, code = self._wait(c, timeout_s)
            seconds = time.monotonic() - t0
            logs = self._logs(c)
        binary = target / "release" / name
        ok = not timed_out and code == 0 and binary.is_file()
        if ok:
            kept = src.parent / "server-bin"
            shutil.copy2(binary, kept)
            os.chmod(kept, 0o755)
            binary = kept
        return BuildOutcome(ok=ok, timed_out=timed_out, seconds=seconds, log_tail=logs[-8000:],
                            binary=binary if ok else None)

    # -- serve -----------------------------------------------------------------------------------

    def start(self, build: BuildOutcome) -> DockerServer:
        assert build.binary is not None
        c = self._create(
            "server", ["/srv/server"], user=_user(),
            environment={"PORT": str(PORT), "RUST_BACKTRACE": "1", "HOME": "/tmp", "PATH": "/usr/bin:/bin"},
            volumes={str(build.binary): {"bind": "/srv/server", "mode": "ro"}},
            tmpfs={"/tmp": "size=64m"}, read_only=True, init=True,
            cpuset_cpus=self.cfg.server_cpus, mem_limit=self.cfg.memory_limit, memswap_limit=self.cfg.memory_limit,
            pids_limit=self.cfg.pids_limit,
        )
        try:
            self.call(c.start)
        except BaseException:
            self.remove(c)
            raise
        return DockerServer(self, c)

    def wait_accepting(self, server: Server, timeout_s: float) -> bool:
        assert isinstance(server, DockerServer)
        probe = (f"end=$((SECONDS+{int(timeout_s) + 1})); while [ $SECONDS -lt $end ]; do "
                 f"(exec 3<>/dev/tcp/127.0.0.1/{PORT}) 2>/dev/null && exit 0; sleep 0.05; done; exit 1")
        if not server.alive():
            return False
        code, _ = self._netns_run("probe", server, ["bash", "-c", probe], {}, None, timeout_s + 10,
                                  cpus=self.cfg.loadgen_cpus)
        return code == 0 and server.alive()

    # -- load ------------------------------------------------------------------------------------

    def loadgen(self, server: Server, args: list[str], inputs: dict[str, Path], out_dir: Path,
                timeout_s: float) -> LoadgenRun:
        assert isinstance(server, DockerServer)
        argv = ["loadgen"] + [a.replace("{in}", "/in").replace("{out}", "/out")
                              .replace("{addr}", f"127.0.0.1:{PORT}") for a in args]
        code, output = self._netns_run("loadgen", server, argv, inputs, out_dir, timeout_s,
                                       cpus=self.cfg.loadgen_cpus)
        return LoadgenRun(exit_code=code, timed_out=code is None, output=output[-8000:])

    @contextmanager
    def driver(self, server: Server, io: Path) -> Iterator[Driver]:
        """A container idling in the server's network namespace, on the load generator's CPUs,
        with ``io`` mounted: each pass is an ``exec`` of the load generator in it."""
        assert isinstance(server, DockerServer)
        with self._container(
            "driver", ["sleep", "infinity"], user=_user(),
            environment={"HOME": "/tmp", "PATH": "/usr/local/bin:/usr/bin:/bin"},
            volumes={str(io.resolve()): {"bind": "/io", "mode": "rw"}}, tmpfs={"/tmp": "size=64m"}, read_only=True,
            cpuset_cpus=self.cfg.loadgen_cpus, mem_limit="2g", memswap_limit="2g", pids_limit=256,
            network_mode=f"container:{server.container.id}", init=True,
        ) as c:
            yield _DockerDriver(self, c)

    def _netns_run(self, role: str, server: DockerServer, argv: list[str], inputs: dict[str, Path],
                   out_dir: Path | None, timeout_s: float, *, cpus: str) -> tuple[int | None, str]:
        volumes = {str(p.resolve()): {"bind": f"/in/{name}", "mode": "ro"} for name, p in inputs.items()}
        if out_dir is not None:
            volumes[str(out_dir)] = {"bind": "/out", "mode": "rw"}
        with self._container(
            role, argv, user=_user(), environment={"HOME": "/tmp", "PATH": "/usr/local/bin:/usr/bin:/bin"},
            volumes=volumes, tmpfs={"/tmp": "size=64m"}, read_only=True, cpuset_cpus=cpus,
            mem_limit="2g", memswap_limit="2g", pids_limit=256, network_mode=f"container:{server.container.id}",
        ) as c:
            timed_out, code = self._wait(c, timeout_s)
            output = self._logs(c)
        return (None if timed_out else code), output

    # -- plumbing --------------------------------------------------------------------------------

    def call(self, fn: Callable[[], T], *, engine_wait_s: float | None = None, void_on_outage: bool = True) -> T:
        """``fn()`` under ``call_docker``'s policy. When the engine was unreachable during the call
        while containers of ours existed, they may have died with it: ``EngineInterrupted`` (unless
        ``void_on_outage`` is False, for removals)."""
        outages, busy = self._outages, bool(self._live)
        result = call_docker(fn, engine_wait_s=self.cfg.engine_wait_s if engine_wait_s is None else engine_wait_s,
                             on_wait=self._engine_waiting)
        if void_on_outage and busy and self._outages != outages:
            raise EngineInterrupted("the Docker engine was unreachable while the scoring's containers ran; "
                                    "they may have died with it, so this measurement is void")
        return result

    def _engine_waiting(self, message: str) -> None:
        self._outages += 1
        self.log(message)
        if self.on_wait is not None:
            self.on_wait(message)

    def _create(self, role: str, command: list[str], **kw: Any) -> Any:
        """Create (not start) a hardened, labelled container, remembered until it is removed."""
        name = f"staircase-scorer-{role}-{uuid.uuid4().hex[:12]}"
        kwargs = hardened(labels=self.labels, **kw)

        def create() -> Any:
            try:
                return self.client.containers.create(self.image.id, command, name=name, **kwargs)
            except docker.errors.APIError as e:
                if e.status_code == 409:  # an earlier attempt created it, then failed to answer
                    return self.client.containers.get(name)
                raise

        try:
            c = self.call(create)
        except BaseException:
            self._remove_named(name)  # interrupted or failed after the engine created it, perhaps
            raise
        self._live[c.id] = c
        return c

    @contextmanager
    def _container(self, role: str, command: list[str], **kw: Any) -> Iterator[Any]:
        """A started container for one phase; removed when the phase ends, however it ends."""
        c = self._create(role, command, **kw)
        try:
            self.call(c.start)
            yield c
        finally:
            self.remove(c)

    def _wait(self, c: Any, timeout_s: float) -> tuple[bool, int | None]:
        """Wait for ``c`` to exit, at most ``timeout_s`` (an engine outage does not extend it):
        (timed out, exit code). A container still running at the limit is killed."""
        deadline = time.monotonic() + timeout_s

        def wait() -> dict[str, Any] | None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                return dict(c.wait(timeout=left))
            except Exception as e:
                if is_read_timeout(e):
                    return None
                raise

        res = self.call(wait)
        if res is None:
            try:
                self.call(c.kill)
            except docker.errors.APIError:
                pass  # it exited meanwhile
            return True, None
        return False, int(res.get("StatusCode", -1))

    def _logs(self, c: Any) -> str:
        try:
            raw = self.call(lambda: c.logs(stdout=True, stderr=True, tail=2000))
        except docker.errors.APIError:
            return ""
        return bytes(raw).decode("utf-8", "replace")

    def remove(self, c: Any) -> None:
        """Remove ``c`` (force); a failure is logged, and ``close`` tries again."""
        try:
            self.call(lambda: c.remove(force=True), engine_wait_s=min(self.cfg.engine_wait_s, CLEANUP_ENGINE_WAIT_S),
                      void_on_outage=False)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, EngineUnavailable) as e:
            self.log(f"could not remove the scorer container {c.name}: {e}")
            return
        self._live.pop(c.id, None)

    def _remove_named(self, name: str) -> None:
        try:
            self.call(lambda: self.client.api.remove_container(name, force=True),
                      engine_wait_s=min(self.cfg.engine_wait_s, CLEANUP_ENGINE_WAIT_S), void_on_outage=False)
        except docker.errors.NotFound:
            pass  # never created
        except Exception as e:  # cleanup never hides what ended the phase; the run's end removes it by label
            self.log(f"could not remove the scorer container {name}: {e}")

    def close(self) -> None:
        """Remove any container still here and close the engine connection."""
        for c in list(self._live.values()):
            self.remove(c)
        self.client.close()


class _DockerDriver:
    def __init__(self, runner: DockerRunner, container: Any) -> None:
        self.runner = runner
        self.container = container

    def run(self, args: list[str], timeout_s: float) -> LoadgenRun:
        argv = ["timeout", "-s", "KILL", str(math.ceil(timeout_s)), "loadgen"] + [
            a.replace("{io}", "/io").replace("{addr}", f"127.0.0.1:{PORT}") for a in args]
        code, out = self.runner.call(lambda: self.container.exec_run(argv, user=_user()))
        output = bytes(out or b"").decode("utf-8", "replace")
        return LoadgenRun(exit_code=None if code == 137 else code, timed_out=code == 137, output=output[-8000:])

    def spawn(self, args: list[str], timeout_s: float, stderr: str) -> _DockerBackground:
        """An ``exec`` started detached; it goes with the driver's container at the latest."""
        argv = ["sh", "-c", f'exec timeout -s KILL {math.ceil(timeout_s)} loadgen "$@" 2>"/io/{stderr}"', "loadgen"]
        argv += [a.replace("{io}", "/io").replace("{addr}", f"127.0.0.1:{PORT}") for a in args]
        api = self.runner.client.api
        exec_id = self.runner.call(lambda: api.exec_create(self.container.id, argv, user=_user(), workdir="/io"))["Id"]
        self.runner.call(lambda: api.exec_start(exec_id, detach=True))
        return _DockerBackground(self.runner, exec_id)


class _DockerBackground:
    def __init__(self, runner: DockerRunner, exec_id: str) -> None:
        self.runner = runner
        self.exec_id = exec_id

    def alive(self) -> bool:
        return bool(self.runner.call(lambda: self.runner.client.api.exec_inspect(self.exec_id)).get("Running"))

    def stop(self) -> None:
        """Nothing to do: it exits when its control socket is closed, and it cannot outlive the
        driver's container (removed with the driver) nor its own time limit."""


def _union(a: str, b: str) -> str:
    """Both CPU lists as one (Docker and the kernel accept overlapping entries)."""
    return ",".join(dict.fromkeys((a, b)))
