"""How much a sandbox command costs: start time, and the latency of a trivial exec through
DockerSandbox next to plain `docker exec` on the same container.

    python benchmarks/sandbox_exec.py [--n 200] [--starts 5] [--image TAG] [--json]

Rows: `DockerSandbox.exec("true")` (the full path: timeout + bash -lc, output capture, exit code);
the Docker SDK's own exec_run of the same wrapped command; `docker exec` (CLI) of `true` and of
the same wrapped command, so that the wrapper's cost and the SDK's cost can be told apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.sandbox import DockerSandbox, SandboxConfig  # noqa: E402
from harness.sandbox.image import ensure_image  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    fn()  # warm-up
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--image")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    image = args.image or ensure_image(ROOT).tag
    config = SandboxConfig(image=image)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        starts = []
        for _ in range(args.starts):
            t = time.perf_counter()
            sb = DockerSandbox.start(workspace, config)
            sb.exec("true")  # started = answers a command
            starts.append((time.perf_counter() - t) * 1000)
            sb.stop()

        with DockerSandbox.start(workspace, config) as sb:
            wrapped = ["timeout", "--kill-after=5", "600", "bash", "-lc", "true"]
            container = sb._client.containers.get(sb.container_id)

            def sdk() -> None:
                assert container.exec_run(wrapped, user=sb.user).exit_code == 0

            def cli(argv: list[str]) -> Callable[[], None]:
                cmd = ["docker", "exec", "-u", sb.user, sb.container_id, *argv]
                return lambda: subprocess.run(cmd, check=True)

            def sandbox_true() -> None:
                assert sb.exec("true").exit_code == 0

            rows = {
                "DockerSandbox.exec('true')": timed(sandbox_true, args.n),
                "docker SDK exec_run (same wrapper)": timed(sdk, args.n),
                "docker exec CLI: true": timed(cli(["true"]), args.n),
                "docker exec CLI: timeout … bash -lc true": timed(cli(wrapped), args.n),
            }

    result = {
        "image": image,
        "n": args.n,
        "start_ms": {"median": statistics.median(starts), "all": [round(s, 1) for s in starts]},
        "exec_ms": {
            name: {"p50": percentile(s, 50), "p99": percentile(s, 99), "mean": statistics.fmean(s)}
            for name, s in rows.items()
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"image {image}; sandbox start (create + first exec), median of {args.starts}: "
        f"{result['start_ms']['median']:.0f} ms"
    )
    print(f"\n{'trivial exec, ' + str(args.n) + ' calls':<44} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, stats in result["exec_ms"].items():
        print(f"{name:<44} {stats['p50']:>8.1f} {stats['p99']:>8.1f} {stats['mean']:>8.1f}")


if __name__ == "__main__":
    main()
