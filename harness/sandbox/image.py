"""Build the sandbox image from ``sandbox/Dockerfile``, tagged by a content hash of its inputs.

Inputs: the files of ``sandbox/``, ``skeleton/`` and ``loadgen/`` (sources and lock files, no
``target/``), the base image (the offline base's tag, itself a hash of the Debian package list and
the host toolchain; or the pulled ``rust`` image's name), and :data:`RECIPE_VERSION`. The same
inputs give the same tag ``staircase-sandbox:<hash12>``, so a second build is a lookup.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import docker
import docker.errors
from pydantic import BaseModel

from harness.console import log
from harness.sandbox.offline_base import base_tag as offline_base_tag
from harness.sandbox.offline_base import cache_dir, ensure_offline_base, host_toolchain, read_packages
from harness.sandbox.vendor import VendoredCrate, ensure_vendor, format_crate_list

BaseMode = Literal["offline", "pull"]
Progress = Callable[[str], None]

IMAGE_REPO = "staircase-sandbox"
PULL_BASE = "rust:1.95-slim-bookworm"
# Bump when this module changes the image in a way its input files do not show.
RECIPE_VERSION = "2"
CONTEXT_DIRS = ("sandbox", "skeleton", "loadgen")
# One JSON label (the classic builder turns every label into a step of several seconds):
# {"inputs_hash", "base", "base_image", "vendored_crates": [[name, [versions], direct], ...]}.
LABEL = "staircase.sandbox-image"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the classic builder colours a step's stderr
BUILD_TIMEOUT_S = 3600  # HTTP timeout of the build and import calls (a cold build takes minutes)


_STEP = re.compile(r"^Step (\d+/\d+) : (.*)")
QUIET_S = 20.0  # without a progress callback, a long step is reported at most this often


class BuildReporter:
    """Progress of an image build for a person waiting on it (a fresh machine builds for minutes):
    every message says the elapsed time, the stage (offline base, vendoring, docker build) and the
    Dockerfile step. With ``verbose`` every line is passed on; otherwise the stage changes, the
    steps, and at most one line per :data:`QUIET_S` seconds of a long step."""

    def __init__(self, sink: Progress, verbose: bool, stages: int) -> None:
        self.sink, self.verbose, self.stages = sink, verbose, stages
        self.started = self.last = time.monotonic()
        self.n, self.name, self.step = 0, "", ""

    def _prefix(self) -> str:
        m, sec = divmod(int(time.monotonic() - self.started), 60)
        where = f"stage {self.n}/{self.stages} {self.name}" + (f", step {self.step}" if self.step else "")
        return f"[image build {m:d}:{sec:02d} · {where}]"

    def stage(self, name: str) -> None:
        self.n, self.name, self.step = self.n + 1, name, ""
        self.last = time.monotonic()
        self.sink(f"{self._prefix()} started")

    def __call__(self, line: str) -> None:
        m = _STEP.match(line)
        if m:
            self.step = m.group(1)
        now = time.monotonic()
        if self.verbose or m or now - self.last >= QUIET_S:
            self.last = now
            self.sink(f"{self._prefix()} {m.group(2) if m else line}"[:300])


class ImageBuildError(RuntimeError):
    """The image could not be built; the message carries the tail of the build log."""


class ImageBuild(BaseModel):
    """One built (or found) sandbox image."""

    tag: str
    image_id: str
    seconds: float
    cached: bool  # True: the tag existed, nothing was built
    base: BaseMode
    base_image: str
    size_bytes: int
    vendored_crates: list[VendoredCrate]


def docker_client(timeout_s: float = 60) -> docker.DockerClient:
    """A client for the local engine (DOCKER_HOST etc. respected)."""
    return docker.from_env(timeout=int(timeout_s))


def _context_files(repo_root: Path) -> Iterator[Path]:
    """Files that go into the build context, in a stable order (no target/, caches, dotfiles)."""
    for top in CONTEXT_DIRS:
        root = repo_root / top
        if not root.is_dir():
            raise ImageBuildError(f"{root} is missing: the image needs {', '.join(CONTEXT_DIRS)}")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in ("target", "__pycache__") and not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    yield Path(dirpath) / name


def _base_image(repo_root: Path, base: BaseMode) -> str:
    if base == "pull":
        return PULL_BASE
    return offline_base_tag(read_packages(repo_root / "sandbox/packages.txt"), host_toolchain())


def inputs_hash(repo_root: Path, base: BaseMode, base_image: str) -> str:
    h = hashlib.sha256(f"{RECIPE_VERSION}\0{base}\0{base_image}\0".encode())
    for f in _context_files(repo_root):
        h.update(f"{f.relative_to(repo_root)}\0{os.access(f, os.X_OK)}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:12]


def image_tag(repo_root: Path, base: BaseMode = "offline") -> str:
    """The tag the current inputs build to (whether or not it exists)."""
    return f"{IMAGE_REPO}:{inputs_hash(repo_root, base, _base_image(repo_root, base))}"


def _found(image: docker.models.images.Image, tag: str, seconds: float, cached: bool) -> ImageBuild:
    meta = json.loads((image.labels or {}).get(LABEL, "{}"))
    return ImageBuild(
        tag=tag,
        image_id=image.id,
        seconds=round(seconds, 2),
        cached=cached,
        base=meta.get("base", "offline"),
        base_image=meta.get("base_image", ""),
        size_bytes=int(image.attrs.get("Size", 0)),
        vendored_crates=[VendoredCrate(name=n, versions=v, direct=d) for n, v, d in meta.get("vendored_crates", [])],
    )


def _assemble_context(repo_root: Path, vendor: Path, crate_list: str, into: Path) -> None:
    """Hard links where possible (same filesystem), copies otherwise."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for f in _context_files(repo_root):
        dst = into / f.relative_to(repo_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(str(f), str(dst))
    shutil.copytree(vendor, into / "vendor", copy_function=link_or_copy)
    (into / "vendored-crates.txt").write_text(crate_list)


def build_image(
    repo_root: Path,
    *,
    base: BaseMode = "offline",
    force: bool = False,
    progress: Progress | None = None,
) -> ImageBuild:
    """Build the sandbox image, or return the existing one when its inputs are unchanged.

    ``force`` rebuilds everything but the cached Debian rootfs tarball: the offline base is
    imported again and the sandbox layers are built without Docker's layer cache (delete
    ``~/.cache/staircase`` to redo mmdebstrap and ``cargo vendor`` too).
    """
    started = time.monotonic()
    repo_root = repo_root.resolve()
    client = docker_client(BUILD_TIMEOUT_S)
    tag = image_tag(repo_root, base)
    if not force:
        try:
            return _found(client.images.get(tag), tag, time.monotonic() - started, cached=True)
        except docker.errors.ImageNotFound:
            pass

    # Nothing was found: a build of minutes. Say so, with the stage, step and elapsed time, even to a
    # caller that passed no progress callback (the demo would otherwise be silent for 8-13 minutes).
    say = BuildReporter(progress or log, verbose=progress is not None, stages=3)
    say(f"the sandbox image {tag} is not built yet: building it (minutes on a fresh machine)")
    say.stage("offline Debian base (mmdebstrap + host toolchain)" if base == "offline" else f"base {PULL_BASE}")
    if base == "offline":
        base_image = ensure_offline_base(client, repo_root / "sandbox/packages.txt", say, force=force)
    else:
        base_image = PULL_BASE
    say.stage("vendoring crates")
    vendor, crates = ensure_vendor(repo_root, say)
    meta = {
        "inputs_hash": tag.split(":", 1)[1],
        "base": base,
        "base_image": base_image,
        "vendored_crates": [[c.name, c.versions, c.direct] for c in crates],
    }
    labels = {LABEL: json.dumps(meta, separators=(",", ":"))}
    say.stage("docker build")
    say(f"building {tag} on {base_image}")
    with tempfile.TemporaryDirectory(prefix="context-", dir=cache_dir()) as tmp:
        _assemble_context(repo_root, vendor, format_crate_list(crates), Path(tmp))
        log_tail: list[str] = []
        try:
            for chunk in client.api.build(
                path=tmp,
                dockerfile="sandbox/Dockerfile",
                tag=tag,
                buildargs={"BASE": base_image},
                labels=labels,
                rm=True,
                forcerm=True,
                nocache=force,
                pull=False,
                # The offline build must not need a network; saying so proves it.
                network_mode="none" if base == "offline" else None,
                decode=True,
            ):
                if "error" in chunk:
                    raise ImageBuildError(f"{chunk['error'].strip()}\n--- build log tail ---\n" + "\n".join(log_tail))
                for line in _ANSI.sub("", chunk.get("stream", "")).splitlines():
                    if line.strip():
                        log_tail = (log_tail + [line])[-60:]
                        say(line)
        except docker.errors.APIError as e:
            raise ImageBuildError(f"docker build failed: {e}") from e
    image = client.images.get(tag)
    image.tag(IMAGE_REPO, "latest")
    return _found(image, tag, time.monotonic() - started, cached=False)


def ensure_image(repo_root: Path, *, base: BaseMode = "offline", progress: Progress | None = None) -> ImageBuild:
    """The image for the current inputs: found by its tag, or built."""
    return build_image(repo_root, base=base, force=False, progress=progress)


def find_image(repo_root: Path, base: BaseMode = "offline") -> ImageBuild | None:
    """The built image for the current inputs, or None."""
    tag = image_tag(repo_root.resolve(), base)
    try:
        return _found(docker_client().images.get(tag), tag, 0.0, cached=True)
    except docker.errors.ImageNotFound:
        return None


def image_vendored_crates(image: str) -> list[VendoredCrate]:
    """The vendored crate list recorded in an image built here (empty for a foreign image)."""
    return _found(docker_client().images.get(image), image, 0.0, cached=True).vendored_crates
