"""The scaffold image: ``FROM`` the sandbox image, plus mini-swe-agent (from PyPI), optionally Claude
Code (from npm), the gateway's in-sandbox forwarder, ``staircase-agent-run`` and ``submit``
(``files/``). Tagged ``staircase-scaffold:<hash12>`` of those files, the base image's id and the
versions, so a second build is a lookup. The sandbox image itself (``sandbox/``) is not touched.

Packages are fetched on the host, where the registries' certificates are trusted, and installed in
the build without an index: ``pip download`` into ``~/.cache/staircase/scaffold-wheels/<version>``,
``npm pack`` into ``~/.cache/staircase/scaffold-npm/<version>``. Debian's ``python3-venv`` (and
``nodejs`` for Claude Code) are apt-installed by the build, so it needs the Debian mirror.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
from pydantic import BaseModel

from harness.sandbox.image import ImageBuildError, docker_client
from harness.sandbox.offline_base import cache_dir

FILES = Path(__file__).parent / "files"
IMAGE_REPO = "staircase-scaffold"
RECIPE_VERSION = "1"
BUILD_TIMEOUT_S = 3600
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
Progress = Callable[[str], None]


class ScaffoldImage(BaseModel):
    tag: str
    base: str
    seconds: float
    cached: bool


def scaffold_tag(base_id: str, mini_swe_agent: str, claude_code: str | None) -> str:
    h = hashlib.sha256(f"{RECIPE_VERSION}\0{base_id}\0{mini_swe_agent}\0{claude_code or ''}\0".encode())
    for f in sorted(FILES.iterdir()):
        h.update(f"{f.name}\0{os.access(f, os.X_OK)}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return f"{IMAGE_REPO}:{h.hexdigest()[:12]}"


def _wheels(version: str, say: Progress) -> Path:
    """mini-swe-agent and its dependencies as wheels for this host's Python and platform (the
    sandbox's Debian python3 must match: both are CPython 3.11 on glibc 2.36 here)."""
    folder = cache_dir() / "scaffold-wheels" / version
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    say(f"downloading mini-swe-agent {version} and its dependencies from PyPI")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(folder),
                        f"mini-swe-agent=={version}"], capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageBuildError(f"pip download mini-swe-agent=={version} failed:\n{r.stderr[-3000:]}")
    (folder / ".complete").touch()
    return folder


def _npm(version: str, say: Progress) -> Path:
    folder = cache_dir() / "scaffold-npm" / version
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("npm") is None:
        raise ImageBuildError("scaffold.claude_code: installing Claude Code needs npm on the host (to fetch it)")
    say(f"fetching @anthropic-ai/claude-code@{version} from npm")
    r = subprocess.run(["npm", "pack", f"@anthropic-ai/claude-code@{version}", "--pack-destination", str(folder)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageBuildError(f"npm pack @anthropic-ai/claude-code@{version} failed:\n{r.stderr[-3000:]}")
    (folder / ".complete").touch()
    return folder


def ensure_scaffold_image(base: str, *, mini_swe_agent: str, claude_code: str | None = None,
                          client: docker.DockerClient | None = None, progress: Progress | None = None) -> ScaffoldImage:
    """The scaffold image on sandbox image ``base``: found by its tag, or built."""
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    client = client or docker_client(BUILD_TIMEOUT_S)
    base_id = client.images.get(base).id
    tag = scaffold_tag(base_id, mini_swe_agent, claude_code)
    try:
        client.images.get(tag)
        return ScaffoldImage(tag=tag, base=base, seconds=round(time.monotonic() - started, 2), cached=True)
    except docker.errors.ImageNotFound:
        pass
    wheels = _wheels(mini_swe_agent, say)
    npm = _npm(claude_code, say) if claude_code else None
    say(f"building {tag} on {base}")
    with tempfile.TemporaryDirectory(prefix="scaffold-context-", dir=cache_dir()) as tmp:
        ctx = Path(tmp)
        for f in FILES.iterdir():
            shutil.copy2(f, ctx / f.name)
            if f.name != "Dockerfile":
                (ctx / f.name).chmod(0o755)  # COPY keeps the mode: executable whatever the checkout made it
        shutil.copytree(wheels, ctx / "wheels", copy_function=_link_or_copy)
        (ctx / "npm").mkdir()
        if npm is not None:
            shutil.copytree(npm, ctx / "npm", dirs_exist_ok=True, copy_function=_link_or_copy)
        log_tail: list[str] = []
        try:
            for chunk in client.api.build(path=tmp, tag=tag, rm=True, forcerm=True, pull=False, decode=True,
                                          buildargs={"BASE": base, "MINI_SWE_AGENT": mini_swe_agent,
                                                     "CLAUDE_CODE": claude_code or ""}):
                if "error" in chunk:
                    raise ImageBuildError(f"{chunk['error'].strip()}\n--- build log tail ---\n" + "\n".join(log_tail))
                for line in _ANSI.sub("", chunk.get("stream", "")).splitlines():
                    if line.strip():
                        log_tail = (log_tail + [line])[-60:]
                        say(line)
        except docker.errors.APIError as e:
            raise ImageBuildError(f"docker build of the scaffold image failed: {e}") from e
    return ScaffoldImage(tag=tag, base=base, seconds=round(time.monotonic() - started, 2), cached=False)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
