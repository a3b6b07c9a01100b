"""Readers and writers for the texmex vector formats (fvecs, ivecs, bvecs) and ann-benchmarks HDF5.

A texmex file is a sequence of records, each a little-endian int32 dimension ``d`` followed by ``d``
values (float32 for fvecs, int32 for ivecs, uint8 for bvecs). Every record of a file has the same
``d``, so the file is a 2-D array with one extra header column: we memory-map it and return a view
without the header column, which costs no copy for files of gigabytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_VALUE_DTYPES: dict[str, np.dtype] = {
    ".fvecs": np.dtype("<f4"),
    ".ivecs": np.dtype("<i4"),
    ".bvecs": np.dtype("u1"),
}


class VecsFormatError(ValueError):
    """A vector file is malformed; the message names the file and the byte offset."""

    def __init__(self, path: Path, offset: int, problem: str) -> None:
        self.path = Path(path)
        self.offset = offset
        super().__init__(f"{path}: at byte offset {offset}: {problem}")


def _value_dtype(path: Path, kind: str | None) -> np.dtype:
    suffix = f".{kind}" if kind else Path(path).suffix
    try:
        return _VALUE_DTYPES[suffix]
    except KeyError:
        raise ValueError(
            f"{path}: unknown vector format {suffix!r} (expected one of fvecs, ivecs, bvecs)"
        ) from None


def read_vecs(path: str | os.PathLike[str], kind: str | None = None, *, mmap: bool = True) -> np.ndarray:
    """Read an fvecs/ivecs/bvecs file as an (n, d) array.

    With ``mmap`` (the default) the array is a read-only view of a memory map. The whole file is
    validated: the size must be a whole number of records and every record must carry the same
    dimension header; otherwise :class:`VecsFormatError` names the file and the offending offset.
    """
    path = Path(path)
    dtype = _value_dtype(path, kind)
    size = path.stat().st_size
    if size == 0:
        return np.zeros((0, 0), dtype=dtype)
    if size < 4:
        raise VecsFormatError(path, 0, f"file of {size} bytes is too short for a dimension header")
    with path.open("rb") as f:
        dim = int(np.frombuffer(f.read(4), dtype="<i4")[0])
    if dim <= 0 or dim > 1_000_000:
        raise VecsFormatError(path, 0, f"invalid dimension header {dim}")
    record = 4 + dim * dtype.itemsize
    n, rest = divmod(size, record)
    if rest:
        raise VecsFormatError(
            path,
            n * record,
            f"truncated record: {rest} trailing bytes, a record of dimension {dim} is {record} bytes",
        )
    raw = np.memmap(path, dtype="u1", mode="r") if mmap else np.fromfile(path, dtype="u1")
    rows = raw.reshape(n, record)
    headers = rows[:, :4].view("<i4").reshape(n)
    bad = np.flatnonzero(headers != dim)
    if bad.size:
        i = int(bad[0])
        raise VecsFormatError(
            path, i * record, f"record {i} has dimension header {int(headers[i])}, expected {dim}"
        )
    return rows[:, 4:].view(dtype)


def write_vecs(path: str | os.PathLike[str], array: np.ndarray, kind: str | None = None) -> None:
    """Write a 2-D array as fvecs/ivecs/bvecs, atomically (temporary name, then rename)."""
    path = Path(path)
    dtype = _value_dtype(path, kind)
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array, got shape {array.shape}")
    if dtype.kind in "iu" and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"{path}: non-finite values cannot be stored as {dtype}")
    n, dim = array.shape
    out = np.empty((n, 4 + dim * dtype.itemsize), dtype="u1")
    out[:, :4] = np.full((n, 1), dim, dtype="<i4").view("u1")
    out[:, 4:] = np.ascontiguousarray(array, dtype=dtype).view("u1").reshape(n, dim * dtype.itemsize)
    atomic_write_bytes(path, out)


def atomic_write_bytes(path: Path, data: np.ndarray | bytes) -> None:
    """Write to ``path`` through a temporary file in the same folder, fsync, then rename.

    An interrupted write leaves at most a stray ``.tmp`` file, never a truncated target.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            if isinstance(data, np.ndarray):
                data.tofile(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class AnnBenchmarksFile:
    """The four arrays of an ann-benchmarks HDF5 file (``distances`` may be absent)."""

    train: np.ndarray
    test: np.ndarray
    neighbors: np.ndarray
    distances: np.ndarray | None
    distance_metric: str


def read_ann_hdf5(path: str | os.PathLike[str]) -> AnnBenchmarksFile:
    """Read an ann-benchmarks HDF5 file (``train``, ``test``, ``neighbors``, ``distances``)."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        missing = [k for k in ("train", "test", "neighbors") if k not in f]
        if missing:
            raise ValueError(f"{path}: not an ann-benchmarks file, missing datasets {missing}")
        train = np.asarray(f["train"], dtype=np.float32)
        test = np.asarray(f["test"], dtype=np.float32)
        neighbors = np.asarray(f["neighbors"], dtype=np.int64)
        distances = np.asarray(f["distances"], dtype=np.float32) if "distances" in f else None
        metric = f.attrs.get("distance", "euclidean")
        metric = metric.decode() if isinstance(metric, bytes) else str(metric)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(f"{path}: train {train.shape} and test {test.shape} do not share a dimension")
    if neighbors.shape[0] != test.shape[0]:
        raise ValueError(f"{path}: neighbors has {neighbors.shape[0]} rows for {test.shape[0]} queries")
    return AnnBenchmarksFile(train, test, neighbors, distances, metric)
