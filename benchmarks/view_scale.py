"""``staircase view`` at scale: a generated run of 1,000 iterations with a ~200 MB ledger (big tool
outputs), served by ``staircase view`` in its own process and opened in headless Chromium.

Measures: the time the server takes to index the ledger once (in the background, at start), the run
page's first contentful paint, the staircase drawn and the tables drawn (from navigation start, the
browser's clock), cold (first visit) and warm, the payload of the run's data, an iteration page's
load, and the server's memory (VmRSS and its peak VmHWM, from /proc). The live update's latency is
measured by tests/view/test_browser.py.

    python benchmarks/view_scale.py [--iterations 1000] [--output-kb 20] [--calls 10] [--dir /tmp/view-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.events import (  # noqa: E402
    IterationEnd,
    IterationStart,
    ModelCall,
    RunEnd,
    RunStart,
    ScoreEvent,
    Submission,
    ToolCallEvent,
    event_json,
)
from harness.models.base import Message, ToolCall, Usage  # noqa: E402
from tests.view.support import score  # noqa: E402


def generate(run_dir: Path, iterations: int, calls: int, output_kb: int) -> int:
    """Write the ledger directly (one serializer with the Ledger: event_json; no fsync per line, so a
    200 MB run takes seconds to make) and each iteration's diff. Returns the ledger's size."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"budget:\n  max_iterations: {iterations}\n")
    seq, ts = 0, time.time() - iterations * 60.0
    best = 0.0
    filler = ("x" * 99 + "\n") * (output_kb * 10)
    with (run_dir / "events.jsonl").open("wb") as f:
        def put(e: object) -> None:
            nonlocal seq, ts
            seq += 1
            ts += 0.5
            f.write(event_json(e.model_copy(update={"seq": seq, "ts": ts})) + b"\n")  # type: ignore[attr-defined]

        put(RunStart(schema_version=2, name="scale", model="synthetic", provider="scripted", preset="long-horizon"))
        for n in range(1, iterations + 1):
            put(IterationStart(iteration=n))
            for t in range(calls):
                args = json.dumps({"command": f"cargo bench # {n}.{t}"})
                put(ModelCall(iteration=n, turn=t, message=Message(role="assistant", content=f"turn {t}",
                              tool_calls=[ToolCall(id=f"{n}-{t}", name="bash", arguments=args)]),
                              usage=Usage(input_tokens=30_000, output_tokens=400), cost_usd=0.02))
                put(ToolCallEvent(iteration=n, turn=t, call_id=f"{n}-{t}", name="bash", arguments=args,
                                  output=f"call {n}.{t}\n" + filler, exit_code=0, duration_s=1.0))
            qps = 1000 * (1 + n / 100) * (0.9 + 0.2 * ((n * 7919) % 11) / 11)
            valid = n % 9 != 0
            verdict = None
            if valid and qps > best:
                verdict = "confirmed" if qps > best * 1.05 else "within_noise"
                best = qps
            put(Submission(iteration=n, message=f"change {n}", tag=f"sub-{n:04d}", files_changed=1, lines_added=3))
            put(ScoreEvent(iteration=n, score=score(qps, valid, 1000.0 + n % 13, verdict)))
            put(IterationEnd(iteration=n, reason="submitted", tool_calls=calls))
            d = run_dir / "iterations" / f"{n:04d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "diff.patch").write_text(f"diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n"
                                          f"@@ -1 +1 @@\n-// {n - 1}\n+// {n}\n")
        put(RunEnd(reason="budget"))
    return (run_dir / "events.jsonl").stat().st_size


def memory(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":")
            out[k + "_mb"] = round(int(v.split()[0]) / 1024, 1)
    return out


def get(url: str) -> tuple[float, int]:
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=120) as r:
        n = len(r.read())
    return time.monotonic() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--output-kb", type=int, default=20)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/view-scale"))
    a = ap.parse_args()
    run_dir = a.dir / "runs" / "scale"
    result: dict[str, object] = {}
    if not (run_dir / "events.jsonl").exists():
        t0 = time.monotonic()
        generate(run_dir, a.iterations, a.calls, a.output_kb)
        result["generate_s"] = round(time.monotonic() - t0, 1)
    result["ledger_mb"] = round((run_dir / "events.jsonl").stat().st_size / 2**20, 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "harness.cli", "view", str(a.dir / "runs"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                get(base + "/api/runs")  # answers once the background index of the run is done (it waits on it)
                break
            except OSError:
                time.sleep(0.1)
        result["server_ready_and_indexed_s"] = round(time.monotonic() - t0, 2)
        result["memory_after_index"] = memory(server.pid)
        s_api, n_api = get(base + "/api/run/scale")
        result["run_data"] = {"seconds": round(s_api, 3), "kb": round(n_api / 1024)}
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            visits = []
            for _ in range(4):
                page.goto(base + "/runs/scale")
                page.wait_for_function("window.__view && window.__view.tablesDrawnAt", timeout=60_000)
                visits.append(page.evaluate("""() => ({
                    first_contentful_paint: performance.getEntriesByName('first-contentful-paint')[0].startTime / 1000,
                    staircase_drawn: window.__view.chartDrawnAt / 1000,
                    tables_drawn: window.__view.tablesDrawnAt / 1000})"""))
            # seconds from navigation start; the first visit is cold (plotly.js not yet in the browser's cache)
            result["run_page_s"] = {"cold": {k: round(v, 3) for k, v in visits[0].items()},
                                    "warm": [{k: round(v, 3) for k, v in x.items()} for x in visits[1:]]}
            page.screenshot(path=str(a.dir / "scale-run.png"))
            t1 = time.monotonic()
            page.goto(base + "/runs/scale/iterations/500")
            page.wait_for_selector("#transcript .ev.tool")
            result["iteration_page_s"] = round(time.monotonic() - t1, 3)
            browser.close()
        result["memory_end"] = memory(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    result["load_average"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
