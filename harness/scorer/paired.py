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

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Callable
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
    notes: list[str] = field(default_factory=list)  # how the rounds were measured, where it is unusual


def run_rounds(cfg: ScorerConfig, dataset: Dataset, contenders: list[Contender], io: Path, *, rounds: int,
               rng: np.random.Generator, log: Callable[[str], None] | None = None) -> dict[str, Series]:
    """``rounds`` rounds over ``contenders`` (each has its ``driver`` open). Each round sends one
    slice of a random permutation of the hidden queries to every contender, in a random order; a
    slice is sized to last about ``cfg.pair_round_s`` for the fastest contender (the permutation is
    cycled when the set is smaller than the rounds need). Each contender's passes go through one
    ``loadgen rounds`` session (its connections kept open between passes); where a session cannot
    be opened, each pass is a run of ``loadgen query`` instead (slower to start, same pass)."""
    queries = np.asarray(dataset.queries("test"))
    if cfg.max_queries:
        queries = queries[: cfg.max_queries]
    nq = queries.shape[0]
    io.mkdir(parents=True, exist_ok=True)
    write_vecs(io / "queries.fvecs", queries)
    least = cfg.concurrency * 50
    fastest = max([c.qps_hint for c in contenders if c.qps_hint > 0] or [1000.0])
    per_round = max(least, math.ceil(fastest * cfg.pair_round_s))
    perm = np.concatenate([rng.permutation(nq) for _ in range(math.ceil(per_round * rounds / nq))])
    gt_ids, gt_d = dataset.groundtruth("test")
    base = dataset.base()
    k = cfg.top_k
    out = {c.label: Series() for c in contenders}
    with contextlib.ExitStack() as stack:
        sessions: dict[str, LoadgenSession | None] = {}
        for i, c in enumerate(contenders):
            assert c.driver is not None
            try:
                sessions[c.label] = stack.enter_context(LoadgenSession(cfg, dataset, c, io, f"s{i}"))
            except SessionFailed as e:
                sessions[c.label] = None
                out[c.label].notes.append(f"one load generator per pass ({e})")
                if log is not None:
                    log(f"{c.label}: one load generator per pass ({e})")
        for r in range(rounds):
            order = perm[r * per_round:(r + 1) * per_round].astype("<u4")
            for i in rng.permutation(len(contenders)):
                c = contenders[int(i)]
                s = out[c.label]
                # The round's slice, as much of it as lasts about a round for this contender.
                sent = order[:min(order.size, max(least, math.ceil(c.qps_hint * cfg.pair_round_s)))]
                tag = f"r{r}-{int(i)}"
                session = sessions[c.label]
                got = session.pass_(sent, tag) if session is not None else _exec_pass(cfg, dataset, c, io, tag, sent)
                if isinstance(got, str) or not c.server.alive():
                    s.problems.append(f"round {r + 1}: the pass failed"
                                      + (" (the server is gone)" if not c.server.alive() else f": {got}"))
                    continue
                qps, ids, dists = got
                s.qps.append(qps)
                j = judge_pass(ids, dists, base, queries[sent], gt_ids[sent], gt_d[sent], k=k, protocol=cfg.protocol,
                               rtol=cfg.distance_rtol)
                if j.problems:
                    s.problems.append(f"round {r + 1}: {j.problems[0]}")
                elif j.recall is not None:
                    s.recall.append(j.recall)
                for f in io.glob(f"{tag}.*"):
                    f.unlink()
            if r + 1 >= min(rounds, cfg.pair_min_rounds) and cfg.pair_precision > 0 \
                    and precise(out, contenders, cfg.pair_precision, rng):
                break
    return out


def _ratios(mine: Series, other: Series) -> np.ndarray:
    """Round by round, ``mine``'s QPS over ``other``'s, for the rounds both measured (QPS > 0)."""
    n = min(len(mine.qps), len(other.qps))
    a, b = np.asarray(mine.qps[:n]), np.asarray(other.qps[:n])
    ok = (a > 0) & (b > 0)
    return a[ok] / b[ok]


def precise(out: dict[str, Series], contenders: list[Contender], precision: float, rng: np.random.Generator) -> bool:
    """Whether every other contender's ratio to the first is known within ``precision``: the
    bootstrap 95% interval of the median ratio is at most ``precision`` of it on either side."""
    first = out[contenders[0].label]
    for c in contenders[1:]:
        ratios = _ratios(first, out[c.label])
        if ratios.size < 3:
            return False
        low, high = bootstrap_median(ratios, rng)
        if (high - low) / 2 > precision * float(np.median(ratios)):
            return False
    return True


class SessionFailed(Exception):
    """A ``loadgen rounds`` session could not be opened."""


