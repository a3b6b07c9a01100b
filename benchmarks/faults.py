"""The fault table: each fault a long run meets, made for real, and what the run did about it.

For every fault: what the run did (continued, or stopped and was resumed), how many iterations were
lost or counted twice against the same script run without a fault (target 0 / 0), and how long the
fault cost. Docker faults use the real engine and the sandbox image (built if needed); the engine is
made unavailable through a proxy socket in front of it (the machine's engine is never restarted).

    python benchmarks/faults.py [--engine-outage-s 120] [--only NAME,...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from harness.events import Event, SandboxRestarted, Stopped, ToolCallEvent, Waiting  # noqa: E402
from harness.ledger import read_events  # noqa: E402
from harness.models.scripted import ScriptedModel  # noqa: E402
from harness.run import RUN_LABEL, Run  # noqa: E402
from harness.sandbox.local_backend import LocalSandbox  # noqa: E402
from tests.faults.docker_proxy import DockerProxy  # noqa: E402
from tests.faults.flaky_server import FlakyEndpoint  # noqa: E402
from tests.loop.support import StubScorer, ledger_digest, make_config  # noqa: E402
from tests.models.wire import Reply, openai_completion, openai_error, openai_tool_call  # noqa: E402

ITERATIONS = 3


def steps(i: int, *middle: dict) -> list[dict]:
    return [{"name": "write_file", "arguments": {"path": "src/distance.rs", "content": f"// version {i}\n"}},
            *middle, {"name": "submit", "arguments": {"message": f"version {i}"}}]


def script(middle: dict | None = None) -> list[list[dict]]:
    """Three iterations; iteration 2 runs ``middle`` (the command a fault strikes during)."""
    return [steps(i, *([middle] if middle and i == 2 else [])) for i in range(1, ITERATIONS + 1)]


def outcome(run_dir: Path, resumed: int) -> dict[str, object]:
    d = ledger_digest(run_dir)
    ends = list(d["iteration_ends"])  # type: ignore[call-overload]
    scored = [s[0] for s in d["scores"]]  # type: ignore[attr-defined]
    expected = set(range(1, ITERATIONS + 1))
    events = list(read_events(run_dir))
    return {"lost": len(expected - set(ends)), "duplicated": (len(ends) - len(set(ends))) + (len(scored) -
            len(set(scored))), "resumes": resumed,
            "restarts": sum(isinstance(e, SandboxRestarted) for e in events),
            "waits": sum(isinstance(e, Waiting) for e in events),
            "stops": [e.kind for e in events if isinstance(e, Stopped)]}


def when(run_dir: Path, pred: Callable[[list[Event]], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred(list(read_events(run_dir))):
            return
        time.sleep(0.1)
    raise TimeoutError("the awaited event never came")


def in_iteration_2(es: list[Event]) -> bool:
    return any(isinstance(e, ToolCallEvent) and e.iteration == 2 for e in es)


# -- scenarios: each returns (what the run did, outcome) ---------------------------------------


def docker_death(tmp: Path, image: str, how: str) -> tuple[str, dict[str, object]]:
    cfg = make_config(tmp, episodes=ITERATIONS, **{"sandbox.image": image, "budget.max_iterations": ITERATIONS})
    run = Run.create(cfg, tmp / "run", model=ScriptedModel(script({"name": "bash", "arguments": {
        "command": "sleep 20"}})), scorer_factory=lambda r: StubScorer())
    client = docker.from_env()

    def fault() -> None:
        when(run.dir, in_iteration_2)
        time.sleep(1.5)
        (c,) = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run.id}"})
        {"kill": c.kill, "stop": lambda: c.stop(timeout=1), "remove": lambda: c.remove(force=True)}[how]()

    t = threading.Thread(target=fault)
    t.start()
    s = run.execute()
    t.join()
    left = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run.id}"})
    return f"{s.status}; sandbox made anew; {len(left)} containers left", outcome(run.dir, 0)


def oom(tmp: Path, image: str) -> tuple[str, dict[str, object]]:
    cfg = make_config(tmp, episodes=ITERATIONS, **{"sandbox.image": image, "sandbox.memory": "128m",
                                                   "budget.max_iterations": ITERATIONS})
    hog = {"name": "bash", "arguments": {"command": "python3 -c 'bytearray(1 << 30)'"}}
    run = Run.create(cfg, tmp / "run", model=ScriptedModel(script(hog)), scorer_factory=lambda r: StubScorer())
    s = run.execute()
    told = any("out-of-memory killer" in e.output for e in read_events(run.dir) if isinstance(e, ToolCallEvent))
    return f"{s.status}; the model was told of the OOM kill: {told}", outcome(run.dir, 0)


def engine(tmp: Path, image: str, outage_s: float, wait_s: float) -> tuple[str, dict[str, object]]:
    with DockerProxy() as proxy:
        os.environ["DOCKER_HOST"] = proxy.url
        try:
            cfg = make_config(tmp, episodes=ITERATIONS, **{"sandbox.image": image, "sandbox.engine_wait_s": wait_s,
                                                           "budget.max_iterations": ITERATIONS})
            model = script({"name": "bash", "arguments": {"command": "sleep 2"}})
            run = Run.create(cfg, tmp / "run", model=ScriptedModel(model), scorer_factory=lambda r: StubScorer())

            def fault() -> None:
                when(run.dir, in_iteration_2)
                proxy.cut()
                time.sleep(outage_s)
                proxy.restore()

            t = threading.Thread(target=fault)
            t.start()
            s = run.execute()
            resumed = 0
            if s.status == "stopped":
                t.join()
                s = Run.open(run.dir, model=ScriptedModel(model), scorer_factory=lambda r: StubScorer()).execute()
                resumed = 1
            t.join()
        finally:
            os.environ.pop("DOCKER_HOST", None)
    return f"{s.status}", outcome(run.dir, resumed)


def api(tmp: Path, limit_s: float | None) -> tuple[str, dict[str, object]]:
    os.environ["STAIRCASE_TEST_KEY"] = "sk-test"
    replies = []
    for i in range(1, ITERATIONS + 1):
        write = json.dumps({"path": "src/distance.rs", "content": f"// version {i}\n"})
        replies += [Reply(body=openai_completion(tool_calls=[openai_tool_call(f"w{i}", "write_file", write)])),
                    Reply(body=openai_completion(tool_calls=[openai_tool_call(
                        f"s{i}", "submit", json.dumps({"message": f"version {i}"}))]))]
    kw = {"sandbox_factory": lambda r: LocalSandbox(r.workspace.path), "scorer_factory": lambda r: StubScorer()}
    with FlakyEndpoint() as ep:
        extra = {"model.outage_limit_s": limit_s} if limit_s else {}
        cfg = make_config(tmp, episodes=ITERATIONS, **{
            "model.provider": "openai", "model.name": "glm-5.1", "model.base_url": ep.url + "/v1",
            "model.api_key_env": "STAIRCASE_TEST_KEY", "budget.max_iterations": ITERATIONS,
            "model.request_timeout_s": 2, **extra})
        if limit_s:
            ep.queue(*replies[:2])
            run = Run.create(cfg, tmp / "run", **kw)
            threading.Thread(target=lambda: (when(run.dir, lambda es: any(
                e.type == "iteration_end" for e in es)), ep.down())).start()
            s = run.execute()
            ep.up()
            ep.queue(*replies[2:])
            s = Run.open(run.dir, **kw).execute()
            return s.status, outcome(run.dir, 1)
        ep.queue(replies[0], openai_error(429, "slow down", {"Retry-After": "1"}), openai_error(503, "overloaded"),
                 Reply(hang_s=5), *replies[1:])
        run = Run.create(cfg, tmp / "run", **kw)
        threading.Thread(target=lambda: (when(run.dir, lambda es: any(e.type == "model_call" for e in es)),
                                         ep.down(for_s=20))).start()
        s = run.execute()
        return s.status, outcome(run.dir, 0)


def drive(run_dir: Path, tmp: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.faults.drive", str(run_dir), str(tmp)], cwd=REPO,
                            env=os.environ | {"FAULT_EPISODES": str(ITERATIONS)} | env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signalled(tmp: Path, sig: signal.Signals, where: str) -> tuple[str, dict[str, object]]:
    env = {"FAULT_SLEEP_S": "60"} if where == "command" else {"FAULT_SCORE_SLEEP_S": "60"}
    p = drive(tmp / "run", tmp, env)
    when(tmp / "run", in_iteration_2 if where == "command" else lambda es: any(e.type == "submission" for e in es))
    time.sleep(0.5)
    t0 = time.monotonic()
    (p.kill if sig == signal.SIGKILL else lambda: p.send_signal(sig))()
    p.communicate(timeout=60)
    took = time.monotonic() - t0
    q = drive(tmp / "run", tmp, {})
    q.communicate(timeout=120)
    return f"exit {p.returncode} after {took:.1f} s; resumed: exit {q.returncode}", outcome(tmp / "run", 1)


def disk_full(tmp: Path) -> tuple[str, dict[str, object]]:
    mnt = tmp / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mnt)]).returncode:
        return "skipped (needs root for a tmpfs)", {}
    try:
        p = drive(mnt / "run", tmp, {"FAULT_BLOB_KB": "1500"})
        out, _ = p.communicate(timeout=120)
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        q = drive(mnt / "run", tmp, {"FAULT_BLOB_KB": "1500"})
        q.communicate(timeout=120)
        reason = json.loads(out)["end_reason"][:60]
        return f"exit {p.returncode} ({reason}...); resumed: exit {q.returncode}", outcome(mnt / "run", 1)
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def second_writer(tmp: Path) -> tuple[str, dict[str, object]]:
    p = drive(tmp / "run", tmp, {"FAULT_SLEEP_S": "5"})
    when(tmp / "run", in_iteration_2)
    r = subprocess.run([sys.executable, "-m", "harness.cli", "resume", str(tmp / "run")], cwd=REPO,
                       capture_output=True, text=True)
    p.communicate(timeout=120)
    said = r.stderr.strip().splitlines()[-1][:90] if r.stderr.strip() else ""
    return f"refused (exit {r.returncode}: {said}); first run: exit {p.returncode}", outcome(tmp / "run", 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine-outage-s", type=float, default=120.0)
    ap.add_argument("--only", default="")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from harness.paths import REPO_ROOT
    from harness.sandbox.image import ensure_image

    image = ensure_image(REPO_ROOT).tag
    scenarios: dict[str, Callable[[Path], tuple[str, dict[str, object]]]] = {
        "sandbox docker kill mid-command": lambda t: docker_death(t, image, "kill"),
        "sandbox docker stop mid-command": lambda t: docker_death(t, image, "stop"),
        "sandbox removed mid-command": lambda t: docker_death(t, image, "remove"),
        "command OOM-killed (128m sandbox)": lambda t: oom(t, image),
        f"Docker engine unavailable {args.engine_outage_s:.0f} s": lambda t: engine(t, image, args.engine_outage_s,
                                                                                     600),
        "Docker engine unavailable past its limit (5 s)": lambda t: engine(t, image, 20, 5),
        "model API down 20 s, then 429, 503, a hang": lambda t: api(t, None),
        "model API down past its outage limit (3 s)": lambda t: api(t, 3),
        "SIGTERM mid-command": lambda t: signalled(t, signal.SIGTERM, "command"),
        "SIGINT mid-scoring": lambda t: signalled(t, signal.SIGINT, "scoring"),
        "kill -9 mid-command": lambda t: signalled(t, signal.SIGKILL, "command"),
        "disk full (1.5 MB tmpfs)": disk_full,
        "a second run on the same directory": second_writer,
    }
    only = [s for s in args.only.split(",") if s]
    rows = []
    for name, scenario in scenarios.items():
        if only and not any(o.lower() in name.lower() for o in only):
            continue
        with tempfile.TemporaryDirectory(prefix="staircase-fault-") as tmp:
            t0 = time.monotonic()
            try:
                did, out = scenario(Path(tmp))
            except Exception as e:  # a scenario that breaks is a row that says so
                did, out = f"ERROR {type(e).__name__}: {e}"[:200], {}
            rows.append({"fault": name, "what the run did": did, **out, "seconds": round(time.monotonic() - t0, 1)})
            print(f"{name}: {did} {out}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| fault | what the run did | resumes | lost | duplicated | restarts | waits | stops | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fault']} | {r['what the run did']} | {r.get('resumes', '-')} | {r.get('lost', '-')} | "
              f"{r.get('duplicated', '-')} | {r.get('restarts', '-')} | {r.get('waits', '-')} | "
              f"{','.join(r.get('stops', [])) or '-'} | {r['seconds']} |")


if __name__ == "__main__":
    main()
