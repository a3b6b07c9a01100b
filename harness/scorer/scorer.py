"""The benchmark itself: rules, build, start, load, warm-up, timed passes, judgement, record.

Every phase has a limit, every way a submission can fail ends in a score record with a status and
one plain sentence, and the harness stays up whatever the submission does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import RunConfig, ScorerConfig, cpu_count
from harness.datasets.formats import atomic_write_bytes, write_vecs
from harness.datasets.store import Dataset, DatasetStore
from harness.paths import REFERENCE
from harness.scorer.base import Incumbent
from harness.scorer.evaluate import (
    MIN_TIMED_PASS_S,
    certified_qps,
    judge_caching,
    judge_pass,
    qps_confidence,
    used_passes,
)
from harness.scorer.paired import Contender, Series, Stopwatch, paired, run_rounds
from harness.scorer.plan import plan_queries
from harness.scorer.record import (
    Paired,
    PassResult,
    QpsConfidence,
    QpsSource,
    Score,
    Status,
    StepCheck,
    Verdict,
    Verification,
    VerifiedEntry,
)
from harness.scorer.runner import BuildOutcome, MeasurementVoid, Runner, Server, make_runner
from harness.scorer.slot import iso, scorer_slot, utc_now
from harness.scorer.submission import check_rules, prepare, prepare_entry, tree_hash

Log = Callable[[str], None]
# Loadgen error kinds that mean the server broke the response contract.
CONTRACT_ERRORS = ("http_status", "body_too_large", "bad_json", "wrong_k", "duplicate_ids", "id_out_of_range",
                   "bad_distance", "unsorted")


# The version of the judgement (what is flagged, which passes the QPS comes from): part of the
# settings hash, so that a cached record judged by older rules is not served. 2: a QPS the caching
# check cannot vouch for comes from the first pass only; short passes make it low-confidence.
JUDGEMENT_VERSION = 2
# The kcores protocol's limits, where each comes from in the original (github.com/KCORES/vector-db-bench):
# said in the reason of a score that outlived one. See docs/kcores.md.
KCORES_LIMITS = {
    "build": " (the original's limit per cargo build: agent/src/bench_tools.rs BUILD_TIMEOUT_SECS = 300)",
    "benchmark": (" (the original runs the benchmark client under one timeout covering load, warm-up and queries, "
                  "agent/src/bench_tools.rs BENCHMARK_TIMEOUT_SECS = 600; its requests have none of their own, "
                  "benchmark/src/main.rs reqwest::Client::new())"),
}
KCORES_SERVER_CPUS = 4  # agent/src/main.rs: --cpu-cores, default "0-3"
# How often a scoring is done again when the runner voided it (the Docker engine went away while
# the containers ran); after that the runner's exception goes to the caller.
VOID_RETRIES = 2


class _Stop(Exception):
    """Ends a scoring early with a status and a reason."""

    def __init__(self, status: Status, reason: str) -> None:
        self.status = status
        self.reason = reason


@dataclass
class Measurement:
    """What a scoring has found out so far: its score record is built from this, whichever phase
    ended it."""

    log_tail: str = ""
    passes: list[PassResult] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # the load generator's error counts (non-zero)
    samples: list[dict[str, Any]] = field(default_factory=list)  # a few of its error samples
    findings: list[str] = field(default_factory=list)  # rule and cheat checks that fired
    queries_n: int = 0  # hidden queries sent (set once the passes have statistics)
    recall: float | None = None  # the worst pass's recall@k (set once every pass is judged)
    distance_kind: str | None = None
    # Which passes the QPS is certified from, and how far it can be trusted (set by the judgement).
    qps_source: QpsSource = QpsSource.ALL_PASSES
    qps_confidence: QpsConfidence = QpsConfidence.NORMAL
    # Strict protocol: each pass's pool of first-time queries and the queries every pass sends.
    fresh: list[np.ndarray] = field(default_factory=list)
    shared: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # Paired rounds: the ratio to the anchor, and for a claimed new best the rematch's verdict.
    anchor: Paired | None = None
    step: StepCheck | None = None


class _AnchorFailed(Exception):
    """The anchor (or an incumbent rebuilt for a rematch) could not be made ready: a harness-side
    gap, said as a finding; never the submission's failure."""


