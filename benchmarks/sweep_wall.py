"""Wall time of a sweep against the same runs one after another, on this machine.

    python benchmarks/sweep_wall.py [--iterations 3] [--model-s 1.0] [--score-s 2.0] [--concurrency 1,2] [--json]

Four runs (2 configs x 2 seeds, the scripted reference model) with the test stand-in for a run
(tests/sweep/driver.py: the real loop with a local sandbox; each model call waits ``--model-s`` like
a remote model's latency, each scoring holds the machine's scorer slot for ``--score-s``). They are
run (1) one after another, each as its own process, then (2) as one `staircase sweep` at each
``--concurrency``. The runs' agents overlap; their scorings take turns on the slot, so a sweep's wall
time is bounded below by the sum of the scorings. Prints the wall times and, from the score
records, the scorings' total and whether any two overlapped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.ledger import read_events  # noqa: E402
from harness.sweep.spec import load_sweep, plan  # noqa: E402
from tests.sweep.support import DRIVER, slot_intervals, write_sweep  # noqa: E402


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return time.monotonic() - t0


def _scorings(run_dirs: list[Path]) -> dict[str, object]:
    from harness.events import ScoreEvent

    scores = {d.name: [e for e in read_events(d) if isinstance(e, ScoreEvent)] for d in run_dirs}
    ivs = slot_intervals(scores)  # type: ignore[arg-type]
    overlaps = sum(1 for a, b in zip(ivs, ivs[1:], strict=False) if b[0] < a[1])
    return {"scorings": len(ivs), "scoring_s": round(sum((b - a).total_seconds() for a, b, _, _ in ivs), 1),
            "overlapping_scorings": overlaps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--model-s", type=float, default=1.0, help="latency of each model call")
    p.add_argument("--score-s", type=float, default=2.0, help="how long each scoring holds the slot")
    p.add_argument("--concurrency", default="1,2", help="the sweep's concurrencies to measure")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sweep-wall-"))
    env = os.environ | {"STAIRCASE_SLOT_DIR": str(tmp / "slots"), "SWEEP_STUB_SCORE_S": str(args.score_s),
                        "SWEEP_STUB_MODEL_S": str(args.model_s), "PYTHONPATH": str(REPO)}
    n = args.iterations
    sweep_file = write_sweep(tmp, seeds=[1, 2], iterations={"a": n, "b": n})
    spec, _ = load_sweep(sweep_file)
    out: dict[str, object] = {"runs": 4, "iterations_per_run": n, "model_call_s": args.model_s,
                              "scoring_s": args.score_s, "cpus": os.cpu_count(),
                              "load_average_at_start": os.getloadavg()[0]}
    # One after another: the same four runs, each its own process, as the sweep would launch them.
    seq_dir = tmp / "sequential"
    seq_dir.mkdir()
    t0 = time.monotonic()
    dirs = []
    for run, cfg in plan(spec):
        from harness.config import config_to_yaml

        cfg_path = seq_dir / f"{run.run_id}.yaml"
        cfg_path.write_text(config_to_yaml(cfg))
        dirs.append(seq_dir / run.run_id)
        _timed([*DRIVER, "run", str(cfg_path), "--run-dir", str(dirs[-1]), "--json"], env)
    out["sequential_s"] = round(time.monotonic() - t0, 1)
    out["sequential"] = _scorings(dirs)
    for c in [int(x) for x in args.concurrency.split(",")]:
        d = tmp / f"sweep-c{c}"
        wall = _timed([sys.executable, "-m", "harness.cli", "sweep", str(sweep_file), "--sweep-dir", str(d),
                       "--set", f"sweep.concurrency={c}", "--json"], env)
        out[f"sweep_concurrency_{c}_s"] = round(wall, 1)
        out[f"sweep_concurrency_{c}"] = _scorings(sorted((d / "runs").iterdir()))
    out["load_average_at_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for k, v in out.items():
        print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
