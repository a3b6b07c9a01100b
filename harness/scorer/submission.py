"""Turning a path into a scorable source tree, checking the task's rules, and hashing the tree.

Two shapes are accepted: a crate of the skeleton's shape (``Cargo.toml`` + ``src/``), and a
published KCORES leaderboard entry (``Cargo.toml``, ``Cargo.lock``, and ``src/`` and/or
``src_best_qps/`` holding only the files the model changed), which is laid over the skeleton.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.paths import SKELETON

READ_ONLY = ("src/main.rs", "src/api.rs")
IGNORED_DIRS = {"target", ".git", "node_modules", "__pycache__"}
# Crates that implement nearest-neighbour search: using one is not solving the task.
BANNED_CRATES = frozenset({
    "faiss", "faiss-sys", "faiss-next", "annoy", "annoy-rs", "rannoy", "hnsw", "hnsw_rs", "hnswlib",
    "hnswlib-rs", "hnswlib-sys", "usearch", "instant-distance", "arroy", "hora", "granne", "diskann",
    "diskann-rs", "lance", "lancedb", "lance-index", "qdrant-client", "qdrant-segment", "milvus",
    "milvus-sdk-rust", "kiddo", "kdtree", "kd-tree", "nabo", "petal-neighbors", "ball-tree", "vpsearch",
    "space", "ngt", "ngt-sys", "voyager", "small-world-rs", "hnsw-rs", "pgvecto", "vectordb",
})
DEP_TABLES = ("dependencies", "dev-dependencies", "build-dependencies")


class SubmissionError(ValueError):
    """The path is not a submission we can score (nothing to build)."""


@dataclass
class RuleCheck:
    """The outcome of the rule checks: an empty ``violations`` list means the rules hold."""

    violations: list[str] = field(default_factory=list)


# What the original KCORES agent let the model write (agent/src/sandbox.rs): files under ``src/``
# except the READONLY_PATHS ``src/main.rs`` and ``src/api.rs``, and ``Cargo.toml`` (EXTRA_WRITABLE);
# ``Cargo.lock`` is cargo's record of the dependencies that manifest chose. Everything else in an
# entry (its logs, benchmarks, profiles, a copy of a read-only file) is left out.
ENTRY_CRATE_FILES = ("Cargo.toml", "Cargo.lock")
ENTRY_READ_ONLY = {"main.rs", "api.rs"}
# An entry's files that are its record, not its code: left out without a word.
ENTRY_RECORD = {"agent_log.jsonl", "eval_log.json", "session_context.json", "final_report.json", "benchmarks",
                "profiling", "flamegraph.svg", "perf.data", "perf.data.old"}


@dataclass
class Prepared:
    """A submission laid out as a complete crate at ``root``; ``left_out`` names each of the entry's
    files that was not taken, with why (empty for a complete crate)."""

    root: Path
    left_out: list[str] = field(default_factory=list)


def prepare(path: Path, dest: Path, variant: Literal["best", "final"] = "best") -> Path:
    """Copy the submission at ``path`` into ``dest`` as a complete crate and return ``dest``.

    A KCORES entry's ``src_best_qps/`` (``variant="best"``, its best-QPS snapshot) or ``src/``
    (``"final"``) is laid over the skeleton, taking only what the original let the model write
    (see ``prepare_entry``); a complete crate is copied as it is. A reference variant, which is
    data rather than a folder (``reference/stage05c-...``), is materialized first.
    """
    return prepare_entry(path, dest, variant).root


def prepare_entry(path: Path, dest: Path, variant: Literal["best", "final"] = "best") -> Prepared:
    """``prepare``, also saying which of a KCORES entry's files were left out and why."""
    path = Path(path)
    if variant not in ("best", "final"):
        raise SubmissionError(f"variant: expected 'best' or 'final', got {variant!r}")
    if not path.is_dir():
        from harness.reference import materialize, named_stage

        stage = named_stage(path)
        if stage is None:
            raise SubmissionError(f"{path}: not a folder (nor a reference stage's name)")
        path = materialize(stage, dest.parent / f"{stage.name}-materialized")
    if dest.exists():
        shutil.rmtree(dest)
    entry = (path / "src_best_qps").is_dir() or (path / "agent_log.jsonl").is_file()
    complete = (path / "Cargo.toml").is_file() and (path / "src" / "main.rs").is_file()
    if complete and not entry:
        shutil.copytree(path, dest, ignore=shutil.ignore_patterns(*IGNORED_DIRS))
        _touch_all(dest)
        return Prepared(dest)
    # A partial submission (a KCORES entry, a reference stage): the skeleton, then the entry's
    # crate files, then the files of its chosen sources the model could write.
    layers = ["src", "src_best_qps"] if variant == "best" else ["src"]
    if not any((path / layer).is_dir() for layer in layers):
        raise SubmissionError(f"{path}: no Cargo.toml, src/ or src_best_qps/: expected a crate of the "
                              "skeleton's shape or a KCORES leaderboard entry")
    shutil.copytree(SKELETON, dest, ignore=shutil.ignore_patterns(*IGNORED_DIRS, "API.md"))
    left_out: list[str] = []
    for name in ENTRY_CRATE_FILES:
        if (path / name).is_file():
            shutil.copy2(path / name, dest / name)
    for layer in layers:
        if not (path / layer).is_dir():
            continue
        for f in sorted((path / layer).rglob("*")):
            rel = f.relative_to(path / layer)
            if not f.is_file() or set(rel.parts) & IGNORED_DIRS:
                continue
            if rel.as_posix() in ENTRY_READ_ONLY:
                left_out.append(f"{layer}/{rel.as_posix()}: read-only in the original (agent/src/sandbox.rs "
                                "READONLY_PATHS); the skeleton's is used")
                continue
            target = dest / "src" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
    if variant == "final" and (path / "src_best_qps").is_dir():
        left_out.append("src_best_qps/: the best-QPS snapshot, not the final sources (variant final)")
    for f in sorted(path.iterdir()):
        if f.name in (*ENTRY_CRATE_FILES, "src", "src_best_qps") or f.name in ENTRY_RECORD | IGNORED_DIRS:
            continue
        left_out.append(f"{f.name}{'/' if f.is_dir() else ''}: outside what the original let the model write "
                        "(src/ and Cargo.toml)")
    _touch_all(dest)
    return Prepared(dest, left_out)


