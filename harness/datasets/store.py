"""Dataset folders: self-describing, complete or absent, and found by name under a data directory.

A dataset folder holds the base vectors, the hidden test queries, the dev queries the agent may see,
exact top-100 ground truth of both query sets, and ``manifest.json``. The manifest is written last,
so a folder without one is an unfinished build: building again reuses every file already complete
(each is written atomically) and recomputes the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.datasets.formats import atomic_write_bytes, read_vecs, write_vecs
from harness.datasets.groundtruth import exact_knn

GT_K = 100
MANIFEST = "manifest.json"
BUILD_STATE = ".build.json"

# The files of a dataset folder, by role.
FILES = {
    "base": "base.fvecs",
    "queries": "queries.fvecs",
    "groundtruth": "groundtruth.ivecs",
    "groundtruth_dist": "groundtruth_dist.fvecs",
    "dev_queries": "dev_queries.fvecs",
    "dev_groundtruth": "dev_groundtruth.ivecs",
    "dev_groundtruth_dist": "dev_groundtruth_dist.fvecs",
}
# What the agent's sandbox may see: never the hidden queries or their ground truth.
DEV_FILES = ("base", "dev_queries", "dev_groundtruth", "dev_groundtruth_dist")

Split = Literal["test", "dev"]
Log = Callable[[str], None]


class DatasetError(RuntimeError):
    """A dataset is missing, incomplete or corrupt; the message says which and what to do."""


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    bytes: int
    sha256: str


class DatasetManifest(BaseModel):
    """What a dataset folder holds and where it came from."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["generated", "sift-1m", "ann-hdf5", "kcores", "custom"]
    metric: Literal["l2"] = "l2"
    dim: int
    n_base: int
    n_queries: int
    n_dev_queries: int
    gt_k: int = GT_K
    source: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, FileEntry]
    created_at: str
    build_seconds: float


