"""The harness's own cost per iteration, model and scorer excluded, and its memory over a long run.

A scripted model (4 tool calls per iteration) drives a local sandbox; the scorer is a stub that
depends only on the tree. Everything else is the real loop: ledger appends with fsync, git commits
and tags, diffs, prompts with the growing history table, state snapshots.

    python benchmarks/loop_overhead.py --iterations 500
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.loop.support import StubScorer, make_config  # noqa: E402

from harness.run import Run  # noqa: E402
from harness.sandbox.local_backend import LocalSandbox  # noqa: E402


class TimedScorer(StubScorer):
    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0

    def score(self, path, **kw):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return super().score(path, **kw)
        finally:
            self.seconds += time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(Path(tmp), episodes=args.iterations, **{"budget.max_iterations": args.iterations})
        scorer = TimedScorer()
        run = Run.create(cfg, Path(tmp) / "run", sandbox_factory=lambda r: LocalSandbox(r.workspace.path),
                         scorer_factory=lambda r: scorer)
        marks: list[tuple[int, float, float]] = []
        original = run.iteration

        def iteration(n: int):  # type: ignore[no-untyped-def]
            out = original(n)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            marks.append((n, time.perf_counter(), rss))
            return out

        run.iteration = iteration  # type: ignore[method-assign]
        t0 = time.perf_counter()
        summary = run.execute()
        wall = time.perf_counter() - t0
        tool_s = sum(e.get("duration_s") or 0 for e in run.ledger.events("tool_call"))
        model_s = sum(e.get("latency_s") or 0 for e in run.ledger.events("model_call"))
        n = summary.iterations
        overhead = wall - tool_s - model_s - scorer.seconds
        print(f"iterations            {n}")
        print(f"wall                  {wall:.1f} s")
        print(f"tool execution        {tool_s:.1f} s (local sandbox commands)")
        print(f"model (scripted)      {model_s:.2f} s")
        print(f"scorer (stub)         {scorer.seconds:.1f} s")
        print(f"harness overhead      {overhead / n * 1000:.1f} ms per iteration")
        for k in (1, 10, 100, 250, n):
            m = next((x for x in marks if x[0] == k), None)
            if m:
                print(f"peak RSS after {k:4d}  {m[2]:.0f} MiB")
        first = [b[1] - a[1] for a, b in zip(marks[:50], marks[1:51], strict=False)]
        last = [b[1] - a[1] for a, b in zip(marks[-51:-1], marks[-50:], strict=False)]
        if first and last:
            print(f"iteration wall, first 50 vs last 50: {sum(first) / len(first) * 1000:.0f} ms vs "
                  f"{sum(last) / len(last) * 1000:.0f} ms")
        print(f"events.jsonl          {(run.dir / 'events.jsonl').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
