"""The workspace: a git repository beside the agent's folder, a tag per submission."""

from pathlib import Path


def test_workspace_with_relative_paths(tmp_path, monkeypatch):
    """`staircase run` from any directory: runs_dir is relative ("runs") by default."""
    from harness.workspace import Workspace

    monkeypatch.chdir(tmp_path)
    ws = Workspace.create(Path("runs/r1/workspace"), Path("runs/r1/workspace.git"))
    (tmp_path / "runs/r1/workspace/src/db.rs").write_text("// changed\n")
    ws.commit_submission(1, "first")
    assert ws.last_submission_ref() == "sub-0001" and ws.path.is_absolute()
    monkeypatch.chdir("/")
    again = Workspace(tmp_path / "runs/r1/workspace", tmp_path / "runs/r1/workspace.git")
    assert again.head() == ws.head()
