"""The offline base image: a Debian root filesystem made from Debian packages plus the host's Rust
toolchain, imported into Docker without any registry.

Layout follows the official ``rust`` image (RUSTUP_HOME=/usr/local/rustup,
CARGO_HOME=/usr/local/cargo, proxies in /usr/local/cargo/bin), so that ``sandbox/Dockerfile``
builds the same way on top of this base or of ``rust:*-slim-bookworm``.

Two caches: the root filesystem tarball under ``~/.cache/staircase/`` (keyed by the package
list: mmdebstrap runs once), and the imported image ``staircase-base:<hash12>`` (keyed by the
rootfs and the toolchain version).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

Progress = Callable[[str], None]

BASE_REPO = "staircase-base"
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Docs, man pages and translations are dead weight in a sandbox (about 100 MB); licences stay.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
# Bump when the rootfs or base recipe below changes in a way the inputs do not show.
RECIPE_VERSION = "1"
RUSTUP_HOME = "/usr/local/rustup"
CARGO_HOME = "/usr/local/cargo"
IMAGE_PATH = f"{CARGO_HOME}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BaseBuildError(RuntimeError):
    """The offline base could not be made (no mmdebstrap/debootstrap, no toolchain, ...)."""


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = root / "staircase"
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_packages(packages_file: Path) -> list[str]:
    """Package names from sandbox/packages.txt (comments skipped, the optional "?" mark dropped)."""
    names = []
    for line in packages_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.rstrip("?"))
    return names


@dataclass(frozen=True)
class Toolchain:
    """The host's active Rust toolchain."""

    name: str  # as rustup names it in the image: "<release>-<host triple>"
    sysroot: Path
    version: str  # full `rustc -vV`
    rustup: Path | None  # the rustup binary, when the host has one (proxies in the image)


