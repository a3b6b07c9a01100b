"""Where datasets come from: generated sets, SIFT-1M (downloaded or from disk), ann-benchmarks HDF5,
and KCORES vector-db-bench data folders. Each ends as a dataset folder (see ``store``)."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.download import Progress, download, md5_file
from harness.datasets.formats import read_ann_hdf5, read_vecs
from harness.datasets.generate import generate_sets
from harness.datasets.store import Dataset, DatasetBuilder, DatasetError, DatasetStore, Log

# The texmex archive (corpus-texmex.irisa.fr). Size and MD5 as published by third parties and
# used by ann-benchmarks mirrors; a mismatch is reported with both values, never ignored.
SIFT_URL = "ftp://ftp.irisa.fr/local/texmex/corpus/sift.tar.gz"
SIFT_SIZE = 168_280_445
SIFT_MD5 = "b23d1b3b2ee8469d819b61ca900ef0ed"
SIFT_MEMBERS = ("sift_base.fvecs", "sift_query.fvecs", "sift_learn.fvecs", "sift_groundtruth.ivecs")
DEFAULT_DEV_QUERIES = 1000

GtProgress = Callable[[str, int, int], None]


def generate_dataset(
    store: DatasetStore,
    name: str,
    *,
    n: int,
    queries: int,
    dev_queries: int,
    dim: int = 128,
    seed: int = 0,
    log: Log | None = None,
    gt_progress: GtProgress | None = None,
) -> tuple[Dataset, bool]:
    """Generate a SIFT-like dataset; returns ``(dataset, reused)``.

    A dataset of that name made with the same parameters is reused as it is; one made with other
    parameters is an error (pick another name or delete the folder), never silently replaced.
    """
    for label, value in (("n", n), ("queries", queries), ("dev-queries", dev_queries), ("dim", dim)):
        if value <= 0:
            raise DatasetError(f"--{label} must be positive, got {value}")
    params = {"generator": "sift-like-v1", "n": n, "queries": queries, "dev_queries": dev_queries,
              "dim": dim, "seed": seed}
    if store.exists(name):
        ds = store.get(name)
        if ds.manifest.source == params:
            return ds, True
        raise DatasetError(
            f"dataset {name!r} exists with other parameters ({ds.manifest.source}); "
            f"choose another name or delete {ds.root}"
        )
    b = DatasetBuilder(store, name, params, log)
    if not all(b.has(r) for r in ("base", "queries", "dev_queries")):
        base, q, dev = generate_sets(seed, n, queries, dev_queries, dim)
        b.ensure("base", lambda: base)
        b.ensure("queries", lambda: q)
        b.ensure("dev_queries", lambda: dev)
        del base, q, dev
    b.ensure_groundtruth(gt_progress)
    return b.finish("generated", params), False


def fetch_sift(
    store: DatasetStore,
    name: str = "sift-1m",
    *,
    url: str = SIFT_URL,
    size: int | None = SIFT_SIZE,
    md5: str | None = SIFT_MD5,
    from_path: Path | None = None,
    dev_queries: int = DEFAULT_DEV_QUERIES,
    log: Log | None = None,
    download_progress: Progress | None = None,
    gt_progress: GtProgress | None = None,
) -> Dataset:
    """Make the SIFT-1M dataset: download the texmex archive (or take ``from_path``) and convert it.

    ``from_path`` may be the archive, an unpacked folder (``sift_*.fvecs``), an ann-benchmarks HDF5
    file, or a KCORES vector-db-bench data folder.
    """
    log = log or (lambda _m: None)
    if store.exists(name):
        return store.get(name)
    root = store.folder(name)
    if from_path is None:
        archive = store.data_dir / "downloads" / "sift.tar.gz"
        log(f"downloading {url} to {archive}")
        download(url, archive, size=size, md5=md5, progress=download_progress)
        from_path = archive
    from_path = Path(from_path).expanduser()
    if not from_path.exists():
        raise DatasetError(f"--from {from_path}: no such file or folder")
    if from_path.is_file() and from_path.suffix in (".hdf5", ".h5"):
        return _import_hdf5(store, name, from_path, dev_queries, log, gt_progress)
    if from_path.is_file():
        folder = _unpack_archive(from_path, root / ".source", log)
    else:
        folder = from_path
    if (folder / "sift_base.fvecs").is_file():
        return _import_texmex(store, name, folder, dev_queries, log, gt_progress)
    raise DatasetError(
        f"{from_path}: found no sift_base.fvecs; expected the texmex archive, its unpacked folder, "
        "an ann-benchmarks .hdf5 file or a KCORES data folder"
    )


def _unpack_archive(archive: Path, dest: Path, log: Log) -> Path:
    """Extract the SIFT members of a tar archive (flattened) into ``dest``."""
    log(f"unpacking {archive}")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            found = [n for n in SIFT_MEMBERS if n in members]
            if "sift_base.fvecs" not in found:
                raise DatasetError(f"{archive}: the archive holds no sift_base.fvecs")
            for n in found:
                src = tar.extractfile(members[n])
                assert src is not None
                tmp = dest / f".{n}.tmp"
                with src, tmp.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                tmp.replace(dest / n)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"{archive}: corrupt or unreadable archive ({e})") from None
    return dest


def _import_texmex(
    store: DatasetStore, name: str, folder: Path, n_dev: int, log: Log, gt_progress: GtProgress | None
) -> Dataset:
    base_path, query_path = folder / "sift_base.fvecs", folder / "sift_query.fvecs"
    if not query_path.is_file():
        raise DatasetError(f"{folder}: sift_query.fvecs is missing")
    params: dict[str, Any] = {"source": str(folder), "base_bytes": base_path.stat().st_size,
                              "query_bytes": query_path.stat().st_size, "dev_queries": n_dev}
    kcores_gt = folder / "ground_truth.json"
    learn = folder / "sift_learn.fvecs"
    queries = read_vecs(query_path)
    if learn.is_file():
        dev, params["dev_from"] = read_vecs(learn)[:n_dev], "sift_learn.fvecs[:n]"
        hidden = queries
    else:
        # No learn set (KCORES folders): the dev queries are the last n test queries, which the
        # hidden set then leaves out, so the agent never sees a hidden query.
        if n_dev >= queries.shape[0]:
            raise DatasetError(f"{folder}: {queries.shape[0]} queries leave none hidden after {n_dev} dev")
        dev, params["dev_from"] = queries[-n_dev:], "sift_query.fvecs[-n:] (no learn set)"
        hidden = queries[:-n_dev]
    kind = "kcores" if kcores_gt.is_file() else "sift-1m"
    b = DatasetBuilder(store, name, params, log)
    b.ensure("base", lambda: read_vecs(base_path))
    b.ensure("queries", lambda: hidden)
    b.ensure("dev_queries", lambda: dev)
    b.ensure_groundtruth(gt_progress)
    source = dict(params)
    published = folder / "sift_groundtruth.ivecs"
    if published.is_file() and learn.is_file():
        source["published_gt_top10_agreement"] = _agreement(read_vecs(published), b.root)
    if kcores_gt.is_file():
        source["kcores_gt_top10_agreement"] = _agreement(_read_kcores_gt(kcores_gt), b.root, hidden.shape[0])
    return b.finish(kind, source)


def _import_hdf5(
    store: DatasetStore, name: str, path: Path, n_dev: int, log: Log, gt_progress: GtProgress | None
) -> Dataset:
    f = read_ann_hdf5(path)
    if f.distance_metric not in ("euclidean", "l2"):
        raise DatasetError(f"{path}: metric {f.distance_metric!r}; this benchmark is L2 only")
    if n_dev >= f.test.shape[0]:
        raise DatasetError(f"{path}: {f.test.shape[0]} test queries leave none hidden after {n_dev} dev")
    params = {"source": str(path), "bytes": path.stat().st_size, "md5": md5_file(path), "dev_queries": n_dev,
              "dev_from": "test[-n:] (no learn set)"}
    b = DatasetBuilder(store, name, params, log)
    b.ensure("base", lambda: f.train)
    b.ensure("queries", lambda: f.test[:-n_dev])
    b.ensure("dev_queries", lambda: f.test[-n_dev:])
    b.ensure_groundtruth(gt_progress)
    source = dict(params)
    source["published_gt_top10_agreement"] = _agreement(f.neighbors, b.root, f.test.shape[0] - n_dev)
    return b.finish("ann-hdf5", source)


def _read_kcores_gt(path: Path) -> np.ndarray:
    """KCORES ground_truth.json: ``[{"query_id": i, "neighbors": [ids...]}, ...]``."""
    rows = json.loads(path.read_text())
    rows.sort(key=lambda r: r["query_id"])
    return np.array([r["neighbors"] for r in rows], dtype=np.int64)


def _agreement(published: np.ndarray, root: Path, n: int | None = None) -> float:
    """Mean overlap of the published top-10 ids with ours (ties may legitimately differ)."""
    ours = read_vecs(root / "groundtruth.ivecs")[:, :10]
    theirs = np.asarray(published)[: n or ours.shape[0], :10]
    m = min(len(ours), len(theirs))
    hits = sum(len(set(ours[i].tolist()) & set(theirs[i].tolist())) for i in range(m))
    return round(hits / (10 * m), 6) if m else 0.0
