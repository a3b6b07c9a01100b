"""``staircase datasets``: list, inspect, generate and fetch datasets."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from harness.cli_options import Json
from harness.console import emit_json, err, fail, log
from harness.datasets.download import DownloadError
from harness.datasets.sources import SIFT_URL, fetch_sift, generate_dataset
from harness.datasets.store import DatasetError, DatasetStore

app = typer.Typer(help="Datasets: generated SIFT-like sets, SIFT-1M, ann-benchmarks HDF5, KCORES folders.",
                  no_args_is_help=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: $STAIRCASE_DATA or ~/.staircase/data)."),
]


def _gt_progress(progress: Progress) -> Callable[[str, int, int], None]:
    """A ground-truth progress callback that shows one bar per query split."""
    tasks: dict[str, TaskID] = {}

    def update(split: str, done: int, total: int) -> None:
        if split not in tasks:
            tasks[split] = progress.add_task(f"ground truth: {split}", total=total)
        progress.update(tasks[split], completed=done)

    return update


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@app.command("list")
def list_(data_dir: DataDir = None, json: Json = False) -> None:
    """List the datasets in the data directory."""
    store = DatasetStore(data_dir)
    rows = [store.get(n).manifest for n in store.names()]
    if json:
        emit_json([{"name": m.name, "kind": m.kind, "dim": m.dim, "n_base": m.n_base,
                    "n_queries": m.n_queries, "n_dev_queries": m.n_dev_queries} for m in rows])
        return
    if not rows:
        log(f"no datasets in {store.data_dir}; try `staircase datasets generate gen-20k --n 20000`")
        return
    t = Table("name", "kind", "dim", "base", "hidden queries", "dev queries", title=str(store.data_dir))
    for m in rows:
        t.add_row(m.name, m.kind, str(m.dim), f"{m.n_base:,}", f"{m.n_queries:,}", f"{m.n_dev_queries:,}")
    err.print(t)


@app.command()
def info(
    name: str,
    data_dir: DataDir = None,
    verify: Annotated[bool, typer.Option(help="Recompute every file's checksum.")] = False,
    json: Json = False,
) -> None:
    """Print a dataset's manifest (sizes, dimension, source, checksums)."""
    try:
        ds = DatasetStore(data_dir).get(name)
    except DatasetError as e:
        fail(str(e))
    problems = ds.verify() if verify else []
    out = ds.manifest.model_dump(mode="json") | {"path": str(ds.root)}
    if verify:
        out["verified"] = not problems
        out["problems"] = problems
    if json:
        emit_json(out)
    else:
        err.print_json(data=out)
    if problems:
        raise typer.Exit(1)


@app.command()
def generate(
    name: str,
    n: Annotated[int, typer.Option("--n", help="Base vectors.")] = 20_000,
    queries: Annotated[int, typer.Option(help="Hidden test queries.")] = 1_000,
    dev_queries: Annotated[int, typer.Option(help="Dev queries for the agent.")] = 200,
    dim: Annotated[int, typer.Option(help="Dimension.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same dataset.")] = 0,
    data_dir: DataDir = None,
    json: Json = False,
) -> None:
    """Generate a deterministic SIFT-like dataset with exact top-100 ground truth (cached)."""
    t0 = time.monotonic()
    store = DatasetStore(data_dir)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                      console=err, transient=True) as progress:
            ds, reused = generate_dataset(store, name, n=n, queries=queries, dev_queries=dev_queries,
                                          dim=dim, seed=seed, log=log, gt_progress=_gt_progress(progress))
    except DatasetError as e:
        fail(str(e))
    warnings = _scoring_warnings(ds.manifest.n_queries)
    for w in warnings:
        log(f"warning: {w}")
    out = {"name": ds.name, "path": str(ds.root), "reused": reused,
           "seconds": round(time.monotonic() - t0, 2), "peak_rss_mib": round(_peak_rss_mib(), 1),
           "n_base": ds.manifest.n_base, "n_queries": ds.manifest.n_queries,
           "n_dev_queries": ds.manifest.n_dev_queries, "dim": ds.manifest.dim, "warnings": warnings}
    if json:
        emit_json(out)
    else:
        verb = "reused" if reused else "generated"
        log(f"{verb} {ds.name} at {ds.root} in {out['seconds']} s (peak RSS {out['peak_rss_mib']} MiB)")


def _scoring_warnings(n_queries: int) -> list[str]:
    """What the scorer, at its default settings, cannot check on a hidden set this small."""
    from harness.config import ScorerConfig
    from harness.scorer.evaluate import MIN_TIMED_PASS_S, small_hidden_set

    cfg = ScorerConfig()
    warning = small_hidden_set(n_queries, cfg.passes, cfg.fresh_fraction, MIN_TIMED_PASS_S)
    return [warning] if warning else []


@app.command()
def fetch(
    name: Annotated[str, typer.Argument(help="Only sift-1m can be fetched.")] = "sift-1m",
    from_: Annotated[Path | None, typer.Option("--from", help=(
        "Use a file or folder already on disk: the texmex archive, its unpacked folder, "
        "an ann-benchmarks .hdf5 file, or a KCORES vector-db-bench data folder."))] = None,
    as_: Annotated[str | None, typer.Option("--as", help="Name of the dataset to create.")] = None,
    url: Annotated[str, typer.Option(help="Where to download the texmex archive from.")] = SIFT_URL,
    dev_queries: Annotated[int, typer.Option(help="Dev queries for the agent.")] = 1000,
    data_dir: DataDir = None,
    json: Json = False,
) -> None:
    """Download SIFT-1M (resumable, size and MD5 checked) and convert it into a dataset."""
    if name != "sift-1m":
        fail(f"unknown dataset {name!r} to fetch: only sift-1m is downloadable (use --from for files on disk)")
    t0 = time.monotonic()
    store = DatasetStore(data_dir)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                      console=err, transient=True) as progress:
            dl = progress.add_task("download", total=None, visible=from_ is None)

            def on_bytes(done: int, total: int | None) -> None:
                progress.update(dl, completed=done, total=total)

            ds = fetch_sift(store, as_ or name, url=url, from_path=from_, dev_queries=dev_queries, log=log,
                            download_progress=on_bytes, gt_progress=_gt_progress(progress))
    except (DatasetError, DownloadError, ValueError) as e:
        fail(str(e))
    out = {"name": ds.name, "path": str(ds.root), "kind": ds.manifest.kind, "source": ds.manifest.source,
           "seconds": round(time.monotonic() - t0, 2)}
    if json:
        emit_json(out)
    else:
        log(f"dataset {ds.name} ready at {ds.root} ({ds.manifest.n_base:,} base vectors)")
