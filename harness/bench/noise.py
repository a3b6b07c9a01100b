"""``staircase bench noise``: does a score hold on a noisy machine?

The same submission is rescored several times (a) as the machine is, and (b) with a neighbour
injected on the server's CPUs that changes between rescorings (CPU and memory-bandwidth hogs with
different duty cycles, started here and stopped after each scoring). For both, raw QPS max/min and
relative QPS (paired with the anchor) max/min. Then two matches in paired rounds, several tries
each: the submission against a copy of itself slowed by a fixed busy wait per search, sized from
the submission's measured QPS so that the copy serves a set share fewer queries per second (told
apart = ``confirmed``), and against itself (``within_noise``). And what pairing costs: the paired
rounds' share of a scoring's wall time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from harness.scorer.base import Incumbent
from harness.scorer.record import Paired
from harness.scorer.scorer import BenchmarkScorer
from harness.scorer.submission import prepare, tree_hash

Log = Callable[[str], None]

# Neighbours, one per rescoring in case (b), cycled: (kind, duty cycle). None: no neighbour.
NEIGHBOURS: list[tuple[str, float] | None] = [None, ("cpu", 0.6), ("membw", 0.5), ("cpu", 0.3), ("membw", 1.0)]

# A hog: busy for duty x 50 ms, then idle for the rest of 50 ms, until killed.
HOG = r"""
import sys, time
kind, duty = sys.argv[1], float(sys.argv[2])
a = np.ones(16 << 20, dtype=np.float32); b = np.empty_like(a)  # 64 MB each: far beyond the caches
period = 0.05
while True:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < duty * period:
        if kind == "membw":
            np.copyto(b, a); np.copyto(a, b)
        else:
            x = 0
            for i in range(20000):
                x += i * i
    rest = period - (time.perf_counter() - t0)
    if rest > 0:
        time.sleep(rest)
"""


class Rescorings(BaseModel):
    case: str
    neighbours: list[str]
    raw_qps: list[float]
    relative_qps: list[float]
    raw_max_min: float | None
    relative_max_min: float | None
    anchor: list[Paired] = []  # each rescoring's rounds against the anchor: interval, QPS round by round
    paired_s: list[float]
    total_s: list[float]


class Match(BaseModel):
    kind: str  # "10% step" | "self"
    ratios: list[float]
    lows: list[float]
    highs: list[float]
    verdicts: list[str]  # confirmed | within_noise, per try


class NoiseReport(BaseModel):
    dataset: str
    n_base: int
    submission: str
    slowed_by: float  # the slowed copy's intended loss of QPS (0.10: 10% fewer queries per second)
    extra_us: float | None = None  # its busy wait per search, sized from the submission's measured QPS
    anchor: str
    rounds: int
    round_s: float
    server_cpus: str
    cases: list[Rescorings] = []
    matches: list[Match] = []
    pairing_share: float | None = None  # paired rounds' share of a scoring's wall time (median)


def spin_for(slowdown: float, qps: float) -> float:
    """The busy wait per search, in microseconds, that makes a server answering ``qps`` queries per
    second on its one CPU answer ``slowdown`` fewer: a query's service time is 1/qps, and
    1/(1/qps + e) = (1 - slowdown) qps gives e = slowdown / (1 - slowdown) / qps."""
    if not 0 < slowdown < 1 or qps <= 0:
        raise ValueError(f"a slowdown in (0, 1) and a positive QPS are needed (got {slowdown}, {qps})")
    return slowdown / (1 - slowdown) / qps * 1e6


def slowed_copy(src: Path, dest: Path, extra_us: float) -> Path:
    """``src`` (any submission ``prepare`` takes) with every search followed by a busy wait of
    ``extra_us`` microseconds: the same answers, a fixed amount of extra work per query."""
    crate = prepare(src, dest)
    db = crate / "src" / "db.rs"
    text = db.read_text()
    sig = re.search(r"pub fn search\(&self, (\w+): &\[f32\], (\w+): u32\) -> Vec<SearchResult> \{", text)
    if sig is None:
        raise ValueError(f"{src}: no `pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult>` in src/db.rs")
    renamed = "#[allow(dead_code)]\n    fn search_unslowed" + sig.group(0)[len("pub fn search"):]
    text = text.replace(sig.group(0), renamed)
    db.write_text(text + f"""

