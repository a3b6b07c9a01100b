"""The vendored crate set: one ``cargo vendor`` directory for the skeleton, the load generator and
``sandbox/vendor-set`` (the crates an agent may reach for), made on the host while it still has
crates.io, so that containers build offline.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from harness.sandbox.offline_base import cache_dir

Progress = Callable[[str], None]

# Dummy crates under sandbox/vendor-set whose manifests name the extra crates (several, because
# two crates linking the same native library cannot share one resolve).
VENDOR_SET_MANIFESTS = ("sandbox/vendor-set/Cargo.toml", "sandbox/vendor-set/alt/Cargo.toml")
# Crates of this repo whose dependencies are vendored too (path relative to the repo root).
PROJECT_CRATES = ("skeleton", "loadgen")
CRATE_LIST_HEADER = (
    "# Crates vendored at /opt/staircase/vendor: cargo builds offline against exactly these.\n"
    "# One line per crate: name, then its vendored versions.\n"
)


class VendorError(RuntimeError):
    """``cargo vendor`` failed (no cargo, no registry, bad manifest)."""


class VendoredCrate(BaseModel):
    name: str
    versions: list[str]
    direct: bool  # named by one of the manifests (not only pulled in by another crate)


def _manifests(repo_root: Path) -> list[Path]:
    paths = [repo_root / m for m in VENDOR_SET_MANIFESTS]
    paths += [repo_root / c / "Cargo.toml" for c in PROJECT_CRATES if (repo_root / c / "Cargo.toml").exists()]
    return paths


def vendor_key(repo_root: Path) -> str:
    """Hash of everything the vendored set depends on: manifests and their lock files."""
    h = hashlib.sha256()
    for manifest in _manifests(repo_root):
        for f in (manifest, manifest.with_name("Cargo.lock")):
            h.update(str(f.relative_to(repo_root)).encode() + b"\0")
            h.update(f.read_bytes() if f.exists() else b"<missing>")
    return h.hexdigest()[:12]


def direct_names(manifests: list[Path]) -> set[str]:
    """Crate names the manifests depend on directly (renamed dependencies by their real name)."""
    names: set[str] = set()
    for manifest in manifests:
        data = tomllib.loads(manifest.read_text())
        for section in ("dependencies", "dev-dependencies", "build-dependencies"):
            for key, spec in data.get(section, {}).items():
                is_path = isinstance(spec, dict) and "path" in spec
                if not is_path:
                    names.add(spec.get("package", key) if isinstance(spec, dict) else key)
    return names


def read_vendor_dir(vendor: Path, direct: set[str]) -> list[VendoredCrate]:
    versions: dict[str, list[str]] = {}
    for manifest in vendor.glob("*/Cargo.toml"):
        package = tomllib.loads(manifest.read_text())["package"]
        versions.setdefault(package["name"], []).append(package["version"])
    return [
        VendoredCrate(name=name, versions=sorted(vs, key=_version_key), direct=name in direct)
        for name, vs in sorted(versions.items())
    ]


def _version_key(version: str) -> tuple[int, ...]:
    core = version.split("-", 1)[0].split("+", 1)[0]
    return tuple(int(p) if p.isdigit() else 0 for p in core.split("."))


def format_crate_list(crates: list[VendoredCrate]) -> str:
    """The text of /opt/staircase/vendored-crates.txt."""
    return CRATE_LIST_HEADER + "".join(f"{c.name} {' '.join(c.versions)}\n" for c in crates)


def _prune_windows_import_libs(vendor: Path) -> None:
    """Empty the ``lib/`` folders of the Windows import-library crates (about 150 MB of .a/.lib
    files). Cargo checks a vendored crate's file checksums only when it compiles that crate,
    which never happens for these on Linux."""
    for pattern in ("windows_*", "winapi-*-pc-windows-gnu-*"):
        for crate in vendor.glob(pattern):
            lib = crate / "lib"
            if lib.is_dir():
                shutil.rmtree(lib)
                lib.mkdir()


def ensure_vendor(repo_root: Path, progress: Progress) -> tuple[Path, list[VendoredCrate]]:
    """The cached vendor directory for the current manifests, running ``cargo vendor`` if needed."""
    manifests = _manifests(repo_root)
    out = cache_dir() / "vendor" / vendor_key(repo_root)
    done_marker = out.with_name(out.name + ".complete")
    direct = direct_names(manifests)
    if done_marker.exists():
        return out, read_vendor_dir(out, direct)
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo/bin/cargo")
    progress(f"vendoring crates with cargo vendor ({len(manifests)} manifests)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        # Copies of the project crates, so that cargo writes no Cargo.lock into their folders.
        stage = Path(tmp) / "stage"
        syncs = []
        for manifest in manifests[1:]:
            rel = manifest.parent.relative_to(repo_root)
            copy = stage / rel
            shutil.copytree(manifest.parent, copy, ignore=shutil.ignore_patterns("target"))
            syncs += ["--sync", str(copy / "Cargo.toml")]
        partial = Path(tmp) / "vendor"
        cmd = [cargo, "vendor", "--versioned-dirs", "--manifest-path", str(manifests[0]), *syncs, str(partial)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise VendorError(f"cargo vendor failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        _prune_windows_import_libs(partial)
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
        done_marker.touch()
    crates = read_vendor_dir(out, direct)
    progress(f"vendored {len(crates)} crates")
    return out, crates
