"""A build script can write anything into the cargo target dir. Submissions scored apart (no
named build cache) must never see each other's writes; a run's named cache is shared by design."""

import shutil
from pathlib import Path

import pytest

from harness.scorer.docker_runner import DockerRunner, run_build_cache
from tests.scorer.conftest import quick_scorer_config
from tests.scorer.submissions import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Writes a marker at the root of the target dir (OUT_DIR is <target>/release/build/<pkg>/out).
POISON = r"""
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target = out.ancestors().nth(4).unwrap().to_path_buf();
    std::fs::write(target.join("poisoned-by-a-build-script"), b"x").unwrap();
}
"""
# Fails the build when the marker is there.
VICTIM = r"""
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target = out.ancestors().nth(4).unwrap().to_path_buf();
    if target.join("poisoned-by-a-build-script").exists() {
        panic!("this target dir was written by another submission's build");
    }
}
"""


def crate(dest: Path, build_rs: str) -> Path:
    """The skeleton as it is (its release profile matches the image's pre-built dependencies) with
    a build script and a trivial database."""
    shutil.copytree(REPO / "skeleton", dest, ignore=shutil.ignore_patterns("target", "API.md"))
    for f in (REPO / "reference" / "stage01-brute-force" / "src").iterdir():
        shutil.copy(f, dest / "src" / f.name)
    (dest / "build.rs").write_text(build_rs)
    return dest


def build(runner: DockerRunner, root: Path, build_rs: str) -> tuple[bool, str]:
    # The runner compiles a copy of the crate in <root>/build: each build gets its own root.
    out = runner.build(crate(root / "crate", build_rs), timeout_s=300)
    return out.ok, out.log_tail


def test_fresh_builds_do_not_see_each_other(sandbox_image, tmp_path):
    runner = DockerRunner(quick_scorer_config(image=sandbox_image))
    ok, log = build(runner, tmp_path / "a", POISON)
    assert ok, log[-2000:]
    ok, log = build(runner, tmp_path / "b", VICTIM)
    assert ok, log[-2000:]


def test_a_named_cache_is_shared_and_scoped(sandbox_image, tmp_path, monkeypatch):
    monkeypatch.setenv("STAIRCASE_CARGO_TARGET", str(tmp_path / "cache"))
    cfg = quick_scorer_config(image=sandbox_image)
    name = run_build_cache(tmp_path / "runs" / "one")
    assert name != run_build_cache(tmp_path / "runs" / "two")
    ok, log = build(DockerRunner(cfg, build_cache=name), tmp_path / "a", POISON)
    assert ok, log[-2000:]
    # The same run's cache carries the write: which is why runs never share one (another run's
    # cache is another directory, by the names above), and scorings outside a run share none.
    ok, log = build(DockerRunner(cfg, build_cache=name), tmp_path / "b", VICTIM)
    assert not ok and "written by another submission" in log
    assert (tmp_path / "cache" / "docker-submissions" / name / "vector-db-skeleton").is_dir()
