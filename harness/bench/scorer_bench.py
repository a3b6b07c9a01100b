"""``staircase bench scorer``: how far the referee itself can be trusted, in four measured rows.

1. ceiling: the load generator against a server that does no work, alternated with ``wrk`` on
   the same endpoint, request and CPU split. If the generator were the bottleneck, every fast
   submission would be capped by it.
2. overhead: of a scoring's wall time, what is neither compiling, loading and indexing, nor the
   timed passes (preparing the tree, starting containers, writing the plan, judging, teardown).
3. noise: the same commit rescored N times (no cache); max/min of the median QPS.
4. brute force: an exact scan's QPS and recall (1.0 up to ties).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from harness.datasets.formats import write_vecs
from harness.paths import REPO_ROOT
from harness.scorer.base import Scorer
from harness.scorer.record import Score
from harness.scorer.runner import _free_port, build_loadgen_locally

Log = Callable[[str], None]

# The same request `loadgen query` sends, as wrk sends it (loadgen/bench/search.lua).
WRK_SCRIPT = REPO_ROOT / "loadgen" / "bench" / "search.lua"


class Row(BaseModel):
    name: str
    figure: float | None
    unit: str
    target: str
    met: bool | None
    detail: str


class CeilingRound(BaseModel):
    loadgen_rps: float
    wrk_rps: float


class ScoringSplit(BaseModel):
    """One scoring's wall time split into the submission's work and the scorer's overhead."""

    total_s: float
    build_s: float
    load_s: float
    warmup_s: float
    passes_s: float
    overhead_s: float
    overhead_fraction: float
    qps: float | None
    qps_spread: float | None  # max/min of the scoring's own passes
    recall: float | None
    status: str


class ScorerBenchReport(BaseModel):
    dataset: str
    n_base: int
    cpu_model: str
    server_cpus: str
    loadgen_cpus: str
    runner: str
    submission: str
    rows: list[Row] = Field(default_factory=list)
    ceiling_rounds: list[CeilingRound] = Field(default_factory=list)
    scorings: list[ScoringSplit] = Field(default_factory=list)
    brute_force: Score | None = None


def split(score: Score) -> ScoringSplit:
    ph = score.phase_seconds
    passes = sum(p.elapsed_s for p in score.passes)
    total = ph.get("total", 0.0)
    work = ph.get("build", 0.0) + ph.get("load", 0.0) + ph.get("warmup", 0.0) + passes
    overhead = max(0.0, total - work)
    return ScoringSplit(total_s=total, build_s=ph.get("build", 0.0), load_s=ph.get("load", 0.0),
                        warmup_s=ph.get("warmup", 0.0), passes_s=round(passes, 3), overhead_s=round(overhead, 3),
                        overhead_fraction=round(overhead / total, 4) if total else 0.0, qps=score.qps,
                        qps_spread=score.qps_spread, recall=score.recall, status=score.status.value)


# -- 1. the load generator's ceiling -------------------------------------------------------------

