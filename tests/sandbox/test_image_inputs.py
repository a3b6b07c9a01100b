"""The image's inputs: the content hash, the vendored crate list, the package list (no Docker)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.sandbox import image
from harness.sandbox.offline_base import Toolchain, base_tag, read_packages
from harness.sandbox.vendor import VendoredCrate, direct_names, format_crate_list, read_vendor_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    for top in image.CONTEXT_DIRS:
        shutil.copytree(ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("target"))
    return tmp_path


def test_inputs_hash_is_stable_and_sees_every_context_dir(repo_copy: Path) -> None:
    first = image.inputs_hash(repo_copy, "offline", "staircase-base:x")
    assert image.inputs_hash(repo_copy, "offline", "staircase-base:x") == first
    assert image.inputs_hash(repo_copy, "pull", image.PULL_BASE) != first
    assert image.inputs_hash(repo_copy, "offline", "staircase-base:y") != first
    for top in image.CONTEXT_DIRS:
        (repo_copy / top / "new-file.txt").write_text("x")
        changed = image.inputs_hash(repo_copy, "offline", "staircase-base:x")
        assert changed != first, top
        first = changed


def test_build_outputs_do_not_change_the_hash(repo_copy: Path) -> None:
    before = image.inputs_hash(repo_copy, "offline", "b")
    (repo_copy / "loadgen" / "target" / "release").mkdir(parents=True)
    (repo_copy / "loadgen" / "target" / "release" / "loadgen").write_text("binary")
    assert image.inputs_hash(repo_copy, "offline", "b") == before


def test_base_tag_ignores_loadgen_but_follows_packages_and_toolchain() -> None:
    tc = Toolchain(name="1.95.0-x86_64-unknown-linux-gnu", sysroot=Path("/x"), version="rustc 1.95.0", rustup=None)
    packages = read_packages(ROOT / "sandbox/packages.txt")
    tag = base_tag(packages, tc)
    assert tag.startswith("staircase-base:")
    assert base_tag(packages + ["jq"], tc) != tag
    assert base_tag(packages, Toolchain(**{**tc.__dict__, "version": "rustc 1.96.0"})) != tag


def test_package_list_has_the_toolbox() -> None:
    packages = read_packages(ROOT / "sandbox/packages.txt")
    for name in ("gcc", "libc6-dev", "ca-certificates", "procps", "valgrind", "git", "linux-perf"):
        assert name in packages


def test_vendor_set_names_the_leaderboard_crates() -> None:
    names = direct_names([ROOT / "sandbox/vendor-set/Cargo.toml", ROOT / "sandbox/vendor-set/alt/Cargo.toml"])
    leaderboard = {
        "rayon",
        "parking_lot",
        "rand",
        "ordered-float",
        "tower",
        "tower-http",
        "hyper",
        "fastrand",
        "arc-swap",
        "jemallocator",
        "tikv-jemallocator",
        "mimalloc",
    }
    assert leaderboard <= names
    assert "rand09" not in names  # renamed dependencies count under their real name
    assert not {"faiss", "annoy", "hnsw_rs", "usearch"} & names


def test_crate_list_from_a_vendor_dir(tmp_path: Path) -> None:
    for name, version in (("rand", "0.8.5"), ("rand", "0.9.2"), ("libc", "0.2.170")):
        crate = tmp_path / f"{name}-{version}"
        crate.mkdir()
        (crate / "Cargo.toml").write_text(f'[package]\nname = "{name}"\nversion = "{version}"\n')
    crates = read_vendor_dir(tmp_path, direct={"rand"})
    assert crates == [
        VendoredCrate(name="libc", versions=["0.2.170"], direct=False),
        VendoredCrate(name="rand", versions=["0.8.5", "0.9.2"], direct=True),
    ]
    assert format_crate_list(crates).splitlines()[-1] == "rand 0.8.5 0.9.2"