impl VectorDB {{
    pub fn search(&self, vector: &[f32], top_k: u32) -> Vec<SearchResult> {{
        let out = self.search_unslowed(vector, top_k);
        let extra = std::time::Duration::from_nanos({round(extra_us * 1000)});
        let t = std::time::Instant::now();
        while t.elapsed() < extra {{
            std::hint::spin_loop();
        }}
        out
    }}
}}
""")
    return crate


@contextmanager
def neighbour(kind: tuple[str, float] | None, cpus: str) -> Iterator[str]:
    """A hog on ``cpus`` for the block (nothing when ``kind`` is None); yields its description."""
    if kind is None:
        yield "none"
        return
    argv = [sys.executable, "-c", HOG, kind[0], str(kind[1])]
    if shutil.which("taskset"):
        argv = ["taskset", "-c", cpus, *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"{kind[0]} hog, {kind[1]:.0%} duty, on CPUs {cpus}"
    finally:
        proc.kill()
        proc.wait()


def max_min(xs: list[float]) -> float | None:
    return round(max(xs) / min(xs), 4) if len(xs) > 1 and min(xs) > 0 else None


def rescore(scorer: BenchmarkScorer, path: Path, n: int, case: str, log: Log) -> Rescorings:
    out = Rescorings(case=case, neighbours=[], raw_qps=[], relative_qps=[], raw_max_min=None, relative_max_min=None,
                     paired_s=[], total_s=[])
    for i in range(n):
        kind = NEIGHBOURS[i % len(NEIGHBOURS)] if case == "neighbour" else None
        with neighbour(kind, scorer.cfg.server_cpus) as what:
            log(f"{case}: rescoring {i + 1} of {n} (neighbour: {what})")
            s = scorer.score(path, use_cache=False)
        if not s.valid or s.qps is None or s.relative_qps is None:
            raise RuntimeError(f"rescoring {i + 1} gave no paired valid score: {s.status.value}: {s.reason}")
        out.neighbours.append(what)
        out.raw_qps.append(s.qps)
        out.relative_qps.append(s.relative_qps)
        if s.anchor is not None:
            out.anchor.append(s.anchor)
        out.paired_s.append(s.phase_seconds.get("paired", 0.0))
        # The scoring's own time: from taking the machine's slot to letting it go (no wait for it).
        span = (datetime.fromisoformat(s.measured_to) - datetime.fromisoformat(s.measured_from)).total_seconds() \
            if s.measured_from and s.measured_to else s.phase_seconds.get("total", 0.0)
        out.total_s.append(round(span, 3))
        log(f"  raw {s.qps:,.0f} QPS, {s.relative_qps:.3f}x the anchor")
    out.raw_max_min, out.relative_max_min = max_min(out.raw_qps), max_min(out.relative_qps)
    return out


def measure_qps(scorer: BenchmarkScorer, path: Path, log: Log) -> float:
    """One scoring's raw QPS (the step's busy wait is sized from it when no quiet case ran)."""
    log("step: one scoring to size the slowed copy's busy wait")
    s = scorer.score(path, use_cache=False)
    if not s.valid or not s.qps:
        raise RuntimeError(f"the submission gave no valid score to size the step from: {s.status.value}: {s.reason}")
    return s.qps


def match(scorer: BenchmarkScorer, a: Path, b: Path, tries: int, kind: str, log: Log) -> Match:
    """``tries`` sessions of paired rounds of ``a`` against ``b`` (each built, loaded and warmed once):
    the verdict is ``confirmed`` when the interval of a/b is above 1 + ``min_effect``, as for a
    claimed step in a run."""
    m = Match(kind=kind, ratios=[], lows=[], highs=[], verdicts=[])
    with tempfile.TemporaryDirectory() as tmp:
        ta = tree_hash(prepare(a, Path(tmp) / "a"))
        tb = tree_hash(prepare(b, Path(tmp) / "b"))
    log(f"{kind}: {tries} tries")
    results = scorer.match(Incumbent(path=a, tree=ta, qps=0, label="A"), Incumbent(path=b, tree=tb, qps=0, label="B"),
                           tries)
    for i, (ab, _) in enumerate(results):
        if ab is None:
            raise RuntimeError(f"try {i + 1}: too few rounds measured both sides")
        m.ratios.append(ab.ratio)
        m.lows.append(ab.low)
        m.highs.append(ab.high)
        m.verdicts.append("confirmed" if ab.low > 1 + scorer.cfg.min_effect else "within_noise")
        log(f"  try {i + 1}: A/B {ab.ratio:.3f} [{ab.low:.3f}, {ab.high:.3f}]: {m.verdicts[-1]}")
    return m
