"""A fault-test run in a process of its own, so that a test can signal it, fill its disk or lock it.

``python -m tests.faults.drive RUN_DIR TMP`` creates the run (or resumes it when RUN_DIR already
holds one) with a local sandbox and the stub scorer, runs it to its end or stop, prints the summary
as JSON and exits 0 (ended) or 3 (stopped). Environment knobs:
- ``FAULT_EPISODES`` (3): iterations in the script;
- ``FAULT_SLEEP_S`` (0): iteration 2 runs ``sleep`` this long (a command to be interrupted in);
- ``FAULT_SCORE_SLEEP_S`` (0): the first scoring sleeps this long (a scoring to be interrupted in);
- ``FAULT_BLOB_KB`` (0): iteration 2 writes a file of this many KiB into the workspace (fills a disk);
- ``FAULT_SANDBOX_IMAGE`` (unset): the Docker sandbox on this image instead of the local one.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import yaml

from harness.run import Run
from harness.sandbox.local_backend import LocalSandbox
from tests.loop.support import StubScorer, make_config


def write_script(path: Path, episodes: int, sleep_s: float, blob_kb: int) -> Path:
    eps = []
    for i in range(1, episodes + 1):
        steps = [{"name": "write_file", "arguments": {"path": "src/distance.rs", "content": f"// version {i}\n"}}]
        if i == 2 and sleep_s:
            steps.append({"name": "bash", "arguments": {"command": f"sleep {sleep_s}"}})
        if i == 2 and blob_kb:
            steps.append({"name": "bash", "arguments": {"command": f"head -c {blob_kb}K /dev/urandom > blob.bin"}})
        steps += [{"name": "bash", "arguments": {"command": f"echo 'iteration {i}' >> NOTES.md"}},
                  {"name": "submit", "arguments": {"message": f"version {i}"}}]
        eps.append(steps)
    path.write_text(yaml.safe_dump({"episodes": eps}))
    return path


class SlowFirstScorer(StubScorer):
    """The stub scorer, sleeping on its first call in the first process that scores (a marker file)."""

    def __init__(self, marker: Path, sleep_s: float) -> None:
        super().__init__()
        self.marker, self.sleep_s = marker, sleep_s

    def score(self, path: Path, **kw: object):  # type: ignore[no-untyped-def]
        if self.sleep_s and not self.marker.exists():
            self.marker.write_text("slept")
            time.sleep(self.sleep_s)
        return super().score(path, **kw)


def main() -> None:
    run_dir, tmp = Path(sys.argv[1]), Path(sys.argv[2])
    scorer = SlowFirstScorer(tmp / "slept-once", float(os.environ.get("FAULT_SCORE_SLEEP_S", "0")))
    kw: dict[str, object] = {"scorer_factory": lambda run: scorer}
    image = os.environ.get("FAULT_SANDBOX_IMAGE")
    if not image:
        kw["sandbox_factory"] = lambda run: LocalSandbox(run.workspace.path)
    if (run_dir / "config.yaml").exists():
        run = Run.open(run_dir, **kw)  # type: ignore[arg-type]
    else:
        episodes = int(os.environ.get("FAULT_EPISODES", "3"))
        cfg = make_config(tmp, episodes=episodes)
        script = write_script(tmp / "fault-script.yaml", episodes, float(os.environ.get("FAULT_SLEEP_S", "0")),
                              int(os.environ.get("FAULT_BLOB_KB", "0")))
        cfg.model.script = str(script)
        if image:
            cfg.sandbox.image = image
        run = Run.create(cfg, run_dir, **kw)  # type: ignore[arg-type]
    summary = run.execute()
    print(summary.model_dump_json())
    sys.exit(3 if summary.status == "stopped" else 0)


if __name__ == "__main__":
    main()
