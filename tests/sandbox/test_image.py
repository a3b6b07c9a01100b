"""The built image: tools inside, vendored crates, offline cargo builds (real engine)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.sandbox import DockerSandbox, SandboxConfig
from harness.sandbox.image import CONTEXT_DIRS, ensure_image, image_tag, image_vendored_crates

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox(sandbox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerSandbox]:
    workspace = tmp_path_factory.mktemp("workspace")
    with DockerSandbox.start(workspace, SandboxConfig(image=sandbox_image)) as sb:
        yield sb


def test_second_ensure_is_a_quick_lookup(sandbox_image: str, tmp_path: Path) -> None:
    # A snapshot of the inputs: other work may edit skeleton/ or loadgen/ while the tests run.
    for top in CONTEXT_DIRS:
        shutil.copytree(ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("target"))
    if image_tag(tmp_path) != sandbox_image:
        pytest.skip("the inputs changed since the session's image was built")
    started = time.monotonic()
    build = ensure_image(tmp_path)
    assert build.cached and build.tag == sandbox_image
    assert time.monotonic() - started < 10


def test_loadgen_and_devbench_run_inside(sandbox: DockerSandbox) -> None:
    for tool in ("loadgen", "devbench"):
        r = sandbox.exec(f"{tool} --help")
        assert r.exit_code == 0, r.stderr
        assert "Usage" in r.stdout


def test_profilers_are_installed(sandbox: DockerSandbox) -> None:
    assert sandbox.exec("valgrind --version").stdout.startswith("valgrind-3")
    assert sandbox.exec("command -v perf").exit_code == 0


def test_vendored_crate_list_in_image_matches_the_build(sandbox: DockerSandbox, sandbox_image: str) -> None:
    crates = image_vendored_crates(sandbox_image)
    if not crates:
        pytest.skip("a foreign image (no vendored-crates label)")
    lines = [
        ln for ln in sandbox.read_file("/opt/staircase/vendored-crates.txt").splitlines() if not ln.startswith("#")
    ]
    assert lines == [f"{c.name} {' '.join(c.versions)}" for c in crates]
    direct = {c.name: c.versions for c in crates if c.direct}
    for name in ("rayon", "parking_lot", "ordered-float", "tower-http", "fastrand", "arc-swap", "half", "memmap2"):
        assert name in direct
    assert {v.split(".")[1] for v in direct["rand"]} >= {"8", "9"}


def test_cargo_cannot_reach_crates_io(sandbox: DockerSandbox) -> None:
    sandbox.exec(
        "rm -rf /tmp/p && cargo new --quiet /tmp/p && cd /tmp/p && echo 'surely-not-vendored-xyz = \"1\"' >> Cargo.toml"
    )
    r = sandbox.exec("cd /tmp/p && cargo build", timeout_s=60)
    assert r.exit_code != 0 and "surely-not-vendored-xyz" in r.stderr


def test_relock_moves_unvendored_versions_to_vendored_ones(sandbox: DockerSandbox) -> None:
    sandbox.exec("rm -rf /tmp/q && cp -r /opt/staircase/src/skeleton /tmp/q")
    lock = sandbox.read_file("/tmp/q/Cargo.lock")
    version = lock.split('name = "itoa"\nversion = "', 1)[1].split('"', 1)[0]
    sandbox.write_file(
        "/tmp/q/Cargo.lock", lock.replace(f'name = "itoa"\nversion = "{version}"', 'name = "itoa"\nversion = "1.0.999"')
    )
    assert sandbox.exec("cd /tmp/q && cargo metadata --offline --format-version 1 > /dev/null").exit_code != 0
    r = sandbox.exec(
        "staircase-relock /tmp/q"
        " && cargo metadata --offline --format-version 1 --manifest-path /tmp/q/Cargo.toml > /dev/null"
    )
    assert r.exit_code == 0, r.stderr
    assert "itoa@1.0.999" in r.stderr
    assert f'name = "itoa"\nversion = "{version}"' in sandbox.read_file("/tmp/q/Cargo.lock")


def _copy_skeleton(sandbox: DockerSandbox, dest: str) -> None:
    """The skeleton's sources (no target/) into the workspace folder ``dest``."""
    for path in (ROOT / "skeleton").rglob("*"):
        rel = path.relative_to(ROOT / "skeleton")
        if path.is_file() and rel.parts[0] != "target":
            sandbox.write_file(f"{dest}/{rel}", path.read_text())


@pytest.mark.slow
def test_skeleton_builds_offline_compiling_only_itself(sandbox: DockerSandbox) -> None:
    _copy_skeleton(sandbox, "skel")
    r = sandbox.exec("cd skel && staircase-seed-target && cargo build --release --offline", timeout_s=600)
    assert r.exit_code == 0, r.stderr[-3000:]
    compiled = [ln for ln in r.stderr.splitlines() if ln.strip().startswith("Compiling")]
    assert len(compiled) == 1 and "vector-db-skeleton" in compiled[0], compiled
    assert sandbox.exec("test -x skel/target/release/vector-db-skeleton").exit_code == 0


@pytest.mark.slow
def test_devbench_quick_builds_without_lto_compiling_only_itself(sandbox: DockerSandbox) -> None:
    # `staircase-seed-target` seeds target/quick too; the quick build then compiles only the crate.
    _copy_skeleton(sandbox, "quick")
    r = sandbox.exec("cd quick && staircase-seed-target && devbench --quick --workspace . --data /nonexistent --json",
                     timeout_s=600)
    report = json.loads(r.stdout)
    assert report["build_profile"].startswith("quick") and report["build_s"] > 0, report
    compiled = [ln for ln in r.stderr.splitlines() if ln.strip().startswith("Compiling")]
    assert len(compiled) == 1 and "vector-db-skeleton" in compiled[0], compiled
    assert sandbox.exec("test -x quick/target/quick/release/vector-db-skeleton").exit_code == 0
    assert sandbox.exec("test -e quick/target/release/vector-db-skeleton").exit_code != 0  # the LTO build untouched
    assert "dev_queries.fvecs" in report["error"]  # it went on to read the data after building
