"""``staircase bench oracle``: hnswlib and faiss sweeps, the in-process stage bench, the report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from harness.bench.oracle import (
    Judge,
    OracleConfig,
    OracleError,
    SweepPoint,
    best_at_floor,
    build_stage_bench,
    final_stage,
    pinned,
    run_oracle,
    stage_knobs,
)
from harness.datasets.sources import generate_dataset
from harness.datasets.store import DatasetStore
from harness.paths import REFERENCE
from harness.scorer.evaluate import judge_pass, recall_overlap

needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")
CPU = min(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def oracle_dataset(tmp_path_factory):
    """5,000 SIFT-like vectors, 200 hidden queries."""
    store = DatasetStore(tmp_path_factory.mktemp("data"))
    ds, _ = generate_dataset(store, "oracle-5k", n=5000, queries=200, dev_queries=10, seed=11)
    return ds


def scorer_recall(ds, ids: np.ndarray) -> float:
    """Recall as the scorer judges a pass (strict protocol)."""
    base, queries = ds.base(), ds.queries("test")[: ids.shape[0]]
    gt_ids, gt_dists = ds.groundtruth("test")
    j = judge_pass(ids, np.full(ids.shape, np.nan), base, queries, gt_ids[: ids.shape[0]],
                   gt_dists[: ids.shape[0]], k=10, protocol="strict", rtol=1e-3)
    assert j.recall is not None
    return j.recall


def test_judge_is_the_scorers_recall(oracle_dataset):
    ds = oracle_dataset
    base, queries = np.ascontiguousarray(ds.base()), ds.queries("test")
    gt_ids, _ = ds.groundtruth("test")
    judge = Judge(base, queries, gt_ids)
    exact = gt_ids[:, :10].astype(np.int64)
    assert judge.recall(exact) == pytest.approx(1.0)
    # Half the answers replaced by random ids: both ways agree exactly.
    rng = np.random.default_rng(0)
    damaged = exact.copy()
    damaged[:, 5:] = rng.integers(0, base.shape[0], size=(len(queries), 5))
    assert judge.recall(damaged) == pytest.approx(scorer_recall(ds, damaged), abs=1e-12)
    assert 0.5 <= judge.recall(damaged) < 0.6
    # A query left unanswered: the scorer's pass leaves it out (a timed-out request), the oracle,
    # which searches every query, counts it as a miss.
    damaged[3] = -1
    n = len(queries)
    assert judge.recall(damaged) == pytest.approx(scorer_recall(ds, damaged) * (n - 1) / n, abs=1e-12)


def test_best_at_floor_is_the_fastest_valid_point():
    pts = [SweepPoint(param="ef", value=v, qps=q, recall=r, p50_us=1, p99_us=1, seconds=1)
           for v, q, r in ((10, 900, 0.90), (20, 700, 0.951), (40, 800, 0.97), (80, 300, 0.99))]
    best = best_at_floor(pts, 0.95)
    assert best is not None and best.value == 40
    assert best_at_floor(pts, 0.999) is None


def test_pinned_pins_and_restores():
    before = os.sched_getaffinity(0)
    with pinned(CPU):
        assert os.sched_getaffinity(0) == {CPU}
    assert os.sched_getaffinity(0) == before


@pytest.mark.slow
def test_hnswlib_and_faiss_sweeps(oracle_dataset):
    pytest.importorskip("hnswlib")
    pytest.importorskip("faiss")
    cfg = OracleConfig(libraries=["hnswlib", "faiss"], cpu=CPU, repeats=1, stop_recall=1.1, hnsw_m=[16],
                       hnsw_ef_construction=[100], ef_search=[10, 32, 128, 400], faiss_hnsw_m=[16],
                       nprobe=[1, 8, 64, 200])
    report = run_oracle(oracle_dataset, cfg, log=lambda _m: None)
    assert report.queries == 200 and report.n_base == 5000 and report.cpu == CPU and report.threads == 1
    assert [r.index for r in report.indexes] == ["HNSW M=16 efC=100", "HNSWFlat M=16 efC=100", "IVF-Flat nlist=283",
                                                 "IVF-SQ8 nlist=283"]
    for r in report.indexes:
        recalls = [p.recall for p in r.sweep]
        assert len(recalls) == 4 and max(recalls) >= 0.99, (r.index, recalls)
        assert recalls[0] < recalls[-1], (r.index, recalls)
        assert r.build_seconds > 0 and all(p.qps > 0 and p.p99_us >= p.p50_us > 0 for p in r.sweep)
        assert r.best is not None and r.best.recall >= cfg.recall_floor
        assert r.best.qps == max(p.qps for p in r.sweep if p.recall >= cfg.recall_floor)
        assert r.batched is not None and r.batched.value == r.best.value and r.batched.p50_us is None
        assert r.batched.recall == pytest.approx(r.best.recall, abs=0.01)
    for lib in ("hnswlib", "faiss"):
        b = report.best[lib]
        assert b is not None and b.point.recall >= cfg.recall_floor
        assert b.point.qps == max(r.best.qps for r in report.indexes if r.library == lib and r.best)
    assert report.stage_vs_hnswlib is None  # no stage measured


@pytest.mark.rust
@pytest.mark.slow
@needs_cargo
def test_stage_bench_recall_matches_the_scorer(oracle_dataset, tmp_path):
    ds = oracle_dataset
    stage = REFERENCE / "stage05-two-level"
    # The default is the last base stage (stage06 today); this test pins stage05, an earlier one.
    assert OracleConfig().stage_dir == final_stage() and final_stage().name >= stage.name
    assert stage_knobs(stage)["NPROBE"] == "64"
    binary = build_stage_bench(stage, tmp_path, profile="quick", log=lambda _m: None)
    ids_path = tmp_path / "ids.bin"
    done = subprocess.run([str(binary), "--base", str(ds.path("base")), "--queries", str(ds.path("queries")),
                           "--out", str(ids_path), "--max-queries", "150", "--warmup", "5"],
                          capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    assert summary["n_base"] == 5000 and summary["queries"] == 150 and summary["dim"] == 128
    assert summary["qps"] > 0 and summary["build_seconds"] > 0
    ids = np.fromfile(ids_path, dtype="<i8").reshape(150, 10)
    recall = scorer_recall(ds, ids)
    assert recall > 0.95
    gt_ids, _ = ds.groundtruth("test")
    assert recall_overlap(ids, gt_ids[:150], np.ones(150, bool), 10) == pytest.approx(recall, abs=0.02)

    # Through run_oracle: the same deterministic stage gives the same recall on those queries.
    cfg = OracleConfig(libraries=["stage"], cpu=CPU, repeats=1, max_queries=150, cargo_profile="quick",
                       stage_dir=stage)
    report = run_oracle(ds, cfg, log=lambda _m: None)
    (res,) = report.indexes
    assert res.library == "stage" and res.index == "stage05-two-level" and res.params["RERANK"] == "40"
    assert res.sweep[0].recall == pytest.approx(recall, abs=1e-12)
    assert report.best["stage"] is not None and report.stage_knobs["NPROBE"] == "64"

    # Another stage through the option: the exact scan finds every neighbour.
    brute = run_oracle(ds, cfg.model_copy(update={"stage_dir": REFERENCE / "stage01-brute-force"}),
                       log=lambda _m: None)
    assert brute.indexes[0].index == "stage01-brute-force" and brute.indexes[0].sweep[0].recall == 1.0

    # A tuning variant has no folder: named (reference/NAME), it is materialized, then built.
    variant = REFERENCE / "stage05c-lists3-prune-1.8"
    tuned = run_oracle(ds, cfg.model_copy(update={"stage_dir": variant}), log=lambda _m: None)
    assert tuned.indexes[0].index == variant.name and tuned.stage_knobs["PRUNE_RATIO"] == "1.8"
    assert 0.8 < tuned.indexes[0].sweep[0].recall <= 1.0


def test_stage_knobs_of_a_folder_and_of_a_named_variant(tmp_path):
    assert final_stage() == REFERENCE / "stage06-fused-scan"
    assert stage_knobs(final_stage())["PRUNE_RATIO"] == "1.6"
    variant = REFERENCE / "stage05c-lists3-prune-1.8"
    assert not variant.exists()
    for named in (variant, Path(variant.name)):
        knobs = stage_knobs(named)
        assert knobs["PRUNE_RATIO"] == "1.8" and knobs["LISTS_PER_SQRT_N"] == "3.0" and knobs["NPROBE"] == "64"
    with pytest.raises(OracleError, match="no reference stage of that name"):
        build_stage_bench(tmp_path / "stage05c-lists3-prune-1.8", tmp_path, log=lambda _m: None)


@pytest.mark.slow
def test_cli_prints_one_json_value(oracle_dataset):
    pytest.importorskip("hnswlib")
    from harness.bench.oracle import oracle_command

    app = typer.Typer()
    app.command("oracle")(oracle_command)
    app.command("other")(lambda: None)  # two commands, so the subcommand name is parsed as in `staircase bench`
    args = ["oracle", "--dataset", oracle_dataset.name, "--data-dir", str(oracle_dataset.root.parent),
            "--libraries", "hnswlib", "--hnsw-m", "8", "--ef-construction", "64", "--ef", "16,128",
            "--repeats", "1", "--max-queries", "50", "--cpu", str(CPU), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["queries"] == 50 and report["cpu"] == CPU and report["best"]["hnswlib"]["point"]["recall"] >= 0.95
    assert [p["value"] for p in report["indexes"][0]["sweep"]] == [16, 128]
    bad = CliRunner().invoke(app, ["oracle", "--data-dir", str(oracle_dataset.root.parent)])
    assert bad.exit_code == 2 and "--dataset is required" in bad.output