class LoadgenSession:
    """``loadgen rounds`` next to one contender's server, for the rounds' passes: the requests are
    built once and the connections stay open, so a pass costs its own time (a fresh load
    generator per pass costs a third of a second more). It is driven over a Unix socket in the
    rounds' folder, one JSON line per pass each way."""

    CONNECT_S = 30.0

    def __init__(self, cfg: ScorerConfig, dataset: Dataset, contender: Contender, io: Path, tag: str) -> None:
        self.cfg, self.io, self.tag = cfg, io, tag
        self.pass_timeout_s = cfg.pair_round_s * 4 + cfg.request_timeout_s + 30
        assert contender.driver is not None
        args = ["rounds", "--addr", "{addr}", "--queries", "{io}/queries.fvecs", "--concurrency", str(cfg.concurrency),
                "--top-k", str(cfg.top_k), "--max-id", str(dataset.manifest.n_base),
                "--request-timeout-s", str(cfg.request_timeout_s), "--io", "{io}", "--control", f"{tag}.sock"]
        self.proc = contender.driver.spawn(args, timeout_s=self.pass_timeout_s * (cfg.pair_rounds + 2) + 600,
                                           stderr=f"{tag}.err")
        self.sock: socket.socket | None = None
        deadline = time.monotonic() + self.CONNECT_S
        while self.sock is None:
            try:
                self.sock = connect_unix(io / f"{tag}.sock")
            except OSError:
                if not self.proc.alive() or time.monotonic() > deadline:
                    self.proc.stop()
                    why = _tail(io / f"{tag}.err") or ("it exited" if not self.proc.alive() else "no control socket")
                    raise SessionFailed(f"loadgen rounds: {why}") from None
                time.sleep(0.02)
        self.lines = self.sock.makefile("rb")

    def pass_(self, order: np.ndarray, out: str) -> tuple[float, np.ndarray, np.ndarray] | str:
        """One timed pass over ``order``: its QPS and the answers row by row, or why it failed."""
        assert self.sock is not None
        request = {"order": order.tolist(), "out": out, "pass_time_limit_s": self.cfg.pair_round_s * 4}
        try:
            self.sock.settimeout(self.pass_timeout_s)
            self.sock.sendall(json.dumps(request).encode() + b"\n")
            line = self.lines.readline()
        except OSError as e:
            return f"the load generator's session broke: {e}"
        if not line:
            return "the load generator's session ended: " + (_tail(self.io / f"{self.tag}.err") or "no reason given")
        try:
            reply = json.loads(line)
        except ValueError:
            return f"the load generator said {line[:200]!r}"
        if reply.get("error"):
            return str(reply["error"])
        p = reply.get("pass") or {}
        if reply.get("aborted"):
            return str(reply["aborted"])
        k = self.cfg.top_k
        ids = np.fromfile(self.io / f"{out}.ids", dtype="<i8").reshape(order.size, k)
        dists = np.fromfile(self.io / f"{out}.dists", dtype="<f4").reshape(order.size, k)
        return float(p.get("qps", 0.0)), ids, dists

    def close(self) -> None:
        if self.sock is not None:
            self.lines.close()
            self.sock.close()  # the load generator exits when its client hangs up
            self.sock = None
        deadline = time.monotonic() + 5
        while self.proc.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.proc.stop()

    def __enter__(self) -> LoadgenSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_unix(path: Path) -> socket.socket:
    """A connection to the Unix socket ``path``, however long the path (a socket's address holds
    108 bytes: a longer one is reached through its folder's descriptor)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) < 100:
            s.connect(str(path))
        else:
            fd = os.open(path.parent, os.O_PATH)
            try:
                s.connect(f"/proc/self/fd/{fd}/{path.name}")
            finally:
                os.close(fd)
    except OSError:
        s.close()
        raise
    return s


def _exec_pass(cfg: ScorerConfig, dataset: Dataset, c: Contender, io: Path, tag: str,
               order: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | str:
    """One pass as its own run of ``loadgen query``: its QPS and the answers in ``order``'s order."""
    assert c.driver is not None
    atomic_write_bytes(io / f"{tag}.u32", order)
    args = ["query", "--addr", "{addr}", "--queries", "{io}/queries.fvecs", "--orders", f"{{io}}/{tag}.u32",
            "--passes", "1", "--concurrency", str(cfg.concurrency), "--top-k", str(cfg.top_k),
            "--max-id", str(dataset.manifest.n_base), "--pass-time-limit-s", str(cfg.pair_round_s * 4),
            "--request-timeout-s", str(cfg.request_timeout_s), "--ids-out", f"{{io}}/{tag}.ids",
            "--dists-out", f"{{io}}/{tag}.dists", "--out", f"{{io}}/{tag}.json"]
    run = c.driver.run(args, timeout_s=cfg.pair_round_s * 4 + 60)
    passes = (_read_json(io / f"{tag}.json") or {}).get("passes") or []
    if run.timed_out or not passes:
        return run.output[-200:] or "no statistics"
    k = cfg.top_k
    ids = np.fromfile(io / f"{tag}.ids", dtype="<i8").reshape(-1, k)[order.astype(np.int64)]
    dists = np.fromfile(io / f"{tag}.dists", dtype="<f4").reshape(-1, k)[order.astype(np.int64)]
    return float(passes[0].get("qps", 0.0)), ids, dists


def _tail(path: Path, n: int = 300) -> str:
    try:
        return path.read_text(errors="replace").strip()[-n:]
    except OSError:
        return ""


def paired(mine: Series, other: Series, *, against: str, against_tree: str, seconds: float,
           rng: np.random.Generator) -> Paired | None:
    """The ratio of ``mine`` to ``other`` round by round: median and bootstrap 95% interval.
    None when fewer than 3 rounds measured both."""
    n = min(len(mine.qps), len(other.qps))
    ratios = _ratios(mine, other)
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