def measure_ceiling(*, server_cpus: str, loadgen_cpus: str, concurrency: int, rounds: int, seconds: float,
                    log: Log) -> list[CeilingRound]:
    """Alternate `loadgen query` and wrk against `loadgen trivial-server`, ``rounds`` times each."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    loadgen = build_loadgen_locally()
    out: list[CeilingRound] = []
    with tempfile.TemporaryDirectory(prefix="staircase-ceiling-") as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        write_vecs(work / "queries.fvecs", rng.integers(0, 128, (10_000, 128)).astype(np.float32))
        # More requests than fit in the time box: the pass ends on its time limit.
        np.tile(rng.permutation(10_000), 200)[None, :].astype("<u4").tofile(work / "orders.u32")
        port = _free_port()
        server = subprocess.Popen(["taskset", "-c", server_cpus, str(loadgen), "trivial-server", "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            for r in range(rounds):
                subprocess.run(
                    ["taskset", "-c", loadgen_cpus, str(loadgen), "query", "--addr", f"127.0.0.1:{port}",
                     "--queries", str(work / "queries.fvecs"), "--orders", str(work / "orders.u32"), "--passes", "1",
                     "--concurrency", str(concurrency), "--top-k", "10", "--max-id", "1000000",
                     "--pass-time-limit-s", str(seconds), "--ids-out", str(work / "ids.i64"),
                     "--dists-out", str(work / "dists.f32"), "--out", str(work / "stats.json")],
                    check=True, capture_output=True)
                stats = _json(work / "stats.json")
                if any(stats.get("error_counts", {}).values()):
                    raise RuntimeError(f"the load generator saw errors on the trivial server: {stats['error_counts']}")
                lg = float(stats["passes"][0]["qps"])
                res = subprocess.run(["taskset", "-c", loadgen_cpus, wrk, "-t1", f"-c{concurrency}",
                                      f"-d{seconds:g}s", "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}"],
                                     check=True, capture_output=True, text=True)
                if re.search(r"Non-2xx|Socket errors", res.stdout):
                    raise RuntimeError(f"wrk saw errors on the trivial server:\n{res.stdout}")
                m = re.search(r"Requests/sec:\s+([\d.]+)", res.stdout)
                if m is None:
                    raise RuntimeError(f"cannot read wrk's output:\n{res.stdout}")
                out.append(CeilingRound(loadgen_rps=round(lg, 1), wrk_rps=float(m.group(1))))
                log(f"ceiling round {r + 1}/{rounds}: loadgen {lg:,.0f} req/s, wrk {float(m.group(1)):,.0f} req/s")
        finally:
            server.kill()
            server.wait()
    return out


def ceiling_row(rounds: list[CeilingRound]) -> Row:
    lg = statistics.median(r.loadgen_rps for r in rounds)
    wrk = statistics.median(r.wrk_rps for r in rounds)
    ratio = lg / wrk
    return Row(name="load generator ceiling", figure=round(ratio, 3), unit="x wrk", target=">= 1.0",
               met=ratio >= 1.0,
               detail=f"median of {len(rounds)} alternating rounds: loadgen {lg:,.0f} req/s, wrk {wrk:,.0f} req/s")


# -- 2-4. scorings -------------------------------------------------------------------------------

def overhead_row(splits: list[ScoringSplit]) -> Row:
    frac = statistics.median(s.overhead_fraction for s in splits)
    mid = sorted(splits, key=lambda s: s.overhead_fraction)[len(splits) // 2]
    return Row(name="scorer overhead", figure=round(100 * frac, 2), unit="% of wall", target="<= 10%",
               met=frac <= 0.10,
               detail=(f"median of {len(splits)} scorings; e.g. wall {mid.total_s:.1f} s = build {mid.build_s:.1f} "
                       f"+ load {mid.load_s:.1f} + warm-up/index {mid.warmup_s:.1f} + passes {mid.passes_s:.1f} "
                       f"+ overhead {mid.overhead_s:.1f}"))


def noise_row(splits: list[ScoringSplit]) -> Row:
    qps = [s.qps for s in splits if s.qps]
    if len(qps) < 2:
        return Row(name="noise (rescorings)", figure=None, unit="max/min", target="<= 1.05", met=False,
                   detail="fewer than two scorings produced a QPS: " + ", ".join(s.status for s in splits))
    ratio = max(qps) / min(qps)
    return Row(name="noise (rescorings)", figure=round(ratio, 4), unit="max/min QPS", target="<= 1.05",
               met=ratio <= 1.05, detail=f"{len(qps)} scorings, QPS " + ", ".join(f"{q:,.0f}" for q in qps)
               + "; within each, passes max/min " + ", ".join(f"{s.qps_spread:.2f}" for s in splits if s.qps_spread))


def brute_force_row(score: Score) -> Row:
    ok = score.recall is not None and score.recall >= 0.9999
    return Row(name="brute force", figure=score.qps, unit="QPS", target="recall 1.0 (up to ties)", met=ok,
               detail=f"{score.status.value}: {score.reason}; {score.queries} queries")


def rescore(scorer: Scorer, path: Path, n: int, log: Log) -> list[ScoringSplit]:
    splits = []
    for i in range(n):
        s = scorer.score(path, use_cache=False)
        splits.append(split(s))
        log(f"scoring {i + 1}/{n}: {s.status.value}, {s.reason}; wall {splits[-1].total_s:.1f} s, "
            f"overhead {splits[-1].overhead_s:.1f} s")
    return splits


# -- plumbing -------------------------------------------------------------------------------------

def _wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the trivial server did not listen on port {port}")


def _json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))
