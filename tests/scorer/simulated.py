"""A simulated server behind the scorer's Runner protocol: exact answers on a simulated clock.

The load generator's query run is played out in Python: every query costs a (seeded) random
service time, requests queue on the server's CPUs behind a closed loop of C connections, and the
answers are the exact neighbours. A server that ``remembers`` answers serves a query it has been
sent before at ``hit`` times the cost. The scorer's whole judgement (fresh versus remembered
latency, pass QPS, which passes are certified) then runs on these outputs in milliseconds, with no
cargo and no Docker.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.formats import read_vecs
from harness.datasets.groundtruth import exact_knn
from harness.scorer.record import Hardware
from harness.scorer.runner import BuildOutcome, LoadgenRun


class SimulatedServer:
    def alive(self) -> bool:
        return True

    def exit_reason(self) -> str | None:
        return None

    def log_tail(self, limit: int) -> str:
        return ""

    def stop(self) -> None:
        pass


def closed_loop(order: np.ndarray, cost: Callable[[int], float], concurrency: int,
                servers: int) -> dict[int, float]:
    """Latency (s) of each request of a closed loop (``concurrency`` clients) on ``servers`` FIFO
    servers, plus the pass's end under the key -1."""
    clients = [0.0] * concurrency
    free = [0.0] * servers
    lat: dict[int, float] = {}
    end = 0.0
    for q in order.tolist():
        sent = heapq.heappop(clients)
        start = max(sent, heapq.heappop(free))
        done = start + cost(q)
        heapq.heappush(free, done)
        heapq.heappush(clients, done)
        lat[q] = done - sent
        end = max(end, done)
    lat[-1] = end
    return lat


class SimulatedRunner:
    """Fits ``harness.scorer.runner.Runner``. ``cost_ms``: the mean service time of a query;
    ``hit``: the cost of a remembered answer relative to a fresh one (1.0: an honest server);
    ``servers``: the server's CPUs."""

    name = "simulated"

    def __init__(self, *, cost_ms: float, hit: float = 1.0, servers: int = 1, seed: int = 0) -> None:
        self.cost_s, self.hit, self.servers, self.seed = cost_ms / 1000, hit, servers, seed
        self.base: np.ndarray | None = None

    def hardware(self) -> Hardware:
        return Hardware(cpu_model="simulated", host_cpus=2, server_cpus="0", loadgen_cpus="1", memory_limit="1g",
                        runner=self.name)

    def build(self, src: Path, timeout_s: float) -> BuildOutcome:
        return BuildOutcome(ok=True, timed_out=False, seconds=0.0, log_tail="", binary=src / "server-bin")

    def start(self, build: BuildOutcome) -> SimulatedServer:
        return SimulatedServer()

    def wait_accepting(self, server: Any, timeout_s: float) -> bool:
        return True

    def loadgen(self, server: Any, args: list[str], inputs: dict[str, Path], out_dir: Path,
                timeout_s: float) -> LoadgenRun:
        if args[0] == "load":
            self.base = np.asarray(read_vecs(inputs["base.fvecs"]))
            (out_dir / "stats.json").write_text('{"ok": true}')
        else:
            self._query(_options(args), inputs, out_dir)
        return LoadgenRun(exit_code=0, timed_out=False, output="")

    def close(self) -> None:
        pass

    def _query(self, opt: dict[str, str], inputs: dict[str, Path], out: Path) -> None:
        assert self.base is not None, "queried before loading"
        queries = np.asarray(read_vecs(inputs["queries.fvecs"]))
        nq, passes = queries.shape[0], int(opt["--passes"])
        k, concurrency = int(opt["--top-k"]), int(opt["--concurrency"])
        orders = np.fromfile(inputs["orders.u32"], dtype="<u4").reshape(passes, -1).astype(np.int64)
        gt_ids, gt_d = exact_knn(self.base, queries, k)
        rng = np.random.default_rng(self.seed)
        base_cost = self.cost_s * rng.gamma(3.0, 1 / 3.0, nq)
        ids = np.full((passes, nq, k), -1, dtype="<i8")
        dists = np.full((passes, nq, k), np.nan, dtype="<f4")
        latency = np.full((passes, nq), np.nan, dtype="<f4")
        seen: set[int] = set()
        stats = []
        for p in range(passes):
            order = orders[p]
            jitter = rng.lognormal(0, 0.3, nq)  # the machine's noise, per request

            def cost(q: int, jitter: np.ndarray = jitter) -> float:
                return float(jitter[q] * base_cost[q] * (self.hit if q in seen else 1.0))

            lat = closed_loop(order, cost, concurrency, self.servers)
            elapsed = lat.pop(-1)
            for q, v in lat.items():
                latency[p, q] = v * 1000
            ids[p, order] = gt_ids[order, :k]
            dists[p, order] = gt_d[order, :k]
            seen.update(order.tolist())
            ms = np.array(list(lat.values())) * 1000
            stats.append({"sent": order.size, "completed": order.size, "errors": 0, "elapsed_s": elapsed,
                          "qps": order.size / elapsed, "timed_out": False,
                          "latency_ms": {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                                         "p99": float(np.percentile(ms, 99))}})
        ids.tofile(out / "ids.i64")
        dists.tofile(out / "dists.f32")
        latency.tofile(out / "latency.f32")
        (out / "stats.json").write_text(json.dumps({"passes": stats, "error_counts": {}, "error_samples": [],
                                                    "warmup": {"elapsed_s": 0.0}}))


def _options(args: list[str]) -> dict[str, str]:
    return {a: b for a, b in zip(args, args[1:], strict=False) if a.startswith("--")}
