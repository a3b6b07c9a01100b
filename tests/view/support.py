"""Runs written event by event with the real Ledger and typed events (no sandbox, no scorer): the live
run the browser tests append to, and the 1,000-iteration run of ``benchmarks/view_scale.py``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from harness.events import IterationEnd, IterationStart, ModelCall, RunStart, ScoreEvent, Submission, ToolCallEvent
from harness.ledger import Ledger, write_text_durable
from harness.models.base import Message, ToolCall, Usage
from harness.scorer.record import Hardware, Paired, Score, Status, StepCheck, Verdict

HARDWARE = Hardware(cpu_model="test-cpu", host_cpus=2, server_cpus="0", loadgen_cpus="1", memory_limit="1g",
                    runner="stub")


def start(ledger: Ledger, name: str, model: str = "synthetic-model") -> None:
    ledger.append(RunStart(schema_version=2, name=name, model=model, provider="scripted", dataset="tiny",
                           preset="long-horizon"))
    (ledger.run_dir / "config.yaml").write_text("budget:\n  max_iterations: 50\n  max_tool_calls: 400\n")


def score(qps: float, valid: bool = True, anchor: float | None = None, verdict: str | None = None) -> Score:
    """A score record; with ``anchor``, the paired fields (ratio to an anchor of that QPS, and the
    verdict of a claimed new best)."""
    paired = None
    if anchor:
        r = qps / anchor
        paired = Paired(against="anchor", against_tree="t0", rounds=3, ratio=r, low=r * 0.97, high=r * 1.03,
                        qps=[qps] * 3, other_qps=[anchor] * 3, seconds=3.0)
    step = None
    if verdict and paired:
        step = StepCheck(verdict=Verdict(verdict), against_iteration=None, min_effect=0.02, paired=paired)
    return Score(status=Status.VALID if valid else Status.INVALID, reason="ok" if valid else "recall 0.5 < 0.95",
                 valid=valid, qps=qps, recall=0.99 if valid else 0.5, recall_floor=0.95, p50_ms=1.2, p95_ms=2.0,
                 p99_ms=3.4, protocol="stub", dataset="tiny", dataset_sha256="0", tree_hash=f"{qps}",
                 settings_hash="0", hardware=HARDWARE, scored_at=datetime.now(UTC).isoformat(),
                 phase_seconds={"build": 1.0, "load": 0.5, "query": 2.0},
                 findings=[] if valid else ["recall below the floor"],
                 relative_qps=paired.ratio if paired else None, anchor=paired, step=step)


def iteration(ledger: Ledger, n: int, s: Score | None, message: str = "", tool_calls: int = 2,
              output_bytes: int = 200) -> None:
    """One whole iteration: model turns with tool calls and their outputs, a submission, its score."""
    ledger.append(IterationStart(iteration=n, start_ref=f"sub-{n - 1:04d}" if n > 1 else "start"))
    for t in range(tool_calls):
        args = json.dumps({"command": f"cargo build --release # iteration {n} call {t}"})
        ledger.append(ModelCall(iteration=n, turn=t, message=Message(
            role="assistant", content=f"Turn {t}: let me look at the build.", reasoning=f"thinking about step {t}",
            tool_calls=[ToolCall(id=f"c{n}-{t}", name="bash", arguments=args)]),
            usage=Usage(input_tokens=2000, output_tokens=100), cost_usd=0.01))
        out = (f"output line of call {t}\n" * (output_bytes // 22 + 1))[:output_bytes]
        ledger.append(ToolCallEvent(iteration=n, turn=t, call_id=f"c{n}-{t}", name="bash", arguments=args,
                                    output=out, exit_code=0, duration_s=0.5))
    message = message or f"step {n}"
    ledger.append(Submission(iteration=n, message=message, tag=f"sub-{n:04d}", files_changed=1, lines_added=n,
                             lines_removed=1))
    d = ledger.iteration_dir(n)
    write_text_durable(d / "diff.patch", f"diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n"
                                         f"@@ -1,1 +1,1 @@\n-// before {n}\n+// after {n}: {message}\n")
    if s is not None:
        ledger.append(ScoreEvent(iteration=n, score=s))
    ledger.append(IterationEnd(iteration=n, reason="submitted", tool_calls=tool_calls))


def write_run(run_dir: Path, plan: list[tuple[float, bool, str | None]], name: str = "synthetic",
              output_bytes: int = 200, anchor: float | None = 1000.0) -> Path:
    """A finished run from (qps, valid, verdict) per iteration."""
    from harness.events import RunEnd

    ledger = Ledger(run_dir)
    try:
        start(ledger, name)
        for n, (qps, valid, verdict) in enumerate(plan, 1):
            iteration(ledger, n, score(qps, valid, anchor, verdict), output_bytes=output_bytes)
        ledger.append(RunEnd(reason="budget: max_iterations"))
    finally:
        ledger.close()
    return run_dir