def score_cache_dir() -> Path:
    """Where score records are cached by tree and settings (``$STAIRCASE_CACHE/scores``)."""
    env = os.environ.get("STAIRCASE_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "staircase") / "scores"


class BenchmarkScorer:
    """Scores submissions on one dataset with one runner and one set of settings (fits the
    ``Scorer`` protocol of ``harness.scorer.base``)."""

    def __init__(self, cfg: ScorerConfig, dataset: Dataset, runner: Runner, *, cache_dir: Path | None = None,
                 log: Log | None = None, on_slot_wait: Callable[[str, float | None], None] | None = None) -> None:
        """``on_slot_wait(detail, seconds)`` is told when a scoring waits for the machine's scorer
        slot (seconds None), and how long it waited once it holds it."""
        self.cfg = cfg
        self.dataset = dataset
        self.runner = runner
        self.cache_dir = cache_dir
        self.log = log or (lambda _m: None)
        self.on_slot_wait = on_slot_wait
        self.hardware = runner.hardware()
        # Paired rounds: the anchor's server, built and loaded once and kept for the scorer's life,
        # and the incumbent best's server, kept after its scoring for the next claimed step.
        self._anchor: Contender | None = None
        self._kept: Contender | None = None
        self._servers_dir = Path(tempfile.mkdtemp(prefix="staircase-contenders-"))
        self._rng = np.random.default_rng()

    @classmethod
    def from_config(cls, cfg: RunConfig, dataset_name: str | None = None, *, build_cache: str | None = None,
                    labels: dict[str, str] | None = None, log: Log | None = None,
                    on_wait: Log | None = None,
                    on_slot_wait: Callable[[str, float | None], None] | None = None) -> BenchmarkScorer:
        """The scorer a run config asks for: its dataset (or ``dataset_name``), its runner, and the
        shared score cache. ``build_cache`` names a build cache shared by a run's submissions (None:
        every build starts fresh); ``labels`` are added to every container (e.g. the run's id, so
        that the run can remove what it left behind); ``log`` defaults to the console; ``on_wait``
        is told, besides ``log``, each time the Docker engine is waited for."""
        if log is None:
            from harness.console import log as console_log

            log = console_log
        dataset = DatasetStore(cfg.dataset.data_dir).get(dataset_name or cfg.dataset.name)
        runner = make_runner(cfg.scorer, build_cache=build_cache, labels=labels, log=log, on_wait=on_wait)
        return cls(cfg.scorer, dataset, runner, cache_dir=score_cache_dir(), log=log, on_slot_wait=on_slot_wait)

    def close(self) -> None:
        """Stop the kept servers (anchor, incumbent) and close the runner (its engine connection;
        any container it still has is removed)."""
        for c in (self._anchor, self._kept):
            if c is not None:
                c.server.stop()
        self._anchor = self._kept = None
        shutil.rmtree(self._servers_dir, ignore_errors=True)
        self.runner.close()

    @property
    def settings_hash(self) -> str:
        # What changes a measurement: the protocol and its limits, not where files are nor how
        # long an unreachable engine is waited for.
        data = self.cfg.model_dump(mode="json", exclude={"image", "engine_wait_s"})
        data["judgement"] = JUDGEMENT_VERSION
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def cache_key(self, tree: str) -> str:
        parts = [tree, self.dataset.manifest.files["base"].sha256, self.dataset.manifest.files["queries"].sha256,
                 self.settings_hash, self.hardware.model_dump_json()]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def score(self, path: Path, *, use_cache: bool = True, variant: str = "best",
              incumbent: Incumbent | None = None) -> Score:
        """Score the submission at ``path`` (a crate or a KCORES entry). Raises
        ``harness.docker_util.EngineUnavailable`` when the Docker engine stayed unreachable past
        ``engine_wait_s``: the engine's failure is never recorded as the submission's (the caller
        waits and scores again). A scoring the runner voids (the engine went away while the
        containers ran and came back) is done again here, up to ``VOID_RETRIES`` times.

        With pairing on, a valid submission is also measured in paired rounds against the anchor
        (``relative_qps``); when it beats ``incumbent`` (the run's best so far) it is rematched
        against it too, and ``step`` holds the verdict. The measurement holds the machine's
        scorer slot from the build to the last round."""
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="staircase-score-") as tmp:
            work = Path(tmp)
            prepared_entry = prepare_entry(Path(path), work / "src", variant=variant)  # type: ignore[arg-type]
            src, left_out = prepared_entry.root, prepared_entry.left_out or None
            tree = tree_hash(src)
            cached = self._cached(tree) if use_cache else None
            if cached is not None and self.cfg.pairing and incumbent is not None and _claims(cached, incumbent):
                cached = None  # a claimed step is rematched against the incumbent: that needs its server
            if cached is not None:
                self.log(f"cached score for tree {tree[:12]}")
                return cached.model_copy(update={"left_out": left_out})
            prepared = round(time.monotonic() - t0, 3)
            with scorer_slot(on_wait=self._slot_waiting) as held:
                if held.waited_s > 0.5 and self.on_slot_wait is not None:
                    self.on_slot_wait(f"held the scorer slot after {held.waited_s:.1f} s", held.waited_s)
                started = utc_now()
                for attempt in range(VOID_RETRIES + 1):
                    try:
                        score = self._score(src, tree, work, incumbent)
                        break
                    except MeasurementVoid as e:
                        if attempt == VOID_RETRIES:
                            raise
                        self.log(f"{e}; scoring again")
                        shutil.rmtree(work / "io", ignore_errors=True)
                score.slot, score.measured_from, score.measured_to = held.name, iso(started), iso(utc_now())
        # "total" is the scoring's wall time, from the submission's path to its record (the
        # temporary tree removed): what `staircase bench scorer` splits into work and overhead.
        score.phase_seconds = {"prepare": prepared, **score.phase_seconds,
                               "total": round(time.monotonic() - t0, 3)}
        score.left_out = left_out
        self._store(score)
        return score

    def _slot_waiting(self, detail: str) -> None:
        self.log(detail)
        if self.on_slot_wait is not None:
            self.on_slot_wait(detail, None)

    # -- the phases ----------------------------------------------------------------------------

    def _score(self, src: Path, tree: str, work: Path, incumbent: Incumbent | None = None) -> Score:
        phases: dict[str, float] = {}
        m = Measurement()
        server: Server | None = None
        kept = False
        try:
            rules = check_rules(src)
            if rules.violations:
                m.findings = rules.violations
                raise _Stop(Status.RULE_VIOLATION, rules.violations[0])
            self.log("building the submission")
            build = self._timed(phases, "build", lambda: self.runner.build(src, self.cfg.build_timeout_s))
            if build.timed_out:
                m.log_tail = build.log_tail
                raise _Stop(Status.BUILD_TIMEOUT, f"the build took longer than {self.cfg.build_timeout_s:.0f} s"
                            + KCORES_LIMITS["build"] * (self.cfg.protocol == "kcores"))
            if not build.ok:
                m.log_tail = build.log_tail
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
            self._query(server, io, phases, m)
            status, reason = self._timed(phases, "judge", lambda: self._judge(io, m))
            if status == Status.VALID and self.cfg.pairing:
                self.log("paired rounds")
                status, reason, kept = self._timed(phases, "paired", lambda: self._pair(
                    server, tree, io / "rounds", m, incumbent, (status, reason)))
                # kept: its server runs on as the incumbent, for the next claimed step's rematch
            raise _Stop(status, reason)
        except _Stop as stop:
            if server is not None:
                m.log_tail = server.log_tail(self.cfg.log_tail_bytes)
            score = self._record(stop.status, stop.reason, tree, phases, m)
            if self.cfg.protocol == "kcores":
                score.not_as_original = self.kcores_cpus_note() or None
            return score
        finally:
            # Whatever ended the scoring (its verdict, an unreachable engine, an interrupt), the
            # server does not outlive it (unless it is kept as the incumbent).
            if server is not None and not kept:
                server.stop()

    def _load(self, server: Server, io: Path, phases: dict[str, float]) -> None:
        out = io / "load"
        out.mkdir()
        # kcores: one limit for the load, the warm-up and the queries together, as the original's.
        limit = self.cfg.benchmark_timeout_s if self.cfg.protocol == "kcores" else self.cfg.load_timeout_s
        run = self._timed(phases, "load", lambda: self.runner.loadgen(
            server,
            ["load", "--addr", "{addr}", "--base", "{in}/base.fvecs", "--batch-size", str(self.cfg.batch_size),
             "--time-limit-s", str(limit), "--out", "{out}/stats.json"],
            {"base.fvecs": self.dataset.path("base")}, out, limit + 30))
        stats = _read_json(out / "stats.json")
        if not server.alive():
            self._server_gone(server, "while loading the vectors")
        if run.timed_out or (stats and "time limit" in str(stats.get("error", ""))):
            if self.cfg.protocol == "kcores":
                raise _Stop(Status.TIMEOUT, f"load: loading the base vectors took longer than {limit:.0f} s, the "
                            f"whole benchmark's limit{KCORES_LIMITS['benchmark']}")
            raise _Stop(Status.TIMEOUT, f"loading the base vectors took longer than {self.cfg.load_timeout_s:.0f} s")
        if not stats or not stats.get("ok"):
            why = (stats or {}).get("error") or f"the load generator failed: {run.output[-300:]}"
            raise _Stop(Status.LOAD_FAILED, f"bulk insert failed: {why}")

    def _query(self, server: Server, io: Path, phases: dict[str, float], m: Measurement) -> None:
        if self.cfg.protocol == "kcores":
            return self._query_kcores(server, io, phases, m)
        plan = plan_queries(self.cfg, self.dataset)
        queries, orders, warmup = plan.queries, plan.orders, plan.warmup
        m.fresh, m.shared = plan.fresh, plan.shared
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
            m.errors = {k: v for k, v in stats.get("error_counts", {}).items() if v}
            m.samples = stats.get("error_samples", [])[:10]
            m.passes = [_pass(p) for p in stats.get("passes", [])]
            phases["warmup"] = round(float(stats.get("warmup", {}).get("elapsed_s", 0.0)), 3)
        if not server.alive() or (stats and stats.get("aborted")):
            self._server_gone(server, "during the queries")
        if run.timed_out:
            raise _Stop(Status.TIMEOUT, f"the benchmark took longer than {self.cfg.benchmark_timeout_s:.0f} s")
        if not stats:
            raise _Stop(Status.ERROR, f"the load generator wrote no statistics: {run.output[-300:]}")
        m.queries_n = queries.shape[0]

    def _query_kcores(self, server: Server, io: Path, phases: dict[str, float], m: Measurement) -> None:
        """The original's warm-up and timed queries: no limit per request; the load, the warm-up and
        the queries share the whole benchmark's limit (``benchmark_timeout_s``). The warm-up is its
        own sequential run of the first ``warmup_queries`` queries, answers unjudged and errors
        ignored (benchmark/src/runner.rs ``run_warmup``), so that its time is known when the
        limit runs out in it (a lazy index build)."""
        plan = plan_queries(self.cfg, self.dataset)
        queries, orders = plan.queries, plan.orders
        whole = self.cfg.benchmark_timeout_s
        n = self.dataset.manifest.n_base
        common = ["--top-k", str(self.cfg.top_k), "--max-id", str(n), "--ids-out", "{out}/ids.i64",
                  "--dists-out", "{out}/dists.f32", "--out", "{out}/stats.json"]

        def spent() -> str:
            return ", ".join(f"{k} {phases[k]:.0f} s" for k in ("load", "warmup", "query") if k in phases)

        def over(where: str) -> _Stop:
            return _Stop(Status.TIMEOUT, f"{where}: the benchmark (load, warm-up and queries) took longer than "
                         f"{whole:.0f} s, the whole benchmark's limit ({spent()}){KCORES_LIMITS['benchmark']}")

        left = whole - phases.get("load", 0.0)
        if self.cfg.warmup_queries > 0 and left > 0:
            # Named as a timed run's inputs: to the load generator the warm-up is one pass of its own.
            warm_in = {"queries.fvecs": io / "warmup.fvecs", "orders.u32": io / "warmup.u32"}
            write_vecs(warm_in["queries.fvecs"], plan.warmup)
            atomic_write_bytes(warm_in["orders.u32"], np.arange(plan.warmup.shape[0], dtype="<u4"))
            out = io / "warmup"
            out.mkdir()
            run = self._timed(phases, "warmup", lambda: self.runner.loadgen(server, [
                "query", "--addr", "{addr}", "--queries", "{in}/queries.fvecs", "--orders", "{in}/orders.u32",
                "--passes", "1", "--concurrency", "1", "--pass-time-limit-s", f"{left:.3f}",
                "--request-timeout-s", f"{left:.3f}", *common], warm_in, out, left + 30))
            wstats = _read_json(out / "stats.json") or {}
            warm = (wstats.get("passes") or [{}])[0]
            phases["warmup"] = round(float(warm.get("elapsed_s", phases["warmup"])), 3)
            if not server.alive() or wstats.get("aborted"):
                self._server_gone(server, "during the warm-up")
            done = int(warm.get("sent", 0)) >= plan.warmup.shape[0] and not warm.get("timed_out")
            if run.timed_out or not wstats or not done or warm.get("error_counts", {}).get("timeout"):
                phases["warmup"] = max(phases["warmup"], round(left, 3))
                raise over(f"warm-up ({plan.warmup.shape[0]} sequential searches, unfinished)")
            left -= phases["warmup"]
        if left <= 0:
            raise over("warm-up")
        inputs = {"queries.fvecs": io / "queries.fvecs", "orders.u32": io / "orders.u32"}
        write_vecs(inputs["queries.fvecs"], queries)
        atomic_write_bytes(inputs["orders.u32"], orders.astype("<u4"))
        out = io / "query"
        out.mkdir()
        args = ["query", "--addr", "{addr}", "--queries", "{in}/queries.fvecs", "--orders", "{in}/orders.u32",
                "--passes", str(orders.shape[0]), "--concurrency", str(self.cfg.concurrency),
                "--pass-time-limit-s", f"{left:.3f}", "--request-timeout-s", f"{left:.3f}",
                "--latency-out", "{out}/latency.f32", *common]
        run = self._timed(phases, "query", lambda: self.runner.loadgen(server, args, inputs, out, left + 30))
        stats = _read_json(out / "stats.json")
        if stats:
            m.errors = {k: v for k, v in stats.get("error_counts", {}).items() if v}
            m.samples = stats.get("error_samples", [])[:10]
            m.passes = [_pass(p) for p in stats.get("passes", [])]
            phases["query"] = round(sum(p.elapsed_s for p in m.passes), 3) or phases["query"]
        if not server.alive() or (stats and stats.get("aborted")):
            self._server_gone(server, "during the queries")
        if run.timed_out or not stats or m.errors.get("timeout") or any(p.timed_out for p in m.passes):
            answered = sum(p.completed for p in m.passes)
            raise over(f"queries ({answered:,} of {orders.size:,} answered)" if stats else "queries")
        m.queries_n = queries.shape[0]
        return None

    def kcores_cpus_note(self) -> list[str]:
        """The original pinned the server to 4 CPUs; a scoring that gives it another number says so."""
        want = KCORES_SERVER_CPUS
        have = cpu_count(self.cfg.server_cpus)
        host = self.hardware.host_cpus
        if have == want and have <= host:
            return []
        why = f"this machine has {host} CPUs" if host < want + 1 else "scorer.server_cpus says so"
        return [f"server CPUs: the original pinned the server to {want} CPUs (taskset -c 0-3: agent/src/main.rs "
                f"--cpu-cores default); this scoring gave it {have} ({self.cfg.server_cpus}; {why}), so its QPS "
                "is not the original's figure for the same code"]

    def _judge(self, io: Path, m: Measurement) -> tuple[Status, str]:
        errors = m.errors
        contract = {k: v for k, v in errors.items() if k in CONTRACT_ERRORS}
        if contract:
            kind = max(contract, key=lambda k: contract[k])
            sample: dict[str, Any] = next((s for s in m.samples if s.get("kind") == kind), {})
            return Status.BAD_RESPONSE, (f"{sum(contract.values())} responses broke the API contract "
                                         f"({kind}: {sample.get('detail', '')})").strip()
        passes = m.passes
        sent = sum(p.sent for p in passes) or 1
        if errors.get("timeout", 0) > 0.01 * sent:
            return Status.TIMEOUT, (f"{errors['timeout']} of {sent} queries took longer than "
                                    f"{self.cfg.request_timeout_s:.0f} s")
        if not passes or all(p.completed == 0 for p in passes):
            return Status.TIMEOUT, "no query was answered within the time limits"
        k = self.cfg.top_k
        nq = m.queries_n
        ids = np.fromfile(io / "query" / "ids.i64", dtype="<i8").reshape(len(passes), nq, k)
        dists = np.fromfile(io / "query" / "dists.f32", dtype="<f4").reshape(len(passes), nq, k)
        base = self.dataset.base()
        queries = self.dataset.queries("test")[:nq]
        gt_ids, gt_d = self.dataset.groundtruth("test")
        recalls = []
        for p in range(len(passes)):
            j = judge_pass(ids[p], dists[p], base, queries, gt_ids[:nq], gt_d[:nq], k=k,
                           protocol=self.cfg.protocol, rtol=self.cfg.distance_rtol)
            m.distance_kind = j.distance_kind
            if j.problems:
                return Status.BAD_RESPONSE, j.problems[0]
            if j.cheats:
                m.findings.extend(j.cheats)
                return Status.CHEAT_SUSPECTED, j.cheats[0]
            recalls.append(j.recall or 0.0)
        # A submission must be right in every pass: the worst pass's recall is its recall.
        recall = m.recall = min(recalls)
        cheats: list[str] = []
        if self.cfg.protocol == "strict" and len(passes) > 1:
            latency_file = io / "query" / "latency.f32"
            latency = (np.fromfile(latency_file, dtype="<f4").reshape(len(passes), nq)
                       if m.fresh and latency_file.is_file() else None)
            cheats, unjudged = judge_caching(passes, latency, m.fresh, m.shared, concurrency=self.cfg.concurrency,
                                             server_cpus=cpu_count(self.cfg.server_cpus),
                                             limit=self.cfg.repeat_gain_limit, fresh_fraction=self.cfg.fresh_fraction)
            if unjudged:
                # QPS is certified only from answers the scorer can vouch for.
                m.qps_source = QpsSource.FIRST_PASS
                m.findings.append(unjudged)
        m.qps_confidence, low = qps_confidence(passes, m.qps_source, nq)
        if cheats:
            m.findings.extend(cheats)
            return Status.CHEAT_SUSPECTED, cheats[0]
        if low:
            m.findings.append(low)
        qps = certified_qps(passes, m.qps_source)
        caveat = _caveat(m)
        if recall < self.cfg.recall_floor:
            return Status.INVALID, (f"recall@{k} {recall:.4f} is below the floor {self.cfg.recall_floor} "
                                    f"({qps:,.0f} QPS{caveat})")
        return Status.VALID, f"{qps:,.0f} QPS at recall@{k} {recall:.4f}" + (f" ({caveat[2:]})" if caveat else "")

    # -- paired rounds ---------------------------------------------------------------------------

    def _pair(self, server: Server, tree: str, io: Path, m: Measurement, incumbent: Incumbent | None,
              verdict: tuple[Status, str]) -> tuple[Status, str, bool]:
        """Rounds of the submission against the anchor (and, when it claims a new best, against the
        incumbent). Returns the (possibly changed) status and reason, and whether the submission's
        server is kept as the new incumbent."""
        qps = certified_qps(m.passes, m.qps_source)
        me = Contender("submission", tree, server, qps)
        try:
            anchor = self._ensure_anchor()
        except _AnchorFailed as e:
            m.findings.append(f"no paired rounds: the anchor could not be made ready ({e})")
            return (*verdict, False)
        claim = incumbent is None or qps > incumbent.qps
        rival: Contender | None = None
        if incumbent is not None and claim:
            try:
                rival = self._incumbent(incumbent)
            except _AnchorFailed as e:
                m.findings.append(f"the step was not rematched: the incumbent could not be made ready ({e})")
        clock = Stopwatch()
        series = self._rounds([me, anchor] + ([rival] if rival else []), io)
        mine = series[me.label]
        m.anchor = paired(mine, series[anchor.label], against="anchor", against_tree=anchor.tree,
                          seconds=clock.seconds, rng=self._rng)
        if rival is not None and incumbent is not None:
            p = paired(mine, series[rival.label], against=rival.label, against_tree=rival.tree,
                       seconds=clock.seconds, rng=self._rng)
            if p is not None:
                ok = p.low > 1 + self.cfg.min_effect
                m.step = StepCheck(verdict=Verdict.CONFIRMED if ok else Verdict.WITHIN_NOISE,
                                   against_iteration=incumbent.iteration, min_effect=self.cfg.min_effect, paired=p)
        for c in (anchor, rival):
            if c is not None and series[c.label].problems:
                self.log(f"{c.label}: {series[c.label].problems[0]}")
        m.findings.extend(f"paired rounds, {label}: {note}" for label, ser in series.items() for note in ser.notes)
        status, reason = verdict
        if not server.alive():
            self._server_gone(server, "during the paired rounds")
        if mine.problems:
            m.findings.append(f"paired rounds: {mine.problems[0]}")
        worst = min(mine.recall) if mine.recall else None
        if worst is not None and worst < self.cfg.recall_floor:
            return (Status.INVALID, f"recall@{self.cfg.top_k} {worst:.4f} in a paired round is below the floor "
                    f"{self.cfg.recall_floor}", False)
        if m.anchor is not None:
            reason += f"; {m.anchor.ratio:.3f}x the anchor [{m.anchor.low:.3f}, {m.anchor.high:.3f}]"
        if m.step is not None:
            reason += (f"; step {m.step.verdict.value.replace('_', ' ')}: {m.step.paired.ratio:.3f}x "
                       f"{m.step.paired.against} [{m.step.paired.low:.3f}, {m.step.paired.high:.3f}]")
        if not claim:
            return status, reason, False
        # The new best's server stays up for the next claimed step's rematch.
        for c in {id(c): c for c in (self._kept, rival) if c is not None}.values():
            c.server.stop()
        self._kept = me
        me.driver = None
        return status, reason, True

    def verify(self, entries: list[Incumbent]) -> Verification:
        """Rescore ``entries`` (a run's top valid submissions) in paired rounds against each other
        and the anchor, holding the machine's scorer slot. The verified best is the one with the
        highest median ratio to the anchor; it is matched against the runner-up."""
        clock = Stopwatch()
        with scorer_slot(on_wait=self._slot_waiting):
            anchor = self._ensure_anchor()
            made: list[Contender] = []
            contenders: list[Contender] = []
            try:
                for e in entries:
                    if self._kept is not None and self._kept.tree == e.tree and self._kept.server.alive():
                        self._kept.label = e.label
                        contenders.append(self._kept)
                        continue
                    self.log(f"starting {e.label} for the verification")
                    c = self._contender(e.label, e.path, cache_binary=False)
                    made.append(c)
                    contenders.append(c)
                io = Path(tempfile.mkdtemp(prefix="verify-", dir=self._servers_dir))
                series = self._rounds(contenders + [anchor], io)
            finally:
                for c in made:
                    c.server.stop()
        seconds = clock.seconds
        out: list[VerifiedEntry] = []
        for e, c in zip(entries, contenders, strict=True):
            ser = series[c.label]
            out.append(VerifiedEntry(
                label=e.label, iteration=e.iteration, tree=c.tree,
                qps=round(float(np.median(ser.qps)), 2) if ser.qps else None,
                recall=round(min(ser.recall), 6) if ser.recall else None,
                relative=paired(ser, series[anchor.label], against="anchor", against_tree=anchor.tree,
                                seconds=seconds, rng=self._rng),
                problems=ser.problems))
        ranked = sorted((v for v in out if v.relative is not None and not v.problems
                         and (v.recall or 0) >= self.cfg.recall_floor),
                        key=lambda v: v.relative.ratio if v.relative else 0, reverse=True)
        best = ranked[0] if ranked else None
        vs = None
        if len(ranked) > 1:
            vs = paired(series[ranked[0].label], series[ranked[1].label], against=ranked[1].label,
                        against_tree=ranked[1].tree, seconds=seconds, rng=self._rng)
        return Verification(entries=out, best=best.label if best else None,
                            best_iteration=best.iteration if best else None, best_vs_next=vs,
                            told_apart=(vs.low > 1 or vs.high < 1) if vs else None, anchor_tree=anchor.tree,
                            rounds=max((len(s.qps) for s in series.values()), default=0),
                            seconds=round(seconds, 3))

    def match(self, a: Incumbent, b: Incumbent, tries: int) -> list[tuple[Paired | None, Paired | None]]:
        """``tries`` independent sessions of paired rounds of ``a`` against ``b`` (and the anchor),
        each with both servers started, loaded and warmed afresh (two runs of one build differ by
        a percent or two: memory layout): per try, a against b and a against the anchor."""
        out: list[tuple[Paired | None, Paired | None]] = []
        with scorer_slot(on_wait=self._slot_waiting):
            anchor = self._ensure_anchor()
            builds = [self._trusted_build(e.path, cache_binary=False) for e in (a, b)]
            for t in range(tries):
                made: list[Contender] = []
                try:
                    for e, built in zip((a, b), builds, strict=True):
                        self.log(f"try {t + 1}: starting {e.label}")
                        made.append(self._contender(e.label, e.path, cache_binary=False, built=built))
                    clock = Stopwatch()
                    io = Path(tempfile.mkdtemp(prefix=f"match-{t}-", dir=self._servers_dir))
                    series = self._rounds([*made, anchor], io)
                    sa, sb = series[a.label], series[b.label]
                    out.append((paired(sa, sb, against=b.label, against_tree=made[1].tree, seconds=clock.seconds,
                                       rng=self._rng),
                                paired(sa, series[anchor.label], against="anchor", against_tree=anchor.tree,
                                       seconds=clock.seconds, rng=self._rng)))
                    shutil.rmtree(io, ignore_errors=True)
                finally:
                    for c in made:
                        c.server.stop()
        return out

    def _rounds(self, contenders: list[Contender], io: Path) -> dict[str, Series]:
        io.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            for c in contenders:
                c.driver = stack.enter_context(self.runner.driver(c.server, io))
            try:
                return run_rounds(self.cfg, self.dataset, contenders, io, rounds=self.cfg.pair_rounds, rng=self._rng,
                                  log=self.log)
            finally:
                for c in contenders:
                    c.driver = None

    def _ensure_anchor(self) -> Contender:
        if self._anchor is not None and self._anchor.server.alive():
            return self._anchor
        if self._anchor is not None:
            self.log("the anchor's server is gone: starting it again")
            self._anchor.server.stop()
            self._anchor = None
        path = Path(self.cfg.anchor)
        if not path.exists():
            path = REFERENCE / self.cfg.anchor
        self.log(f"starting the anchor ({self.cfg.anchor})")
        self._anchor = self._contender("anchor", path, cache_binary=True)
        return self._anchor

    def _incumbent(self, inc: Incumbent) -> Contender:
        if self._kept is not None and self._kept.tree == inc.tree and self._kept.server.alive():
            self._kept.label = inc.label
            return self._kept
        self.log(f"starting the incumbent best ({inc.label}) for the rematch")
        return self._contender(inc.label, inc.path, cache_binary=False)

    def _contender(self, label: str, path: Path, *, cache_binary: bool,
                   built: tuple[str, BuildOutcome] | None = None) -> Contender:
        """A trusted build (the anchor, or a submission already scored valid) built (unless
        ``built`` gives its tree and build), started, loaded and warmed; its QPS estimated by one pass."""
        tree, build = built or self._trusted_build(path, cache_binary=cache_binary)
        d = Path(tempfile.mkdtemp(prefix="c-", dir=self._servers_dir))
        server = self.runner.start(build)
        try:
            if not self.runner.wait_accepting(server, self.cfg.start_timeout_s):
                raise _AnchorFailed(f"{label}'s server did not start")
            io = d / "io"
            io.mkdir()
            try:
                self._load(server, io, {})
            except _Stop as e:
                raise _AnchorFailed(f"{label}: {e.reason}") from None
            warm = Contender(label, tree, server, 0.0)
            series = self._warm(warm, io)
            if series.problems or not series.qps:
                raise _AnchorFailed(f"{label}: {(series.problems or ['no answer'])[0]}")
            warm.qps_hint = float(np.median(series.qps))
            return warm
        except BaseException:
            server.stop()
            raise

    def _trusted_build(self, path: Path, *, cache_binary: bool) -> tuple[str, BuildOutcome]:
        """``path``'s tree hash and build."""
        d = Path(tempfile.mkdtemp(prefix="b-", dir=self._servers_dir))
        try:
            src = prepare(path, d / "src")
        except Exception as e:
            raise _AnchorFailed(f"{path}: {e}") from None
        tree = tree_hash(src)
        return tree, self._contender_build(src, tree, cache_binary)

    def _contender_build(self, src: Path, tree: str, cache_binary: bool) -> BuildOutcome:
        cached = score_cache_dir().parent / "anchors" / f"{tree[:16]}-{self.runner.name}-{_image_key(self.hardware)}"
        if cache_binary and (cached / "server").is_file():
            return BuildOutcome(ok=True, timed_out=False, seconds=0.0, log_tail="", binary=cached / "server")
        build = self.runner.build(src, self.cfg.build_timeout_s)
        if not build.ok or build.binary is None:
            raise _AnchorFailed("its build failed: " + _first_error(build.log_tail))
        if cache_binary:
            cached.mkdir(parents=True, exist_ok=True)
            tmp = cached / f"server.{os.getpid()}"
            shutil.copy2(build.binary, tmp)
            os.replace(tmp, cached / "server")
            return BuildOutcome(ok=True, timed_out=False, seconds=build.seconds, log_tail="", binary=cached / "server")
        return build

    def _warm(self, c: Contender, io: Path) -> Series:
        """The warm-up (an index built by the first search is built here) and one calibration pass."""
        plan = plan_queries(self.cfg, self.dataset)
        write_vecs(io / "warmup.fvecs", plan.warmup)
        write_vecs(io / "calib.fvecs", plan.queries[: min(len(plan.queries), 2000)])
        n = min(len(plan.queries), 2000)
        atomic_write_bytes(io / "calib.u32", np.arange(n, dtype="<u4"))
        with self.runner.driver(c.server, io) as drv:
            run = drv.run(["query", "--addr", "{addr}", "--queries", "{io}/calib.fvecs", "--orders", "{io}/calib.u32",
                           "--passes", "1", "--concurrency", str(self.cfg.concurrency), "--top-k", str(self.cfg.top_k),
                           "--max-id", str(self.dataset.manifest.n_base), "--pass-time-limit-s", "5",
                           "--request-timeout-s", str(self.cfg.request_timeout_s),
                           "--warmup-queries", "{io}/warmup.fvecs", "--warmup-count", str(self.cfg.warmup_queries),
                           "--warmup-concurrency", "1", "--warmup-time-limit-s", str(self.cfg.warmup_timeout_s),
                           "--ids-out", "{io}/calib.ids", "--dists-out", "{io}/calib.dists",
                           "--out", "{io}/calib.json"], timeout_s=self.cfg.warmup_timeout_s + 60)
        stats = _read_json(io / "calib.json") or {}
        passes = stats.get("passes") or []
        s = Series()
        if passes and passes[0].get("completed"):
            s.qps.append(float(passes[0]["qps"]))
        else:
            s.problems.append(f"the warm-up failed: {run.output[-200:]}")
        return s

    # -- helpers -------------------------------------------------------------------------------

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

    def _record(self, status: Status, reason: str, tree: str, phases: dict[str, float], m: Measurement) -> Score:
        passes = m.passes
        qps_list = [p.qps for p in passes if p.completed]
        measured = status in (Status.VALID, Status.INVALID, Status.CHEAT_SUSPECTED) and bool(qps_list)
        # QPS and latencies come from the passes the judgement certified; the spread shows them all.
        used = used_passes(passes, m.qps_source)
        return Score(
            status=status, reason=reason, valid=status == Status.VALID,
            qps=round(certified_qps(passes, m.qps_source), 2) if measured else None,
            qps_spread=round(max(qps_list) / min(qps_list), 4) if len(qps_list) > 1 and min(qps_list) > 0 else None,
            qps_source=m.qps_source if measured else None,
            qps_confidence=m.qps_confidence if measured else None,
            recall=round(m.recall, 6) if m.recall is not None else None,
            recall_floor=self.cfg.recall_floor,
            p50_ms=median_or_none([p.p50_ms for p in used if p.p50_ms is not None]),
            p95_ms=median_or_none([p.p95_ms for p in used if p.p95_ms is not None]),
            p99_ms=median_or_none([p.p99_ms for p in used if p.p99_ms is not None]),
            passes=passes, queries=m.queries_n, phase_seconds=phases,
            distance_kind=m.distance_kind, error_counts=m.errors,
            error_samples=m.samples, findings=m.findings,
            server_log_tail=m.log_tail[-self.cfg.log_tail_bytes:], protocol=self.cfg.protocol,
            dataset=self.dataset.name, dataset_sha256=self.dataset.manifest.files["base"].sha256,
            tree_hash=tree, settings_hash=self.settings_hash, hardware=self.hardware,
            scored_at=datetime.now(UTC).isoformat(timespec="seconds"),
            relative_qps=m.anchor.ratio if m.anchor is not None and status == Status.VALID else None,
            anchor=m.anchor if status == Status.VALID else None,
            step=m.step if status == Status.VALID else None,
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
            # A step's verdict depends on the run it was scored in: it is not cached with the record.
            atomic_write_bytes(p, score.model_copy(update={"step": None}).model_dump_json(indent=2).encode())


def _claims(score: Score, incumbent: Incumbent) -> bool:
    return bool(score.valid and score.qps and score.qps > incumbent.qps)


def _image_key(hw: Any) -> str:
    return (hw.image_id or "host").replace("sha256:", "")[:12]


def median_or_none(xs: list[float]) -> float | None:
    return float(np.median(xs)) if xs else None


def _caveat(m: Measurement) -> str:
    """What the reason adds to the QPS when it is not the plain median of all passes."""
    parts = []
    if m.qps_source == QpsSource.FIRST_PASS:
        parts.append("pass 1 only: too few fresh queries to check the repeated passes for caching")
    if m.qps_confidence == QpsConfidence.LOW:
        parts.append(f"low confidence: passes under {MIN_TIMED_PASS_S:.0f} s")
    return "".join(f"; {p}" for p in parts)


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


