"""The agent's workspace: a copy of the skeleton under git, with a commit and a tag per submission.

The git directory lives beside the workspace in the run directory, not inside it, so the agent
(which sees only the workspace) can neither rewrite the history nor move the submission tags.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import git

from harness.paths import SKELETON

START_TAG = "start"
# The workspace may be owned by the sandbox's user while git runs as ours.
GIT_ENV = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}
EXCLUDES = "target/\n*.profraw\nperf.data*\n"
AUTHOR = git.Actor("staircase", "staircase@localhost")


def submission_tag(n: int) -> str:
    return f"sub-{n:04d}"


class Workspace:
    def __init__(self, path: Path, git_dir: Path) -> None:
        # Absolute: git runs in the git dir, where a relative GIT_DIR/GIT_WORK_TREE would not resolve.
        self.path = Path(path).resolve()
        git_dir = Path(git_dir).resolve()
        self.repo = git.Repo(git_dir)
        self.repo.git.update_environment(**GIT_ENV, GIT_WORK_TREE=str(self.path), GIT_DIR=str(git_dir))

    @classmethod
    def create(cls, path: Path, git_dir: Path, skeleton: Path = SKELETON, notes: str | None = None) -> Workspace:
        """Copy the skeleton to ``path`` and commit it as the starting point (tag ``start``)."""
        shutil.copytree(skeleton, path, ignore=shutil.ignore_patterns("target"))
        if notes is not None:
            (path / notes).write_text("# Notes\n\nYour notes for later iterations go here.\n")
        git.Repo.init(git_dir, bare=True)
        (git_dir / "info").mkdir(exist_ok=True)
        (git_dir / "info" / "exclude").write_text(EXCLUDES)
        ws = cls(path, git_dir)
        ws.repo.git.config("core.bare", "false")
        ws.repo.git.add("-A")
        ws.repo.git.commit("-m", "skeleton", author=f"{AUTHOR.name} <{AUTHOR.email}>")
        ws.repo.git.tag(START_TAG)
        return ws

    def head(self) -> str:
        return str(self.repo.git.rev_parse("HEAD"))

    def commit_submission(self, n: int, message: str) -> str:
        """Commit everything in the workspace (even when unchanged) and tag it ``sub-NNNN``."""
        tag = submission_tag(n)
        if tag in {t.name for t in self.repo.tags}:
            return str(self.repo.git.rev_parse(f"{tag}^{{commit}}"))  # already done before a crash
        self.repo.git.add("-A")
        self.repo.git.commit("--allow-empty", "-m", f"submission {n}: {message}"[:2000],
                             author=f"{AUTHOR.name} <{AUTHOR.email}>")
        self.repo.git.tag(tag)
        return self.head()

    def has_submission(self, n: int) -> bool:
        """Whether submission ``n`` was committed (a killed run may have committed it unrecorded)."""
        return submission_tag(n) in {t.name for t in self.repo.tags}

    def submission_message(self, n: int) -> str:
        """The model's message of submission ``n``, read back from its commit."""
        subject = str(self.repo.git.log("-1", "--format=%s", submission_tag(n)))
        return subject.split(": ", 1)[-1]

    def recover_index_lock(self, wait_s: float = 10.0) -> bool:
        """Remove an ``index.lock`` (or ``HEAD.lock``) left by a git process that no longer runs (a
        ``kill -9`` of the run mid-commit); True when one was removed. Only the run's lock holder calls this, and only
        after seeing that no live process works on this git directory: a git command the killed run
        started may outlive it for a moment, so it is waited for, never cut short."""
        git_dir = Path(self.repo.git_dir).resolve()
        locks = [git_dir / "index.lock", git_dir / "HEAD.lock"]
        deadline = time.monotonic() + wait_s
        while any(lock.exists() for lock in locks):
            if not _git_processes(git_dir):
                for lock in locks:
                    lock.unlink(missing_ok=True)
                return True
            if time.monotonic() > deadline:
                raise RuntimeError(f"{git_dir} is locked by a running git process; stop it or wait, then resume")
            time.sleep(0.2)
        return False

    def reset_to(self, ref: str) -> None:
        """Make the workspace exactly the tree of ``ref`` (build outputs are kept)."""
        self.repo.git.reset("--hard", ref)
        self.repo.git.clean("-fdq", "-e", "target/")

    def last_submission_ref(self) -> str:
        tags = sorted(t.name for t in self.repo.tags if t.name.startswith("sub-"))
        return tags[-1] if tags else START_TAG

    def diff_stat(self, a: str, b: str) -> tuple[int, int, int]:
        """(files changed, lines added, lines removed) between two refs."""
        files = added = removed = 0
        for line in str(self.repo.git.diff("--numstat", a, b)).splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                files += 1
                added += int(parts[0]) if parts[0].isdigit() else 0
                removed += int(parts[1]) if parts[1].isdigit() else 0
        return files, added, removed

    def diff(self, a: str, b: str) -> str:
        return str(self.repo.git.diff(a, b))

    def export(self, ref: str, dest: Path) -> Path:
        """Write the tree of ``ref`` to ``dest`` (what gets scored: not the live workspace)."""
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as f:
            self.repo.git.archive(ref, output_stream=f)
            f.seek(0)
            with tarfile.open(fileobj=f) as tar:
                tar.extractall(dest, filter="data")
        return dest


def _git_processes(git_dir: Path) -> list[int]:
    """PIDs of live processes whose environment points git at ``git_dir`` (how Workspace runs git)."""
    marker = f"GIT_DIR={git_dir}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids
