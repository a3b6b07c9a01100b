"""The agent's workspace: a copy of the skeleton under git, with a commit and a tag per submission.

The git directory lives beside the workspace in the run directory, not inside it, so the agent
(which sees only the workspace) can neither rewrite the history nor move the submission tags.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

import git

from harness.scorer.submission import SKELETON

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
