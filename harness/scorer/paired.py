"""Paired, interleaved rounds: several servers measured on the same CPUs, turn by turn.

A machine's speed drifts by tens of percent within minutes (other tenants, frequency, memory
bandwidth), more than most steps of a staircase. Measured alone, a QPS carries that drift; measured
in rounds interleaved with a fixed build on the same cores, the *ratio* of the two cancels most of
it ("duet benchmarking", Bulej et al., ICPE 2020; randomized multiple interleaved trials). Every
contender here is built, started, loaded and warmed before the rounds; in each round every
contender gets one short timed pass over the same slice of hidden queries, in a random order,
while the others idle. Per round the QPS ratio; the figure is the median ratio with a bootstrap
95% interval. Every answer of every round is judged for recall like a scoring's.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.config import ScorerConfig
from harness.datasets.formats import atomic_write_bytes, write_vecs
from harness.datasets.store import Dataset
from harness.scorer.evaluate import judge_pass
from harness.scorer.record import Paired
from harness.scorer.runner import Driver, Server

BOOTSTRAP_SAMPLES = 4000


@dataclass
class Contender:
    """A server ready for rounds: built, started, loaded and warmed."""

    label: str  # "submission", "anchor", "iteration 7", a path
    tree: str
    server: Server
    qps_hint: float  # what it measured before: sizes a round's slice of queries
    driver: Driver | None = None


@dataclass
class Series:
    """One contender's rounds."""

    qps: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # broken answers, dead server, failed pass


def run_rounds(cfg: ScorerConfig, dataset: Dataset, contenders: list[Contender], io: Path, *, rounds: int,
               rng: np.random.Generator) -> dict[str, Series]:
    """``rounds`` rounds over ``contenders`` (each has its ``driver`` open). Each round sends one
    slice of a random permutation of the hidden queries to every contender, in a random order; a
    slice is sized to last about ``cfg.pair_round_s`` for the fastest contender (the permutation is
    cycled when the set is smaller than the rounds need)."""
    queries = np.asarray(dataset.queries("test"))
    if cfg.max_queries:
        queries = queries[: cfg.max_queries]
    nq = queries.shape[0]
    io.mkdir(parents=True, exist_ok=True)
    write_vecs(io / "queries.fvecs", queries)
    fastest = max([c.qps_hint for c in contenders if c.qps_hint > 0] or [1000.0])
    per_round = max(cfg.concurrency * 50, math.ceil(fastest * cfg.pair_round_s * 1.25))
    need = per_round * rounds
    perm = np.concatenate([rng.permutation(nq) for _ in range(math.ceil(need / nq))])
    gt_ids, gt_d = dataset.groundtruth("test")
    base = dataset.base()
    k, n = cfg.top_k, dataset.manifest.n_base
    out = {c.label: Series() for c in contenders}
    for r in range(rounds):
        order = perm[r * per_round:(r + 1) * per_round].astype("<u4")
        for i in rng.permutation(len(contenders)):
            c = contenders[int(i)]
            s = out[c.label]
            assert c.driver is not None
            tag = f"r{r}-{int(i)}"
            # The round's slice, as much of it as lasts about a round for this contender.
            count = min(order.size, max(cfg.concurrency * 50, math.ceil(c.qps_hint * cfg.pair_round_s * 1.25)))
            atomic_write_bytes(io / f"{tag}.u32", order[:count])
            args = ["query", "--addr", "{addr}", "--queries", "{io}/queries.fvecs", "--orders",
                    f"{{io}}/{tag}.u32", "--passes", "1", "--concurrency", str(cfg.concurrency),
                    "--top-k", str(k), "--max-id", str(n), "--pass-time-limit-s", str(cfg.pair_round_s * 4),
                    "--request-timeout-s", str(cfg.request_timeout_s), "--ids-out", f"{{io}}/{tag}.ids",
                    "--dists-out", f"{{io}}/{tag}.dists", "--out", f"{{io}}/{tag}.json"]
            run = c.driver.run(args, timeout_s=cfg.pair_round_s * 4 + 60)
            stats = _read_json(io / f"{tag}.json")
            passes = (stats or {}).get("passes") or []
            if run.timed_out or not passes or not c.server.alive():
                s.problems.append(f"round {r + 1}: the pass failed"
                                  + (" (the server is gone)" if not c.server.alive() else f": {run.output[-200:]}"))
                continue
            p = passes[0]
            s.qps.append(float(p.get("qps", 0.0)))
            ids = np.fromfile(io / f"{tag}.ids", dtype="<i8").reshape(nq, k)
            dists = np.fromfile(io / f"{tag}.dists", dtype="<f4").reshape(nq, k)
            j = judge_pass(ids, dists, base, queries, gt_ids[:nq], gt_d[:nq], k=k, protocol=cfg.protocol,
                           rtol=cfg.distance_rtol)
            if j.problems:
                s.problems.append(f"round {r + 1}: {j.problems[0]}")
            elif j.recall is not None:
                s.recall.append(j.recall)
            for f in io.glob(f"{tag}.*"):
                f.unlink()
    return out


def paired(mine: Series, other: Series, *, against: str, against_tree: str, seconds: float,
           rng: np.random.Generator) -> Paired | None:
    """The ratio of ``mine`` to ``other`` round by round: median and bootstrap 95% interval.
    None when fewer than 3 rounds measured both."""
    n = min(len(mine.qps), len(other.qps))
    a, b = np.asarray(mine.qps[:n]), np.asarray(other.qps[:n])
    ok = (a > 0) & (b > 0)
    ratios = a[ok] / b[ok]
    if ratios.size < 3:
        return None
    low, high = bootstrap_median(ratios, rng)
    return Paired(against=against, against_tree=against_tree, rounds=int(ratios.size),
                  ratio=round(float(np.median(ratios)), 4), low=round(low, 4), high=round(high, 4),
                  qps=[round(x, 1) for x in mine.qps[:n]], other_qps=[round(x, 1) for x in other.qps[:n]],
                  seconds=round(seconds, 3))


def bootstrap_median(x: np.ndarray, rng: np.random.Generator, samples: int = BOOTSTRAP_SAMPLES,
                     level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval of the median of ``x``."""
    draws = rng.choice(x, size=(samples, x.size), replace=True)
    meds = np.median(draws, axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(meds, tail)), float(np.percentile(meds, 100 - tail))


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.t0


def _read_json(path: Path) -> dict | None:  # type: ignore[type-arg]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
