"""``staircase bench oracle``: where the reference stages stand against real ANN libraries.

On the same dataset, the same hidden queries and the same single CPU, it measures

1. hnswlib (HNSW, a small grid of M / ef_construction, an ef_search sweep),
2. faiss (IndexHNSWFlat, IVF-Flat and IVF-SQ8 over one shared coarse quantizer, nprobe sweeps),
3. a reference stage (default: the final one), compiled with ``reference/bench`` into an
   in-process, single-threaded bench binary (no HTTP): its tuning knobs are consts, so one point,

each searched one query at a time as a server would (per-query latency), and reports for each
library the best QPS at recall@10 >= the floor, the full sweeps, and the stage / hnswlib ratio.
Recall is the scorer's own tie-aware recall@10 (``harness.scorer.evaluate``). The libraries are
driven from Python (one call per query, a few microseconds of overhead each); the best point of
every index is also measured batched (all queries in one call, still one thread), which has none.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer
from pydantic import BaseModel, Field
from rich.table import Table

from harness.cli_options import Json
from harness.console import emit_json, err, fail, log
from harness.datasets.store import Dataset, DatasetError, DatasetStore
from harness.paths import REFERENCE, SKELETON
from harness.reference import materialize, named_stage, reference_stages, stage_files
from harness.scorer.evaluate import recall_strict, true_squared
from harness.scorer.runner import cargo_target_cache, cpu_model

Log = Callable[[str], None]
Library = Literal["hnswlib", "faiss", "stage"]
FaissIndex = Literal["hnsw", "ivf-flat", "ivf-sq8"]

K = 10
BENCH_CRATE = REFERENCE / "bench"
DEFAULT_EF = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
DEFAULT_NPROBE = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]


class OracleError(RuntimeError):
    """The oracle bench could not run (a library missing, the stage not building...)."""


def final_stage(root: Path = REFERENCE) -> Path:
    """The folder of the last base stage of the reference trajectory (not a tuning variant)."""
    bases = [s for s in reference_stages(root) if not s.is_variant]
    if not bases:
        raise OracleError(f"no reference stage under {root}")
    return root / bases[-1].name


class OracleConfig(BaseModel):
    """What to measure; the defaults keep a 1M-vector run affordable on one core."""

    libraries: list[Library] = ["hnswlib", "faiss", "stage"]
    recall_floor: float = 0.95
    stop_recall: float = Field(0.999, description="A sweep stops once it reaches this recall.")
    cpu: int = 0
    build_threads: int = Field(1, ge=1, description="Threads for index builds (hnswlib, faiss); the searches "
                               "always run on one thread pinned to `cpu`. Builds are not what is compared.")
    max_queries: int | None = None
    warmup: int = Field(100, description="Searches on base vectors after each build, before timing.")
    repeats: int = Field(3, description="Timed passes per point; the fastest counts (as in ann-benchmarks).")
    hnsw_m: list[int] = [16, 32]
    hnsw_ef_construction: list[int] = [200]
    ef_search: list[int] = DEFAULT_EF
    faiss_indexes: list[FaissIndex] = ["hnsw", "ivf-flat", "ivf-sq8"]
    faiss_hnsw_m: list[int] = [32]
    nlist: int | None = Field(None, description="IVF lists; default 4 sqrt(n).")
    nprobe: list[int] = DEFAULT_NPROBE
    kmeans_iters: int = 10
    train_per_list: int = 50
    stage_dir: Path = Field(default_factory=final_stage)
    cargo_profile: str = "release"
    batch_size: int = 1000
    batched: bool = True


class SweepPoint(BaseModel):
    param: str
    value: int | None
    qps: float
    recall: float
    p50_us: float | None = Field(description="Per-query latency; None for a batched point.")
    p99_us: float | None
    seconds: float


class IndexResult(BaseModel):
    library: Library
    index: str
    params: dict[str, Any]
    build_seconds: float
    load_seconds: float | None = None
    sweep: list[SweepPoint]
    best: SweepPoint | None = None
    batched: SweepPoint | None = Field(None, description="The best point again, all queries in one call, 1 thread.")


class LibraryBest(BaseModel):
    library: Library
    index: str
    point: SweepPoint


class OracleReport(BaseModel):
    dataset: str
    n_base: int
    dim: int
    queries: int
    k: int = K
    recall_floor: float
    cpu: int
    cpu_model: str
    threads: int = 1
    versions: dict[str, str]
    stage_dir: str | None = None
    stage_knobs: dict[str, str] = {}
    indexes: list[IndexResult] = []
    best: dict[str, LibraryBest | None] = {}
    stage_vs_hnswlib: float | None = Field(None, description="Best stage QPS / best hnswlib QPS at the floor.")
    notes: list[str] = []
    started_at: str
    seconds: float = 0.0


# ---- measuring ----


@contextmanager
def pinned(cpu: int | set[int]) -> Iterator[None]:
    """Pin every thread of this process (and so its children) to one CPU (or a set); restore on exit."""
    cpus = {cpu} if isinstance(cpu, int) else cpu
    before: dict[int, set[int]] = {}
    for tid in (int(t) for t in os.listdir("/proc/self/task")):
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            continue
        except OSError as e:
            raise OracleError(f"cannot pin to cpu {cpu}: {e}") from None
    try:
        yield
    finally:
        for tid, cpus in before.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


# The CPUs this process may use, read before anything pins it.
_AFFINITY = os.sched_getaffinity(0)


@contextmanager
def building(cfg: OracleConfig, faiss: Any = None) -> Iterator[None]:
    """An index build on ``cfg.build_threads`` threads (on as many CPUs, ``cfg.cpu`` first), then
    back to one thread on ``cfg.cpu`` for the searches."""
    if cfg.build_threads <= 1:
        yield
        return
    allowed = sorted(_AFFINITY | {cfg.cpu}, key=lambda c: (c != cfg.cpu, c))
    cpus = set(allowed[: cfg.build_threads]) | {cfg.cpu}
    with pinned(cpus):
        if faiss is not None:
            faiss.omp_set_num_threads(cfg.build_threads)
        try:
            yield
        finally:
            if faiss is not None:
                faiss.omp_set_num_threads(1)
    # Threads a build created (OpenMP workers) keep the wider set: pin everything again.
    for tid in (int(t) for t in os.listdir("/proc/self/task")):
        try:
            os.sched_setaffinity(tid, {cfg.cpu})
        except OSError:
            pass


class Judge:
    """Tie-aware recall@10 with the scorer's own functions (strict protocol).

    One difference: the scorer leaves out queries a time-boxed pass did not answer; here every
    query is searched, so a query answered with nothing counts as a miss.
    """

    def __init__(self, base: np.ndarray, queries: np.ndarray, gt_ids: np.ndarray) -> None:
        self.base, self.queries = base, queries
        self.kth = true_squared(base, queries, gt_ids[:, K - 1 : K].astype(np.int64))[:, 0]
        self.answered = np.ones(queries.shape[0], dtype=bool)  # a query with no answer scores 0

    def recall(self, ids: np.ndarray) -> float:
        return recall_strict(true_squared(self.base, self.queries, ids), self.kth, self.answered, K)


def time_queries(search_one: Callable[[np.ndarray], np.ndarray], queries: np.ndarray,
                 repeats: int = 1) -> tuple[np.ndarray, float, np.ndarray]:
    """Search every query alone, ``repeats`` passes; returns (ids (q, K), wall seconds, per-query seconds)
    of the fastest pass (on a shared machine the slower ones measure the neighbours)."""
    best: tuple[np.ndarray, float, np.ndarray] | None = None
    clock = time.perf_counter
    for _ in range(max(1, repeats)):
        ids = np.full((queries.shape[0], K), -1, dtype=np.int64)
        lat = np.empty(queries.shape[0])
        start = clock()
        for i in range(queries.shape[0]):
            t = clock()
            row = search_one(queries[i : i + 1])
            lat[i] = clock() - t
            ids[i, : len(row)] = row
        seconds = clock() - start
        if best is None or seconds < best[1]:
            best = (ids, seconds, lat)
    assert best is not None
    return best


def point(param: str, value: int | None, ids: np.ndarray, seconds: float, lat: np.ndarray | None,
          judge: Judge) -> SweepPoint:
    n = ids.shape[0]
    return SweepPoint(param=param, value=value, qps=n / seconds if seconds > 0 else 0.0, recall=judge.recall(ids),
                      p50_us=None if lat is None else float(np.percentile(lat, 50) * 1e6),
                      p99_us=None if lat is None else float(np.percentile(lat, 99) * 1e6), seconds=seconds)


def best_at_floor(points: list[SweepPoint], floor: float) -> SweepPoint | None:
    valid = [p for p in points if p.recall >= floor]
    return max(valid, key=lambda p: p.qps) if valid else None


def sweep(result: IndexResult, param: str, values: list[int], set_param: Callable[[int], None],
          search_one: Callable[[np.ndarray], np.ndarray], search_all: Callable[[np.ndarray], np.ndarray],
          queries: np.ndarray, judge: Judge, cfg: OracleConfig, log: Log) -> IndexResult:
    """Sweep one search parameter upwards (stopping at ``stop_recall``), then time the best point batched."""
    for v in values:
        set_param(v)
        ids, seconds, lat = time_queries(search_one, queries, cfg.repeats)
        p = point(param, v, ids, seconds, lat, judge)
        result.sweep.append(p)
        log(f"  {result.index} {param}={v}: {p.qps:,.0f} QPS, recall {p.recall:.4f}")
        if p.recall >= cfg.stop_recall:
            break
    result.best = best_at_floor(result.sweep, cfg.recall_floor)
    if cfg.batched and result.best is not None and result.best.value is not None:
        set_param(result.best.value)
        seconds = math.inf
        for _ in range(max(1, cfg.repeats)):
            t = time.perf_counter()
            ids = search_all(queries)
            seconds = min(seconds, time.perf_counter() - t)
        result.batched = point(param, result.best.value, ids, seconds, None, judge)
    return result


def bench_hnswlib(base: np.ndarray, queries: np.ndarray, judge: Judge, cfg: OracleConfig,
                  log: Log) -> list[IndexResult]:
    import hnswlib

    out = []
    ids = np.arange(base.shape[0])
    for m in cfg.hnsw_m:
        for efc in cfg.hnsw_ef_construction:
            index = hnswlib.Index(space="l2", dim=base.shape[1])
            t = time.perf_counter()
            index.init_index(max_elements=base.shape[0], ef_construction=efc, M=m, random_seed=100)
            with building(cfg):
                index.add_items(base, ids, num_threads=cfg.build_threads)
            index.set_num_threads(1)
            build = time.perf_counter() - t
            log(f"hnswlib M={m} efC={efc}: built in {build:.1f} s")
            index.set_ef(max(cfg.ef_search))
            index.knn_query(base[: cfg.warmup], k=K, num_threads=1)
            res = IndexResult(library="hnswlib", index=f"HNSW M={m} efC={efc}", params={"M": m, "ef_construction": efc},
                              build_seconds=build, sweep=[])
            def search(qs: np.ndarray, ix: Any = index) -> np.ndarray:
                return np.asarray(ix.knn_query(qs, k=K, num_threads=1)[0], dtype=np.int64)

            out.append(sweep(res, "ef", [e for e in cfg.ef_search if e >= K], index.set_ef, lambda q: search(q)[0],
                             search, queries, judge, cfg, log))
            del index
    return out


def bench_faiss(base: np.ndarray, queries: np.ndarray, judge: Judge, cfg: OracleConfig, log: Log) -> list[IndexResult]:
    import faiss

    faiss.omp_set_num_threads(1)
    n, d = base.shape
    out = []

    def run(index: Any, res: IndexResult, param: str, values: list[int], set_param: Callable[[int], None]) -> None:
        set_param(values[-1])
        index.search(base[: cfg.warmup], K)
        out.append(sweep(res, param, values, set_param, lambda q: index.search(q, K)[1][0],
                         lambda qs: index.search(qs, K)[1].astype(np.int64), queries, judge, cfg, log))

    if "hnsw" in cfg.faiss_indexes:
        for m in cfg.faiss_hnsw_m:
            for efc in cfg.hnsw_ef_construction:
                hnsw = faiss.IndexHNSWFlat(d, m)
                hnsw.hnsw.efConstruction = efc
                t = time.perf_counter()
                with building(cfg, faiss):
                    hnsw.add(base)
                build = time.perf_counter() - t
                log(f"faiss HNSWFlat M={m} efC={efc}: built in {build:.1f} s")
                res = IndexResult(library="faiss", index=f"HNSWFlat M={m} efC={efc}",
                                  params={"M": m, "ef_construction": efc}, build_seconds=build, sweep=[])

                def set_ef(v: int, ix: Any = hnsw) -> None:
                    ix.hnsw.efSearch = v

                run(hnsw, res, "ef", [e for e in cfg.ef_search if e >= K], set_ef)
                del hnsw

    ivf_kinds = [k for k in cfg.faiss_indexes if k != "hnsw"]
    if ivf_kinds:
        nlist = cfg.nlist or max(1, round(4 * math.sqrt(n)))
        quantizer = faiss.IndexFlatL2(d)
        rng = np.random.default_rng(42)
        sample = base[np.sort(rng.choice(n, size=min(n, cfg.train_per_list * nlist), replace=False))]
        trained = 0.0
        nprobe = [p for p in cfg.nprobe if p <= nlist] or [nlist]
        for kind in ivf_kinds:
            ivf: Any
            if kind == "ivf-flat":
                ivf = faiss.IndexIVFFlat(quantizer, d, nlist)
            else:
                ivf = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit)
            ivf.cp.niter = cfg.kmeans_iters
            t = time.perf_counter()
            with building(cfg, faiss):
                ivf.train(sample)  # the coarse k-means runs once; a later index reuses the trained quantizer
                ivf.add(base)
            build = time.perf_counter() - t
            trained = trained or build
            label = "IVF-Flat" if kind == "ivf-flat" else "IVF-SQ8"
            log(f"faiss {label} nlist={nlist}: built in {build:.1f} s")
            res = IndexResult(library="faiss", index=f"{label} nlist={nlist}",
                              params={"nlist": nlist, "train_vectors": len(sample), "kmeans_iters": cfg.kmeans_iters,
                                      "coarse_training_shared": kind != ivf_kinds[0]},
                              build_seconds=build, sweep=[])

            def set_nprobe(v: int, ix: Any = ivf) -> None:
                ix.nprobe = v

            run(ivf, res, "nprobe", nprobe, set_nprobe)
            del ivf
    return out


# ---- the reference stage, in-process ----


def stage_knobs(stage: Path) -> dict[str, str]:
    """The ``const`` knobs at the top level of the stage's ``src/db.rs`` (a folder or a reference stage's name)."""
    named = named_stage(stage)
    db = stage / "src" / "db.rs"
    text = stage_files(named).get("src/db.rs", "") if named else db.read_text() if db.is_file() else ""
    return dict(re.findall(r"^const ([A-Z_][A-Z0-9_]*): [^=]+= (.+?);", text, flags=re.M))


def build_stage_bench(stage: Path, dest: Path, profile: str = "release", log: Log = log) -> Path:
    """Compile ``reference/bench`` around ``stage``'s files; copy the binary to ``dest``.

    ``stage`` is a folder, or names a reference stage that is none (a variant of
    ``reference/variants.yaml``: ``reference/stage05c-...`` or the bare name), which is then
    materialized under the target dir. One target dir under the user cache serves every stage
    (dependencies stay built); a file lock keeps two concurrent builds of different stages from
    swapping the binary (or a materialized stage) under each other.
    """
    named = named_stage(stage)
    if named is None and not (stage / "src" / "db.rs").is_file():
        raise OracleError(f"{stage}: no src/db.rs (a stage folder holds src/db.rs, src/distance.rs, src/db/*.rs) "
                          "and no reference stage of that name")
    if shutil.which("cargo") is None:
        raise OracleError("cargo is not installed: the stage bench needs a Rust toolchain")
    target = cargo_target_cache() / "oracle-bench"
    target.mkdir(parents=True, exist_ok=True)
    log(f"building the stage bench for {stage.name} ({profile} profile)")
    t = time.perf_counter()
    with (target / ".oracle-build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # A stable folder per stage, rewritten only where it changed: cargo rebuilds nothing for it.
        folder = materialize(named, target / "stages" / named.name) if named else stage
        env = os.environ | {"CARGO_TARGET_DIR": str(target), "STAIRCASE_STAGE_DIR": str(folder.resolve()),
                            "STAIRCASE_SKELETON_DIR": str(SKELETON)}
        cmd = ["cargo", "build", "--profile", profile, "--manifest-path", str(BENCH_CRATE / "Cargo.toml")]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise OracleError(f"the stage bench for {stage} did not build:\n{done.stderr[-4000:]}")
        binary = dest / "staircase-oracle-bench"
        shutil.copy2(target / ("debug" if profile == "dev" else profile) / "staircase-oracle-bench", binary)
    log(f"built in {time.perf_counter() - t:.1f} s")
    return binary


def bench_stage(ds: Dataset, judge: Judge, n_queries: int, cfg: OracleConfig, log: Log) -> IndexResult:
    with tempfile.TemporaryDirectory(prefix="oracle-stage-") as tmp:
        binary = build_stage_bench(cfg.stage_dir, Path(tmp), cfg.cargo_profile, log)
        ids_path = Path(tmp) / "ids.bin"
        cmd = [str(binary), "--base", str(ds.path("base")), "--queries", str(ds.path("queries")), "--out",
               str(ids_path), "--k", str(K), "--batch-size", str(cfg.batch_size), "--max-queries", str(n_queries),
               "--warmup", str(cfg.warmup), "--repeats", str(cfg.repeats)]
        log(f"stage {cfg.stage_dir.name}: loading, building and searching in-process")
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise OracleError(f"the stage bench failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        summary = json.loads(done.stdout)
        ids = np.fromfile(ids_path, dtype="<i8").reshape(n_queries, K)
    p = SweepPoint(param="consts", value=None, qps=summary["qps"], recall=judge.recall(ids), p50_us=summary["p50_us"],
                   p99_us=summary["p99_us"], seconds=summary["search_seconds"])
    log(f"  {cfg.stage_dir.name}: {p.qps:,.0f} QPS, recall {p.recall:.4f} (build {summary['build_seconds']:.1f} s)")
    res = IndexResult(library="stage", index=cfg.stage_dir.name, params=stage_knobs(cfg.stage_dir),
                      build_seconds=summary["build_seconds"], load_seconds=summary["load_seconds"], sweep=[p])
    res.best = best_at_floor(res.sweep, cfg.recall_floor)
    return res


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def run_oracle(ds: Dataset, cfg: OracleConfig | None = None, log: Log = log) -> OracleReport:
    """Measure the libraries and the stage ``cfg`` names on ``ds``'s hidden queries, on one CPU."""
    cfg = cfg or OracleConfig()
    started = time.perf_counter()
    missing = [lib for lib, dist in (("hnswlib", "hnswlib"), ("faiss", "faiss-cpu"))
               if lib in cfg.libraries and _version(dist) == "missing"]
    if missing:
        raise OracleError(f"not installed: {', '.join(missing)} (pip install 'staircase[oracle]')")
    base_file = ds.base()
    queries = np.ascontiguousarray(ds.queries("test")[: cfg.max_queries], dtype=np.float32)
    gt_ids, _ = ds.groundtruth("test")
    gt_ids = np.asarray(gt_ids[: queries.shape[0]])
    report = OracleReport(
        dataset=ds.name, n_base=int(base_file.shape[0]), dim=int(base_file.shape[1]), queries=int(queries.shape[0]),
        recall_floor=cfg.recall_floor, cpu=cfg.cpu, cpu_model=cpu_model(),
        versions={"hnswlib": _version("hnswlib"), "faiss-cpu": _version("faiss-cpu"), "numpy": np.__version__},
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        notes=["single thread, every thread of the process pinned to the CPU named; queries searched one at a time",
               f"index builds of hnswlib/faiss on {cfg.build_threads} thread(s); the stage builds on one",
               "hnswlib/faiss are called from Python once per query (a few µs of call overhead each); the 'batched' "
               "figure (all queries in one call, one thread) has none",
               "the stage runs in-process (no HTTP): VectorDB::bulk_insert in batches, its build timed as the first "
               "search, then each query through VectorDB::search"])
    if "stage" in cfg.libraries:
        report.stage_dir = str(cfg.stage_dir)
        report.stage_knobs = stage_knobs(cfg.stage_dir)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # faiss's BLAS, when imported from here on
    with pinned(cfg.cpu):
        base = np.ascontiguousarray(base_file, dtype=np.float32) if {"hnswlib", "faiss"} & set(cfg.libraries) else \
            base_file
        judge = Judge(base, queries, gt_ids)
        if "hnswlib" in cfg.libraries:
            report.indexes += bench_hnswlib(base, queries, judge, cfg, log)
        if "faiss" in cfg.libraries:
            report.indexes += bench_faiss(base, queries, judge, cfg, log)
        if "stage" in cfg.libraries:
            report.indexes.append(bench_stage(ds, judge, queries.shape[0], cfg, log))
    for lib in cfg.libraries:
        cands = [LibraryBest(library=r.library, index=r.index, point=r.best)
                 for r in report.indexes if r.library == lib and r.best is not None]
        report.best[lib] = max(cands, key=lambda b: b.point.qps) if cands else None
    hb, sb = report.best.get("hnswlib"), report.best.get("stage")
    if hb and sb and hb.point.qps > 0:
        report.stage_vs_hnswlib = sb.point.qps / hb.point.qps
    report.seconds = time.perf_counter() - started
    return report


