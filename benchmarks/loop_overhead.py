"""The soak: the harness's own cost per iteration, and whether it stays flat over a long run.

A scripted model (4 tool calls per iteration) drives a local sandbox; a stand-in scorer depends only
on the tree. Both can be given a fixed latency (``--model-latency-s`` per call, ``--score-s`` per
scoring) so that the run has the shape of a real one. Everything else is the real loop: typed
ledger appends with fsync, git commits and tags, diffs, prompts with the growing history table,
state snapshots, the run's lock.

Measured at every iteration's end (through a ledger observer, as the CLI's progress is):
resident memory (VmRSS, not the peak), open file descriptors, the run directory's size; and the
harness's overhead = wall time - model time - tool execution - scoring.

    python benchmarks/loop_overhead.py --iterations 500 --model-latency-s 0.05 --score-s 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.loop.support import StubScorer, make_config  # noqa: E402

from harness.events import Event, IterationEnd, ModelCall, ToolCallEvent  # noqa: E402
from harness.ledger import read_events  # noqa: E402
from harness.models.scripted import ScriptedModel  # noqa: E402
from harness.run import Run  # noqa: E402
from harness.sandbox.local_backend import LocalSandbox  # noqa: E402


class TimedScorer(StubScorer):
    def __init__(self, sleep_s: float) -> None:
        super().__init__()
        self.sleep_s, self.seconds = sleep_s, 0.0

    def score(self, path, **kw):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            time.sleep(self.sleep_s)
            return super().score(path, **kw)
        finally:
            self.seconds += time.perf_counter() - t0


class SlowScripted(ScriptedModel):
    """The scripted model with a fixed latency per call (counted as model time, as a provider's is)."""

    def __init__(self, base: ScriptedModel, latency_s: float) -> None:
        super().__init__(base.episodes, base.name)
        self.latency_s = latency_s

    def complete(self, messages, tools):  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        time.sleep(self.latency_s)
        resp = super().complete(messages, tools)
        return resp.model_copy(update={"latency_s": time.monotonic() - t0})


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--model-latency-s", type=float, default=0.05)
    ap.add_argument("--score-s", type=float, default=1.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(Path(tmp), episodes=args.iterations, **{"budget.max_iterations": args.iterations})
        scorer = TimedScorer(args.score_s)
        marks: dict[int, dict[str, float]] = {}
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()

        def observe(e: Event) -> None:
            if isinstance(e, IterationEnd) and (e.iteration in (1, 10, 50, 100, 250) or e.iteration % 50 == 0):
                marks[e.iteration] = {"t": time.perf_counter() - t0, "rss_mib": rss_mib(),
                                      "fds": len(os.listdir("/proc/self/fd")), "dir_bytes": dir_bytes(run_dir)}

        model = SlowScripted(ScriptedModel.from_config(cfg.model.script), args.model_latency_s)
        run = Run.create(cfg, run_dir, model=model, sandbox_factory=lambda r: LocalSandbox(r.workspace.path),
                         scorer_factory=lambda r: scorer, observers=[observe])
        summary = run.execute()
        wall = time.perf_counter() - t0
        events = list(read_events(run_dir))
        tool_s = sum(e.duration_s or 0 for e in events if isinstance(e, ToolCallEvent))
        model_s = sum(e.latency_s for e in events if isinstance(e, ModelCall))
        n = summary.iterations
        overhead = wall - tool_s - model_s - scorer.seconds
        last, at50 = marks[max(marks)], marks.get(50, marks[min(marks)])
        out = {
            "iterations": n, "wall_s": round(wall, 1), "model_s": round(model_s, 1), "tool_s": round(tool_s, 1),
            "scorer_s": round(scorer.seconds, 1), "overhead_ms_per_iteration": round(overhead / n * 1000, 1),
            "overhead_share_of_wall": round(overhead / wall, 4),
            "rss_mib_at_50": round(at50["rss_mib"], 1), "rss_mib_at_end": round(last["rss_mib"], 1),
            "rss_growth_50_to_end": round(last["rss_mib"] / at50["rss_mib"] - 1, 4),
            "fds": {str(k): int(v["fds"]) for k, v in sorted(marks.items())},
            "run_dir_kib_per_iteration": round((last["dir_bytes"] - at50["dir_bytes"]) / 1024
                                               / max(1, max(marks) - 50), 1),
            "events_mb": round((run_dir / "events.jsonl").stat().st_size / 1e6, 2),
            "overhead_ms_first_50_vs_last_50": _first_last(marks),
        }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for k, v in out.items():
        print(f"{k:34s} {v}")


def _first_last(marks: dict[int, dict[str, float]]) -> str:
    keys = sorted(marks)
    if len(keys) < 3:
        return "-"
    a, b = keys[-2], keys[-1]
    first = marks[50]["t"] / 50 if 50 in marks else marks[keys[0]]["t"] / keys[0]
    return f"{first * 1000:.0f} ms vs {(marks[b]['t'] - marks[a]['t']) / (b - a) * 1000:.0f} ms per iteration (wall)"


if __name__ == "__main__":
    main()
