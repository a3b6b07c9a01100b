"""Where the repository's own folders are: one place, so no module imports another for a path."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SKELETON = REPO_ROOT / "skeleton"
REFERENCE = REPO_ROOT / "reference"
CONFIGS = REPO_ROOT / "configs"
SANDBOX_DIR = REPO_ROOT / "sandbox"
