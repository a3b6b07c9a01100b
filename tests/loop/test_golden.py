"""The golden trajectory: a short scripted run's ledger, normalized (times, hashes, hosts and token
estimates taken out) and checked in, so that any change to what the loop does shows up as a diff to
review. After a deliberate change: ``STAIRCASE_UPDATE_GOLDEN=1 python -m pytest tests/loop/test_golden.py``
and commit the new file with the change."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from harness.ledger import read_events
from harness.models.scripted import ScriptedModel
from harness.run import Run
from harness.sandbox.local_backend import LocalSandbox
from harness.scorer.record import Score, Status
from tests.loop.support import StubScorer, make_config

GOLDEN = Path(__file__).parent / "golden" / "short-run.jsonl"
# What differs between two runs of the same script on two machines or days.
VOLATILE = {"ts", "host", "pid", "commit", "latency_s", "duration_s", "usage", "cost_usd", "prices",
            "repaired_bytes", "scored_at", "tree_hash", "hardware", "full_output"}


def normalize(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, str):  # a command's time in its output: "[exit code 0, 0.1 s]"
        return re.sub(r"(\[exit code -?\d+|timed out \(killed\)), [\d.]+ s\]", r"\1, T s]", value)
    return value


def golden_lines(run_dir: Path) -> list[str]:
    return [json.dumps(normalize(e.model_dump(mode="json")), sort_keys=True) for e in read_events(run_dir)]


class SourceScorer(StubScorer):
    """The stub's score of the submission's own source file only (docs shipped with the skeleton,
    such as API.md, may change without changing the trajectory)."""

    def score(self, path: Path, **kw: object) -> Score:
        src = Path(path) / "src" / "distance.rs"
        h = hashlib.sha256(src.read_bytes()).hexdigest()
        score = super().score(path, **kw)
        valid = int(h[6], 16) % 4 != 0
        return score.model_copy(update={"qps": float(100 + int(h[:6], 16) % 900), "valid": valid,
                                        "status": Status.VALID if valid else Status.INVALID})


def test_the_loop_does_what_the_golden_trajectory_says(tmp_path):
    cfg = make_config(tmp_path, episodes=3, **{"budget.max_iterations": 3, "budget.max_tool_calls_per_iteration": 3})
    die = [{"name": "nosuchtool", "arguments": {}}]
    model = ScriptedModel([
        [{"name": "write_file", "arguments": {"path": "src/distance.rs", "content": "// one\n"}},
         {"name": "bash", "arguments": {"command": "echo 'iteration 1' >> NOTES.md; cat NOTES.md | wc -l"}},
         {"name": "submit", "arguments": {"message": "first"}}],
        die + [{"name": "str_replace", "arguments": {"path": "src/distance.rs", "old": "one", "new": "two"}},
               {"name": "read_file", "arguments": {"path": "src/distance.rs"}}],  # the tool cap ends it
        [{"name": "bash", "arguments": {"command": "echo same"}}] * 2
        + [{"name": "submit", "arguments": {"message": "third"}}],
    ])
    scorer = SourceScorer()
    run = Run.create(cfg, tmp_path / "run", model=model, sandbox_factory=lambda r: LocalSandbox(r.workspace.path),
                     scorer_factory=lambda r: scorer)
    run.execute()
    got = golden_lines(run.dir)
    if os.environ.get("STAIRCASE_UPDATE_GOLDEN"):
        GOLDEN.write_text("\n".join(got) + "\n")
    want = GOLDEN.read_text().splitlines()
    diff = "\n".join(difflib.unified_diff(want, got, "golden", "this run", lineterm="", n=1))
    assert got == want, f"the loop's trajectory changed; review the diff and update the golden file:\n{diff}"
