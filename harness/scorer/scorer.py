"""The benchmark itself: rules, build, start, load, warm-up, timed passes, judgement, record.

Every phase has a limit, every way a submission can fail ends in a score record with a status and
one plain sentence, and the harness stays up whatever the submission does.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import ScorerConfig, cpu_count
from harness.datasets.formats import atomic_write_bytes, write_vecs
from harness.datasets.store import Dataset
from harness.scorer.evaluate import caching_suspected, fresh_pools, judge_pass, repeat_speedup
from harness.scorer.record import PassResult, Score, Status
from harness.scorer.runner import Runner, Server
from harness.scorer.submission import check_rules, prepare, tree_hash

Log = Callable[[str], None]
# Loadgen error kinds that mean the server broke the response contract.
CONTRACT_ERRORS = ("http_status", "body_too_large", "bad_json", "wrong_k", "duplicate_ids", "id_out_of_range",
                   "bad_distance", "unsorted")


# Passes shorter than this are too short for their QPS to mean anything (a 10 ms pass moves 10x
# with one hiccup of the machine).
MIN_TIMED_PASS_S = 1.0


class _Stop(Exception):
    """Ends a scoring early with a status and a reason."""

    def __init__(self, status: Status, reason: str) -> None:
        self.status = status
        self.reason = reason


class Scorer:
    """Scores submissions on one dataset with one runner and one set of settings."""

    def __init__(self, cfg: ScorerConfig, dataset: Dataset, runner: Runner, *, cache_dir: Path | None = None,
                 log: Log | None = None) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.runner = runner
        self.cache_dir = cache_dir
        self.log = log or (lambda _m: None)
        self.hardware = runner.hardware()

    @property
    def settings_hash(self) -> str:
        # What changes a measurement: the protocol and its limits, not where files are.
        data = self.cfg.model_dump(mode="json", exclude={"image"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def cache_key(self, tree: str) -> str:
        parts = [tree, self.dataset.manifest.files["base"].sha256, self.dataset.manifest.files["queries"].sha256,
                 self.settings_hash, self.hardware.model_dump_json()]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def score(self, path: Path, *, use_cache: bool = True, variant: str = "best") -> Score:
        """Score the submission at ``path`` (a crate or a KCORES entry)."""
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="staircase-score-") as tmp:
            work = Path(tmp)
            src = prepare(Path(path), work / "src", variant=variant)  # type: ignore[arg-type]
            tree = tree_hash(src)
            cached = self._cached(tree) if use_cache else None
            if cached is not None:
                self.log(f"cached score for tree {tree[:12]}")
                return cached
            prepared = round(time.monotonic() - t0, 3)
            score = self._score(src, tree, work)
        # "total" is the scoring's wall time, from the submission's path to its record (the
        # temporary tree removed): what `staircase bench scorer` splits into work and overhead.
        score.phase_seconds = {"prepare": prepared, **score.phase_seconds,
                               "total": round(time.monotonic() - t0, 3)}
        self._store(score)
        return score

    # -- the phases ----------------------------------------------------------------------------

    def _score(self, src: Path, tree: str, work: Path) -> Score:
        phases: dict[str, float] = {}
        state: dict[str, Any] = {"log_tail": "", "passes": [], "errors": {}, "samples": [], "findings": []}
        server: Server | None = None
        try:
            rules = check_rules(src)
            if rules.violations:
                state["findings"] = rules.violations
                raise _Stop(Status.RULE_VIOLATION, rules.violations[0])
            self.log("building the submission")
            build = self._timed(phases, "build", lambda: self.runner.build(src, self.cfg.build_timeout_s))
            if build.timed_out:
                state["log_tail"] = build.log_tail
                raise _Stop(Status.BUILD_TIMEOUT, f"the build took longer than {self.cfg.build_timeout_s:.0f} s")
            if not build.ok:
                state["log_tail"] = build.log_tail
                raise _Stop(Status.BUILD_FAILED, "cargo build --release failed: " + _first_error(build.log_tail))
            self.log("starting the server")
            server = self.runner.start(build)
            accepting = self._timed(phases, "start",
                                    lambda: self.runner.wait_accepting(server, self.cfg.start_timeout_s))
            if not accepting:
                self._server_gone(server, "before accepting connections")
                raise _Stop(Status.START_TIMEOUT,
                            f"the server did not accept TCP connections within {self.cfg.start_timeout_s:.0f} s")
            io = work / "io"
            io.mkdir()
            self.log(f"loading {self.dataset.manifest.n_base:,} vectors")
            self._load(server, io, phases)
            self.log("warm-up and timed passes")
            self._query(server, io, phases, state)
            status, reason = self._timed(phases, "judge", lambda: self._judge(io, state))
            raise _Stop(status, reason)
        except _Stop as stop:
            if server is not None:
                state["log_tail"] = server.log_tail(self.cfg.log_tail_bytes)
                server.stop()
            return self._record(stop.status, stop.reason, tree, phases, state)

    def _load(self, server: Server, io: Path, phases: dict[str, float]) -> None:
        out = io / "load"
        out.mkdir()
        run = self._timed(phases, "load", lambda: self.runner.loadgen(
            server,
            ["load", "--addr", "{addr}", "--base", "{in}/base.fvecs", "--batch-size", str(self.cfg.batch_size),
             "--time-limit-s", str(self.cfg.load_timeout_s), "--out", "{out}/stats.json"],
            {"base.fvecs": self.dataset.path("base")}, out, self.cfg.load_timeout_s + 30))
        stats = _read_json(out / "stats.json")
        if not server.alive():
            self._server_gone(server, "while loading the vectors")
        if run.timed_out or (stats and "time limit" in str(stats.get("error", ""))):
            raise _Stop(Status.TIMEOUT, f"loading the base vectors took longer than {self.cfg.load_timeout_s:.0f} s")
        if not stats or not stats.get("ok"):
            why = (stats or {}).get("error") or f"the load generator failed: {run.output[-300:]}"
            raise _Stop(Status.LOAD_FAILED, f"bulk insert failed: {why}")

    def _query(self, server: Server, io: Path, phases: dict[str, float], state: dict[str, Any]) -> None:
        queries, orders, warmup = self._plan(state)
        inputs = {"queries.fvecs": io / "queries.fvecs", "orders.u32": io / "orders.u32",
                  "warmup.fvecs": io / "warmup.fvecs"}
        write_vecs(inputs["queries.fvecs"], queries)
        atomic_write_bytes(inputs["orders.u32"], orders.astype("<u4"))
        write_vecs(inputs["warmup.fvecs"], warmup)
        out = io / "query"
        out.mkdir()
        n = self.dataset.manifest.n_base
        args = ["query", "--addr", "{addr}", "--queries", "{in}/queries.fvecs", "--orders", "{in}/orders.u32",
                "--passes", str(orders.shape[0]), "--concurrency", str(self.cfg.concurrency),
                "--top-k", str(self.cfg.top_k), "--max-id", str(n),
                "--pass-time-limit-s", str(self.cfg.pass_time_limit_s),
                "--request-timeout-s", str(self.cfg.request_timeout_s),
                "--warmup-queries", "{in}/warmup.fvecs", "--warmup-count", str(self.cfg.warmup_queries),
                "--warmup-concurrency", "1", "--warmup-time-limit-s", str(self.cfg.warmup_timeout_s),
                "--ids-out", "{out}/ids.i64", "--dists-out", "{out}/dists.f32", "--latency-out", "{out}/latency.f32",
                "--out", "{out}/stats.json"]
        run = self._timed(phases, "query", lambda: self.runner.loadgen(
            server, args, inputs, out, self.cfg.benchmark_timeout_s))
        stats = _read_json(out / "stats.json")
        if stats:
            state["errors"] = {k: v for k, v in stats.get("error_counts", {}).items() if v}
            state["samples"] = stats.get("error_samples", [])[:10]
            state["passes"] = [_pass(p) for p in stats.get("passes", [])]
            phases["warmup"] = round(float(stats.get("warmup", {}).get("elapsed_s", 0.0)), 3)
        if not server.alive() or (stats and stats.get("aborted")):
            self._server_gone(server, "during the queries")
        if run.timed_out:
            raise _Stop(Status.TIMEOUT, f"the benchmark took longer than {self.cfg.benchmark_timeout_s:.0f} s")
        if not stats:
            raise _Stop(Status.ERROR, f"the load generator wrote no statistics: {run.output[-300:]}")
        state["queries_n"] = queries.shape[0]

    def _judge(self, io: Path, state: dict[str, Any]) -> tuple[Status, str]:
        errors: dict[str, int] = state["errors"]
        contract = {k: v for k, v in errors.items() if k in CONTRACT_ERRORS}
        if contract:
            kind = max(contract, key=lambda k: contract[k])
            sample: dict[str, Any] = next((s for s in state["samples"] if s.get("kind") == kind), {})
            return Status.BAD_RESPONSE, (f"{sum(contract.values())} responses broke the API contract "
                                         f"({kind}: {sample.get('detail', '')})").strip()
        passes: list[PassResult] = state["passes"]
        sent = sum(p.sent for p in passes) or 1
        if errors.get("timeout", 0) > 0.01 * sent:
            return Status.TIMEOUT, (f"{errors['timeout']} of {sent} queries took longer than "
                                    f"{self.cfg.request_timeout_s:.0f} s")
        if not passes or all(p.completed == 0 for p in passes):
            return Status.TIMEOUT, "no query was answered within the time limits"
        k = self.cfg.top_k
        nq = state["queries_n"]
        ids = np.fromfile(io / "query" / "ids.i64", dtype="<i8").reshape(len(passes), nq, k)
        dists = np.fromfile(io / "query" / "dists.f32", dtype="<f4").reshape(len(passes), nq, k)
        base = self.dataset.base()
        queries = self.dataset.queries("test")[:nq]
        gt_ids, gt_d = self.dataset.groundtruth("test")
        recalls = []
        for p in range(len(passes)):
            j = judge_pass(ids[p], dists[p], base, queries, gt_ids[:nq], gt_d[:nq], k=k,
                           protocol=self.cfg.protocol, rtol=self.cfg.distance_rtol)
            state["distance_kind"] = j.distance_kind
            if j.problems:
                return Status.BAD_RESPONSE, j.problems[0]
            if j.cheats:
                state["findings"].extend(j.cheats)
                return Status.CHEAT_SUSPECTED, j.cheats[0]
            recalls.append(j.recall or 0.0)
        # A submission must be right in every pass: the worst pass's recall is its recall.
        state["recall"] = min(recalls)
        if self.cfg.protocol == "strict":
            # Remembered versus fresh queries within each pass decides; only when there are too
            # few fresh answers to tell, the passes' QPS (if they are long enough to time).
            verdict = None
            latency_file = io / "query" / "latency.f32"
            if state.get("fresh") and latency_file.is_file():
                latency = np.fromfile(latency_file, dtype="<f4").reshape(len(passes), nq)
                verdict = repeat_speedup(latency, state["fresh"], state["shared"], concurrency=self.cfg.concurrency,
                                         server_cpus=cpu_count(self.cfg.server_cpus),
                                         limit=self.cfg.repeat_gain_limit)
            if verdict is None and min(p.elapsed_s for p in passes) >= MIN_TIMED_PASS_S:
                verdict = caching_suspected([p.qps for p in passes])
            cheats = verdict or []
            if cheats:
                state["findings"].extend(cheats)
                return Status.CHEAT_SUSPECTED, cheats[0]
        qps = float(np.median([p.qps for p in passes]))
        if state["recall"] < self.cfg.recall_floor:
            return Status.INVALID, (f"recall@{k} {state['recall']:.4f} is below the floor {self.cfg.recall_floor} "
                                    f"({qps:,.0f} QPS)")
        return Status.VALID, f"{qps:,.0f} QPS at recall@{k} {state['recall']:.4f}"

    # -- helpers -------------------------------------------------------------------------------

    def _plan(self, state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The hidden queries used, the order of each pass, and the warm-up vectors."""
        queries = np.asarray(self.dataset.queries("test"))
        if self.cfg.max_queries:
            queries = queries[: self.cfg.max_queries]
        nq = queries.shape[0]
        if self.cfg.protocol == "kcores":
            # One pass over the queries shuffled with seed 42; the warm-up is 100 of the queries.
            orders = np.random.default_rng(self.cfg.seed).permutation(nq)[None, :]
            warmup = queries[: max(1, self.cfg.warmup_queries)]
        else:
            # A fresh order per pass. Most queries ("shared") are sent in every pass; each pass also
            # sends its own pool of queries no pass sent before, so that within a later pass the
            # latency of remembered and of new queries can be compared (a cache of answers shows).
            # Every hidden query is sent in some pass. The warm-up uses vectors near the base,
            # never a hidden query.
            size = fresh_pools(nq, self.cfg.passes, self.cfg.fresh_fraction)
            perm = np.random.default_rng([self.cfg.seed, 7]).permutation(nq)
            pools = [perm[p * size:(p + 1) * size] for p in range(self.cfg.passes)]
            shared = perm[self.cfg.passes * size:]
            state["fresh"], state["shared"] = pools, shared
            orders = np.stack([np.random.default_rng([self.cfg.seed, p]).permutation(np.concatenate([shared, pools[p]]))
                               for p in range(self.cfg.passes)])
            rng = np.random.default_rng([self.cfg.seed, 1_000_003])
            base = self.dataset.base()
            pick = rng.choice(base.shape[0], size=max(1, self.cfg.warmup_queries), replace=base.shape[0] < 100)
            warmup = np.clip(np.asarray(base[np.sort(pick)]) + rng.normal(0, 4, (pick.size, base.shape[1])), 0, None)
        return queries, orders, warmup.astype(np.float32)

    def _server_gone(self, server: Server, when: str) -> None:
        why = server.exit_reason()
        if why is None:
            return
        tail = server.log_tail(self.cfg.log_tail_bytes)
        last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "")
        if why == "oom":
            raise _Stop(Status.OOM, f"the server was killed for exceeding its memory limit "
                                    f"({self.hardware.memory_limit}) {when}")
        raise _Stop(Status.CRASHED, f"the server died {when} ({why})" + (f": {last[:200]}" if last else ""))

    @staticmethod
    def _timed(phases: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            phases[name] = round(time.monotonic() - t0, 3)

    def _record(self, status: Status, reason: str, tree: str, phases: dict[str, float],
                state: dict[str, Any]) -> Score:
        passes: list[PassResult] = state["passes"]
        qps_list = [p.qps for p in passes if p.completed]
        measured = status in (Status.VALID, Status.INVALID, Status.CHEAT_SUSPECTED)
        return Score(
            status=status, reason=reason, valid=status == Status.VALID,
            qps=round(float(np.median(qps_list)), 2) if qps_list and measured else None,
            qps_spread=round(max(qps_list) / min(qps_list), 4) if len(qps_list) > 1 and min(qps_list) > 0 else None,
            recall=round(state["recall"], 6) if "recall" in state else None,
            recall_floor=self.cfg.recall_floor,
            p50_ms=median_or_none([p.p50_ms for p in passes if p.p50_ms is not None]),
            p95_ms=median_or_none([p.p95_ms for p in passes if p.p95_ms is not None]),
            p99_ms=median_or_none([p.p99_ms for p in passes if p.p99_ms is not None]),
            passes=passes, queries=state.get("queries_n", 0), phase_seconds=phases,
            distance_kind=state.get("distance_kind"), error_counts=state["errors"],
            error_samples=state["samples"], findings=state["findings"],
            server_log_tail=state["log_tail"][-self.cfg.log_tail_bytes:], protocol=self.cfg.protocol,
            dataset=self.dataset.name, dataset_sha256=self.dataset.manifest.files["base"].sha256,
            tree_hash=tree, settings_hash=self.settings_hash, hardware=self.hardware,
            scored_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    # -- cache ---------------------------------------------------------------------------------

    def _cache_path(self, tree: str) -> Path | None:
        return self.cache_dir / f"{self.cache_key(tree)}.json" if self.cache_dir else None

    def _cached(self, tree: str) -> Score | None:
        p = self._cache_path(tree)
        if p is None or not p.is_file():
            return None
        try:
            return Score.model_validate_json(p.read_text()).model_copy(update={"cached": True})
        except ValueError:
            return None

    def _store(self, score: Score) -> None:
        # Harness failures are not the submission's result: never cache them.
        p = self._cache_path(score.tree_hash)
        if p is not None and score.status != Status.ERROR:
            atomic_write_bytes(p, score.model_dump_json(indent=2).encode())


def median_or_none(xs: list[float]) -> float | None:
    return float(np.median(xs)) if xs else None


def _pass(p: dict[str, Any]) -> PassResult:
    lat = p.get("latency_ms") or {}
    return PassResult(sent=int(p.get("sent", 0)), completed=int(p.get("completed", 0)),
                      errors=int(p.get("errors", 0)), elapsed_s=float(p.get("elapsed_s", 0.0)),
                      qps=float(p.get("qps", 0.0)), timed_out=bool(p.get("timed_out", False)),
                      p50_ms=lat.get("p50"), p95_ms=lat.get("p95"), p99_ms=lat.get("p99"))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _first_error(log: str) -> str:
    for line in log.splitlines():
        if line.startswith("error"):
            return line.strip()[:300]
    lines = [ln for ln in log.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