def host_toolchain() -> Toolchain:
    rustc = shutil.which("rustc") or str(Path.home() / ".cargo/bin/rustc")
    try:
        version = subprocess.run([rustc, "-vV"], capture_output=True, text=True, check=True).stdout
        sysroot = subprocess.run(
            [rustc, "--print", "sysroot"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        raise BaseBuildError(f"no usable Rust toolchain on the host ({e}); install one with rustup") from e
    fields = dict(line.split(": ", 1) for line in version.splitlines() if ": " in line)
    rustup = shutil.which("rustup") or str(Path.home() / ".cargo/bin/rustup")
    return Toolchain(
        name=f"{fields['release']}-{fields['host']}",
        sysroot=Path(sysroot).resolve(),
        version=version,
        rustup=Path(rustup).resolve() if Path(rustup).exists() else None,
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def rootfs_key(packages: list[str]) -> str:
    return _digest(RECIPE_VERSION, SUITE, *MIRRORS, *DPKG_EXCLUDES, *sorted(packages))[:12]


def base_tag(packages: list[str], toolchain: Toolchain) -> str:
    return f"{BASE_REPO}:{_digest(rootfs_key(packages), toolchain.version, toolchain.name)[:12]}"


def _ensure_bootstrapper(progress: Progress) -> str:
    """mmdebstrap, installed with apt-get when we are root and it is missing; else debootstrap."""
    for tool in ("mmdebstrap", "debootstrap"):
        if shutil.which(tool):
            return tool
    if os.geteuid() != 0:
        raise BaseBuildError(
            "building the offline base needs mmdebstrap (or debootstrap): "
            "run `sudo apt-get install mmdebstrap`, or use --base pull on a machine that can pull images"
        )
    progress("installing mmdebstrap with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "mmdebstrap"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise BaseBuildError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return "mmdebstrap"


def ensure_rootfs(packages: list[str], progress: Progress) -> Path:
    """The cached Debian root filesystem tarball, made with mmdebstrap (or debootstrap) once."""
    target = cache_dir() / f"rootfs-{SUITE}-{rootfs_key(packages)}.tar"
    if target.exists():
        return target
    tool = _ensure_bootstrapper(progress)
    partial = target.with_suffix(".partial")
    progress(f"making a Debian {SUITE} root filesystem with {tool} ({len(packages)} packages)")
    if tool == "mmdebstrap":
        cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}", "--format=tar"]
        cmd += [f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES]
        cmd += [SUITE, str(partial), *MIRRORS]
        _run_logged(cmd, progress)
    else:
        if os.geteuid() != 0:
            raise BaseBuildError("debootstrap needs root; install mmdebstrap instead")
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            root = Path(tmp) / "root"
            mirror = MIRRORS[0].split()[1]
            _run_logged(
                ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(root), mirror],
                progress,
            )
            _run_logged(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], progress)
    partial.rename(target)
    return target


def _run_logged(cmd: list[str], progress: Progress) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-40:]
        if line.startswith(("I:", "E:", "W:")):
            progress(line)
    if proc.wait() != 0:
        raise BaseBuildError(f"{cmd[0]} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _add_toolchain(tar: tarfile.TarFile, toolchain: Toolchain) -> None:
    """The toolchain in the rustup layout (without share/doc), proxies or plain links on PATH."""

    def skip_docs(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        rel = info.name.split("/toolchains/", 1)[-1].split("/", 1)[-1]
        return None if rel == "share/doc" or rel.startswith("share/doc/") else _root_owned(info)

    tc_dir = f"usr/local/rustup/toolchains/{toolchain.name}"
    tar.add(toolchain.sysroot, arcname=tc_dir, filter=skip_docs)

    def entry(name: str, mode: int, kind: bytes = tarfile.DIRTYPE, link: str = "", data: bytes = b"") -> None:
        info = _root_owned(tarfile.TarInfo(name))
        info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
        tar.addfile(info, _BytesReader(data) if data else None)

    # CARGO_HOME itself is world-writable (sticky), like in the official image: cargo keeps its
    # package-cache lock there. The toolchain stays read-only for the agent.
    entry("usr/local/cargo", 0o1777)
    entry("usr/local/cargo/bin", 0o755)
    tools = sorted(p.name for p in (toolchain.sysroot / "bin").iterdir())
    if toolchain.rustup is not None:
        tar.add(toolchain.rustup, arcname="usr/local/cargo/bin/rustup", filter=_root_owned)
        settings = f'version = "12"\ndefault_toolchain = "{toolchain.name}"\nprofile = "minimal"\n'
        entry("usr/local/rustup/settings.toml", 0o644, tarfile.REGTYPE, data=settings.encode())
        for tool in tools:  # rustup proxies: the binary dispatches on argv[0]
            entry(f"usr/local/cargo/bin/{tool}", 0o777, tarfile.SYMTYPE, link="rustup")
    else:
        for tool in tools:
            entry(f"usr/local/cargo/bin/{tool}", 0o777, tarfile.SYMTYPE, link=f"/{tc_dir}/bin/{tool}")


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk, self._pos = self._data[self._pos : end], min(end, len(self._data))
        return chunk


def ensure_offline_base(
    client: docker.DockerClient, packages_file: Path, progress: Progress, force: bool = False
) -> str:
    """Tag of the offline base image, importing it (and making its rootfs) when missing."""
    packages = read_packages(packages_file)
    toolchain = host_toolchain()
    tag = base_tag(packages, toolchain)
    if not force:
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
    rootfs = ensure_rootfs(packages, progress)
    progress(f"adding the host toolchain {toolchain.name} and importing {tag}")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        combined = Path(tmp) / "base.tar"
        shutil.copyfile(rootfs, combined)
        with tarfile.open(combined, "a") as tar:
            _add_toolchain(tar, toolchain)
        repo, version = tag.split(":")
        client.api.import_image_from_file(
            str(combined),
            repository=repo,
            tag=version,
            changes=[
                f"ENV RUSTUP_HOME={RUSTUP_HOME}",
                f"ENV CARGO_HOME={CARGO_HOME}",
                f"ENV PATH={IMAGE_PATH}",
                'CMD ["bash"]',
            ],
        )
    client.images.get(tag)  # raises if the import silently failed
    return tag