def _touch_all(root: Path) -> None:
    """Give every file a fresh mtime: cargo decides what to rebuild from mtimes, and copies that keep
    old ones would let a shared target dir serve a stale binary."""
    now = time.time()
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (now, now))


def tree_files(root: Path) -> list[Path]:
    """The files that make up a submission's source tree, sorted, build outputs left out."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not (set(rel.parts) & IGNORED_DIRS):
            out.append(rel)
    return out


def tree_hash(root: Path) -> str:
    """A content hash of the source tree: paths and bytes of every file."""
    h = hashlib.sha256()
    for rel in tree_files(root):
        data = (root / rel).read_bytes()
        h.update(f"{rel.as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def check_rules(root: Path, skeleton: Path = SKELETON) -> RuleCheck:
    """The task's rules: read-only files untouched, ``debug = true`` kept, no vector-search crate."""
    check = RuleCheck()
    for rel in READ_ONLY:
        ours, theirs = skeleton / rel, root / rel
        if not theirs.is_file():
            check.violations.append(f"{rel} is missing (it is read-only and must stay as given)")
        elif theirs.read_bytes() != ours.read_bytes():
            check.violations.append(f"{rel} differs from the skeleton's (it is read-only)")
    try:
        manifest = tomllib.loads((root / "Cargo.toml").read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        check.violations.append(f"Cargo.toml is not valid TOML: {e}")
        return check
    debug = manifest.get("profile", {}).get("release", {}).get("debug")
    if debug not in (True, 2, "full"):
        check.violations.append(
            f"Cargo.toml: [profile.release] must keep debug = true (found {debug!r})"
        )
    for crate in sorted(_declared_crates(manifest) | _locked_crates(root / "Cargo.lock")):
        if crate.replace("_", "-") in {b.replace("_", "-") for b in BANNED_CRATES}:
            check.violations.append(f"crate {crate!r} is a vector-search library, which the rules ban")
    return check


def _declared_crates(manifest: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    tables = [manifest] + list(manifest.get("target", {}).values())
    for table in tables:
        for key in DEP_TABLES:
            for alias, spec in table.get(key, {}).items():
                names.add(alias)
                if isinstance(spec, dict) and "package" in spec:
                    names.add(spec["package"])
    return names


def _locked_crates(lock: Path) -> set[str]:
    if not lock.is_file():
        return set()
    try:
        data = tomllib.loads(lock.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return set()
    return {p["name"] for p in data.get("package", []) if "name" in p}


def package_name(root: Path) -> str:
    """The crate's package name, which is also its binary's name."""
    manifest = tomllib.loads((root / "Cargo.toml").read_text())
    bins = manifest.get("bin")
    if bins and isinstance(bins, list) and bins[0].get("name"):
        return str(bins[0]["name"])
    return str(manifest["package"]["name"])