# ---- the command ----


def _ints(text: str, option: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise typer.BadParameter(f"{option}: comma-separated integers, got {text!r}") from None
    if not values or values[0] <= 0:
        raise typer.BadParameter(f"{option}: positive integers, got {text!r}")
    return values


def _choices(text: str, option: str, allowed: tuple[str, ...]) -> list[Any]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise typer.BadParameter(f"{option}: choose among {', '.join(allowed)} (got {text!r})")
    return values


def oracle_command(
    dataset: Annotated[str | None, typer.Option(help="Dataset name (hidden queries + ground truth are used).")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Data directory (default: $STAIRCASE_DATA or ~/.staircase/data).")] = None,
    libraries: Annotated[str, typer.Option(help="Comma-separated: hnswlib,faiss,stage.")] = "hnswlib,faiss,stage",
    floor: Annotated[float, typer.Option(help="Recall@10 floor for the best-QPS figures.")] = 0.95,
    cpu: Annotated[int, typer.Option(help="The one CPU everything is pinned to.")] = 0,
    build_threads: Annotated[int, typer.Option(min=1, help="Threads for the libraries' index builds only "
                                               "(searches stay on one thread on --cpu).")] = 1,
    max_queries: Annotated[int | None, typer.Option(min=1, help="Only the first N hidden queries.")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed passes per point; the fastest counts.")] = 3,
    stage: Annotated[Path | None, typer.Option(help="Stage folder or reference stage name, a variant included "
                                               "(default: the final base stage).")] = None,
    hnsw_m: Annotated[str, typer.Option(help="hnswlib M values.")] = "16,32",
    ef_construction: Annotated[str, typer.Option(help="ef_construction values (hnswlib and faiss HNSW).")] = "200",
    ef: Annotated[str, typer.Option(help="ef_search sweep.")] = ",".join(map(str, DEFAULT_EF)),
    faiss_indexes: Annotated[str, typer.Option(help="Comma-separated: hnsw,ivf-flat,ivf-sq8.")] = (
        "hnsw,ivf-flat,ivf-sq8"),
    faiss_hnsw_m: Annotated[str, typer.Option(help="faiss HNSW M values.")] = "32",
    nlist: Annotated[int | None, typer.Option(min=1, help="IVF lists (default 4 sqrt(n)).")] = None,
    nprobe: Annotated[str, typer.Option(help="nprobe sweep.")] = ",".join(map(str, DEFAULT_NPROBE)),
    stop_recall: Annotated[float, typer.Option(help="A sweep stops once it reaches this recall.")] = 0.999,
    json: Json = False,
) -> None:
    """Measure hnswlib, faiss and a reference stage on one CPU: best QPS at the recall floor, full sweeps."""
    if dataset is None:
        have = ", ".join(DatasetStore(data_dir).names()) or "none"
        fail(f"--dataset is required (available in {DatasetStore(data_dir).data_dir}: {have})")
    try:
        ds = DatasetStore(data_dir).get(dataset)
        cfg = OracleConfig(
            libraries=_choices(libraries, "--libraries", ("hnswlib", "faiss", "stage")), recall_floor=floor, cpu=cpu,
            build_threads=build_threads, max_queries=max_queries, repeats=repeats, hnsw_m=_ints(hnsw_m, "--hnsw-m"),
            hnsw_ef_construction=_ints(ef_construction, "--ef-construction"), ef_search=_ints(ef, "--ef"),
            faiss_indexes=_choices(faiss_indexes, "--faiss-indexes", ("hnsw", "ivf-flat", "ivf-sq8")),
            faiss_hnsw_m=_ints(faiss_hnsw_m, "--faiss-hnsw-m"), nlist=nlist, nprobe=_ints(nprobe, "--nprobe"),
            stop_recall=stop_recall, **({"stage_dir": stage} if stage else {}))
        if cpu not in os.sched_getaffinity(0):
            fail(f"--cpu {cpu} is not available to this process (allowed: {sorted(os.sched_getaffinity(0))})")
        report = run_oracle(ds, cfg, log)
    except (DatasetError, OracleError) as e:
        fail(str(e))
    if json:
        emit_json(report)
    else:
        show(report)


def _us(v: float | None) -> str:
    return "" if v is None else f"{v:,.0f}"


def _setting(p: SweepPoint) -> str:
    return p.param if p.value is None else f"{p.param}={p.value}"


def show(report: OracleReport) -> None:
    t = Table(title=(f"oracle bench: {report.dataset} ({report.n_base:,} x {report.dim}), {report.queries:,} hidden "
                     f"queries, cpu {report.cpu} ({report.cpu_model}), 1 thread, one query at a time"),
              title_justify="left")
    for col in ("index", "build s", "setting", "QPS", "recall@10", "p50 µs", "p99 µs", ""):
        t.add_column(col, justify="left" if col in ("index", "setting", "") else "right")
    for r in report.indexes:
        for i, p in enumerate(r.sweep):
            mark = "[green]best[/]" if p == r.best else ("" if p.recall >= report.recall_floor else "[red]✗[/]")
            t.add_row(f"{r.library}: {r.index}" if i == 0 else "", f"{r.build_seconds:.1f}" if i == 0 else "",
                      _setting(p), f"{p.qps:,.0f}", f"{p.recall:.4f}", _us(p.p50_us), _us(p.p99_us), mark)
        if r.batched is not None:
            bp = r.batched
            t.add_row("", "", f"{_setting(bp)} batched", f"{bp.qps:,.0f}", f"{bp.recall:.4f}", "", "", "")
        t.add_section()
    err.print(t)
    s = Table(title=f"best QPS at recall@10 >= {report.recall_floor} (batched: all queries in one call, one thread)",
              title_justify="left")
    for col in ("library", "index", "setting", "QPS", "recall@10", "batched QPS"):
        s.add_column(col, justify="right" if "QPS" in col or col == "recall@10" else "left")
    for lib, b in report.best.items():
        if b is None:
            s.add_row(lib, "[red]none reaches the floor[/]", "", "", "", "")
            continue
        batched = next((r.batched for r in report.indexes if r.index == b.index and r.library == lib), None)
        s.add_row(lib, b.index, _setting(b.point), f"{b.point.qps:,.0f}", f"{b.point.recall:.4f}",
                  "-" if batched is None else f"{batched.qps:,.0f}")
    err.print(s)
    if report.stage_vs_hnswlib is not None:
        err.print(f"stage / hnswlib (best QPS at the floor): {report.stage_vs_hnswlib:.3f}")
    if report.stage_knobs:
        err.print("stage knobs: " + ", ".join(f"{k}={v}" for k, v in report.stage_knobs.items()), highlight=False)
