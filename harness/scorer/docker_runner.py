"""The container runner: build, serve and load-test a submission in containers of the sandbox image.

- build: a container with no network compiles the submission offline against the vendored crates;
- serve: the binary runs in its own container with no network at all (loopback only), pinned to
  the server's CPUs, with memory, pids and log-size limits, a read-only root and nothing of the
  dataset but what it is sent;
- load: the load generator runs in a second container that joins the server's network namespace
  (``network_mode=container:<id>``), pinned to its own CPUs; the hidden queries exist only there,
  the ground truth only in the harness.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from harness.config import ScorerConfig
from harness.scorer.record import Hardware
from harness.scorer.runner import BuildOutcome, LoadgenRun, Server, cpu_model
from harness.scorer.submission import REPO_ROOT, package_name

PORT = 8080
LOG_OPTS = {"type": "json-file", "config": {"max-size": "2m", "max-file": "1"}}
HARDENING: dict[str, Any] = {
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "network_mode": "none",
    "log_config": LOG_OPTS,
    "labels": {"staircase": "scorer"},
}


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


class DockerServer:
    def __init__(self, container: Any) -> None:
        self.container = container

    def _state(self) -> dict[str, Any]:
        try:
            self.container.reload()
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
            raw = self.container.logs(stdout=True, stderr=True, tail=400)
        except docker.errors.APIError:
            return ""
        return raw[-limit:].decode("utf-8", "replace")

    def stop(self) -> None:
        try:
            self.container.remove(force=True)
        except docker.errors.APIError:
            pass


class DockerRunner:
    """Runs the benchmark's build, server and load generator in containers."""

    name = "docker"

    def __init__(self, cfg: ScorerConfig, *, image: str | None = None, log: Any = None,
                 build_cache: str | None = None) -> None:
        self.cfg = cfg
        # None: every build gets a fresh target dir seeded from the image's pre-built dependencies,
        # so nothing a build writes (a build script can write anything there) reaches another
        # build. A name: builds share a cache under that name (a run's own submissions, which can
        # only poison themselves).
        self.build_cache = build_cache
        self.client = docker.from_env(timeout=120)
        self.log = log or (lambda _m: None)
        tag = image or cfg.image
        if tag is None:
            from harness.sandbox.image import ensure_image

            tag = ensure_image(REPO_ROOT, progress=self.log).tag
        self.image = self.client.images.get(tag)
        self._work: list[Path] = []

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
        script = BUILD_SCRIPT
        t0 = time.monotonic()
        c = self.client.containers.run(
            self.image.id, ["bash", "-c", script], detach=True, user=_user(),
            environment={"CARGO_HOME": "/tmp/cargo-home", "CARGO_TARGET_DIR": "/target", "HOME": "/tmp",
                         "PATH": "/usr/local/cargo/bin:/usr/local/bin:/usr/bin:/bin",
                         "RUSTUP_HOME": "/usr/local/rustup", "CARGO_TERM_COLOR": "never"},
            volumes={str(build_dir): {"bind": "/build", "mode": "rw"}, str(target): {"bind": "/target", "mode": "rw"}},
            tmpfs={"/tmp": "size=512m,exec"}, cpuset_cpus=_union(self.cfg.server_cpus, self.cfg.loadgen_cpus),
            mem_limit="4g", memswap_limit="4g", pids_limit=512, **HARDENING,
        )
        timed_out, code = self._wait(c, timeout_s)
        seconds = time.monotonic() - t0
        logs = _logs(c)
        _remove(c)
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
        c = self.client.containers.run(
            self.image.id, ["/srv/server"], detach=True, user=_user(),
            environment={"PORT": str(PORT), "RUST_BACKTRACE": "1", "HOME": "/tmp", "PATH": "/usr/bin:/bin"},
            volumes={str(build.binary): {"bind": "/srv/server", "mode": "ro"}},
            tmpfs={"/tmp": "size=64m"}, read_only=True, init=True,
            cpuset_cpus=self.cfg.server_cpus, mem_limit=self.cfg.memory_limit, memswap_limit=self.cfg.memory_limit,
            pids_limit=self.cfg.pids_limit, **HARDENING,
        )
        return DockerServer(c)

    def wait_accepting(self, server: Server, timeout_s: float) -> bool:
        assert isinstance(server, DockerServer)
        probe = (f"end=$((SECONDS+{int(timeout_s) + 1})); while [ $SECONDS -lt $end ]; do "
                 f"(exec 3<>/dev/tcp/127.0.0.1/{PORT}) 2>/dev/null && exit 0; sleep 0.05; done; exit 1")
        if not server.alive():
            return False
        code, _ = self._netns_run(server, ["bash", "-c", probe], {}, None, timeout_s + 10,
                                  cpus=self.cfg.loadgen_cpus)
        return code == 0 and server.alive()

    # -- load ------------------------------------------------------------------------------------

    def loadgen(self, server: Server, args: list[str], inputs: dict[str, Path], out_dir: Path,
                timeout_s: float) -> LoadgenRun:
        assert isinstance(server, DockerServer)
        argv = ["loadgen"] + [a.replace("{in}", "/in").replace("{out}", "/out")
                              .replace("{addr}", f"127.0.0.1:{PORT}") for a in args]
        code, output = self._netns_run(server, argv, inputs, out_dir, timeout_s, cpus=self.cfg.loadgen_cpus)
        return LoadgenRun(exit_code=code, timed_out=code is None, output=output[-8000:])

    def _netns_run(self, server: DockerServer, argv: list[str], inputs: dict[str, Path], out_dir: Path | None,
                   timeout_s: float, *, cpus: str) -> tuple[int | None, str]:
        volumes = {str(p.resolve()): {"bind": f"/in/{name}", "mode": "ro"} for name, p in inputs.items()}
        if out_dir is not None:
            volumes[str(out_dir)] = {"bind": "/out", "mode": "rw"}
        hardening = {**HARDENING, "network_mode": f"container:{server.container.id}"}
        c = self.client.containers.run(
            self.image.id, argv, detach=True, user=_user(),
            environment={"HOME": "/tmp", "PATH": "/usr/local/bin:/usr/bin:/bin"},
            volumes=volumes, tmpfs={"/tmp": "size=64m"}, read_only=True, cpuset_cpus=cpus,
            mem_limit="2g", memswap_limit="2g", pids_limit=256, **hardening,
        )
        timed_out, code = self._wait(c, timeout_s)
        output = _logs(c)
        _remove(c)
        return (None if timed_out else code), output

    # -- plumbing --------------------------------------------------------------------------------

    def _wait(self, c: Any, timeout_s: float) -> tuple[bool, int | None]:
        try:
            res = c.wait(timeout=timeout_s)
            return False, int(res.get("StatusCode", -1))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            try:
                c.kill()
            except docker.errors.APIError:
                pass
            return True, None

    def close(self) -> None:
        self.client.close()


def _union(a: str, b: str) -> str:
    return ",".join(dict.fromkeys(a.split(",") + b.split(",")))


def _logs(c: Any) -> str:
    try:
        return c.logs(stdout=True, stderr=True, tail=2000).decode("utf-8", "replace")
    except docker.errors.APIError:
        return ""


def _remove(c: Any) -> None:
    try:
        c.remove(force=True)
    except docker.errors.APIError:
        pass