def default_data_dir() -> Path:
    """``$STAIRCASE_DATA`` if set, else ``~/.staircase/data`` (never inside the repository)."""
    env = os.environ.get("STAIRCASE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".staircase" / "data"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Dataset:
    """A complete dataset folder."""

    def __init__(self, root: Path, manifest: DatasetManifest) -> None:
        self.root = root
        self.manifest = manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    def path(self, role: str) -> Path:
        return self.root / FILES[role]

    def base(self) -> np.ndarray:
        return read_vecs(self.path("base"))

    def queries(self, split: Split = "test") -> np.ndarray:
        return read_vecs(self.path("queries" if split == "test" else "dev_queries"))

    def groundtruth(self, split: Split = "test") -> tuple[np.ndarray, np.ndarray]:
        """``(ids (q, 100) int32, Euclidean distances (q, 100) float32)``, nearest first."""
        prefix = "" if split == "test" else "dev_"
        return (
            read_vecs(self.path(f"{prefix}groundtruth")),
            read_vecs(self.path(f"{prefix}groundtruth_dist")),
        )

    def dev_files(self) -> dict[str, Path]:
        """The files an agent may see, by file name (the dev split and the base vectors)."""
        return {FILES[r]: self.path(r) for r in DEV_FILES}

    def dev_files_in_order(self, seed: int, dest: Path) -> dict[str, Path]:
        """``dev_files`` with the dev queries, and their ground truth row for row, in the order
        ``seed`` draws (a run's seed changes the order of the queries its agent measures with).
        Seed 0: the dataset's own files. The reordered copies are written once, under ``dest``."""
        files = self.dev_files()
        if not seed:
            return files
        n = read_vecs(self.path("dev_queries")).shape[0]
        order = np.random.default_rng([seed, 0x5EED]).permutation(n)
        dest.mkdir(parents=True, exist_ok=True)
        for role in ("dev_queries", "dev_groundtruth", "dev_groundtruth_dist"):
            out = dest / FILES[role]
            if not out.is_file():
                write_vecs(out, np.asarray(read_vecs(self.path(role)))[order])
            files[FILES[role]] = out
        return files

    def verify(self) -> list[str]:
        """Recompute every checksum; return the problems found (empty when intact)."""
        problems = []
        for role, entry in self.manifest.files.items():
            p = self.root / entry.path
            if not p.exists():
                problems.append(f"{role}: {p} is missing")
            elif p.stat().st_size != entry.bytes:
                problems.append(f"{role}: {p} has {p.stat().st_size} bytes, manifest says {entry.bytes}")
            elif sha256_file(p) != entry.sha256:
                problems.append(f"{role}: {p} does not match its sha256 in the manifest")
        return problems


class DatasetStore:
    """The datasets under one data directory, by name."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()

    def folder(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise DatasetError(f"invalid dataset name {name!r}: use letters, digits, '-', '_' and '.'")
        return self.data_dir / name

    def names(self) -> list[str]:
        if not self.data_dir.is_dir():
            return []
        return sorted(p.name for p in self.data_dir.iterdir() if (p / MANIFEST).is_file())

    def exists(self, name: str) -> bool:
        return (self.folder(name) / MANIFEST).is_file()

    def get(self, name: str) -> Dataset:
        root = self.folder(name)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            have = ", ".join(self.names()) or "none"
            hint = (
                f"an unfinished build is at {root}: run the same generate/fetch command again to finish it"
                if root.is_dir()
                else "create it with `staircase datasets generate NAME` or `staircase datasets fetch sift-1m`"
            )
            raise DatasetError(f"dataset {name!r} not found in {self.data_dir} (available: {have}); {hint}")
        try:
            manifest = DatasetManifest.model_validate_json(manifest_path.read_text())
        except ValueError as e:
            raise DatasetError(f"{manifest_path}: unreadable manifest: {e}") from None
        return Dataset(root, manifest)


def _per_split(progress: Callable[[str, int, int], None] | None, split: str) -> Callable[[int, int], None] | None:
    """A ground-truth progress callback for one query split."""
    if progress is None:
        return None
    report = progress
    return lambda done, total: report(split, done, total)


class DatasetBuilder:
    """Builds a dataset folder step by step, reusing complete files of an interrupted build.

    ``params`` identify the build: files left by a build with other params are discarded.
    """

    def __init__(self, store: DatasetStore, name: str, params: dict[str, Any], log: Log | None = None) -> None:
        self.root = store.folder(name)
        self.name = name
        self.params = params
        self.log = log or (lambda _msg: None)
        self.started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        state_path = self.root / BUILD_STATE
        previous = json.loads(state_path.read_text()) if state_path.is_file() else None
        if previous != params:
            for role in FILES:
                (self.root / FILES[role]).unlink(missing_ok=True)
            (self.root / MANIFEST).unlink(missing_ok=True)
            atomic_write_bytes(state_path, json.dumps(params, sort_keys=True).encode())

    def has(self, role: str) -> bool:
        return (self.root / FILES[role]).is_file()

    def put(self, role: str, array: np.ndarray) -> None:
        write_vecs(self.root / FILES[role], array)

    def ensure(self, role: str, make: Callable[[], np.ndarray]) -> None:
        if self.has(role):
            self.log(f"reusing {FILES[role]}")
            return
        self.log(f"writing {FILES[role]}")
        self.put(role, make())

    def ensure_groundtruth(self, progress: Callable[[str, int, int], None] | None = None) -> None:
        """Compute the exact top-100 of both query sets, unless already on disk."""
        base = read_vecs(self.root / FILES["base"])
        for prefix, qrole in (("", "queries"), ("dev_", "dev_queries")):
            ids_role, dist_role = f"{prefix}groundtruth", f"{prefix}groundtruth_dist"
            if self.has(ids_role) and self.has(dist_role):
                self.log(f"reusing {FILES[ids_role]}")
                continue
            queries = read_vecs(self.root / FILES[qrole])
            self.log(f"computing exact top-{GT_K} for {queries.shape[0]} {qrole} over {base.shape[0]} vectors")
            t0 = time.monotonic()
            ids, dists = exact_knn(base, queries, GT_K, progress=_per_split(progress, qrole))
            # Distances first: the ids file is the marker that this split's ground truth is complete.
            self.put(dist_role, dists)
            self.put(ids_role, ids)
            self.log(f"ground truth for {qrole} took {time.monotonic() - t0:.1f} s")

    def finish(self, kind: str, source: dict[str, Any]) -> Dataset:
        """Checksum every file and write the manifest (last), making the dataset visible."""
        base = read_vecs(self.root / FILES["base"])
        queries = read_vecs(self.root / FILES["queries"])
        dev = read_vecs(self.root / FILES["dev_queries"])
        for role, q in (("queries", queries), ("dev_queries", dev)):
            if q.shape[1] != base.shape[1]:
                raise DatasetError(f"{self.root / FILES[role]}: dimension {q.shape[1]} != base {base.shape[1]}")
        files = {}
        for role, fname in FILES.items():
            p = self.root / fname
            files[role] = FileEntry(path=fname, bytes=p.stat().st_size, sha256=sha256_file(p))
        manifest = DatasetManifest(
            name=self.name,
            kind=kind,  # type: ignore[arg-type]
            dim=int(base.shape[1]),
            n_base=int(base.shape[0]),
            n_queries=int(queries.shape[0]),
            n_dev_queries=int(dev.shape[0]),
            source=source,
            files=files,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - self.started, 2),
        )
        atomic_write_bytes(self.root / MANIFEST, manifest.model_dump_json(indent=2).encode())
        return Dataset(self.root, manifest)
