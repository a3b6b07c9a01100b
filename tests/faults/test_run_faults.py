"""The faults a long run meets, one test each: the run keeps going where it can, stops cleanly and
resumably where it cannot, and its record loses or repeats no iteration.

Docker faults are made for real (the sandbox killed, stopped or removed from outside, a command
OOM-killed, the engine cut off through a proxy socket); signals, a full disk and a second writer are
made to a run in a process of its own (tests/faults/drive.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import pytest

from harness.events import IterationEnd, SandboxRestarted, Stopped, ToolCallEvent, Waiting
from harness.ledger import Ledger, RunLocked, lock_holder, read_events
from harness.models.scripted import ScriptedModel
from harness.run import RUN_LABEL, Run
from harness.sandbox.local_backend import LocalSandbox
from harness.state import RunState
from tests.faults.docker_proxy import DockerProxy
from tests.faults.flaky_server import FlakyEndpoint
from tests.loop.support import StubScorer, ledger_digest, make_config, tree_of
from tests.models.wire import Reply, openai_completion, openai_error, openai_tool_call

REPO = Path(__file__).resolve().parents[2]


def _steps(i: int, *middle: dict) -> list[dict]:
    return [{"name": "write_file", "arguments": {"path": "src/distance.rs", "content": f"// version {i}\n"}},
            *middle, {"name": "submit", "arguments": {"message": f"version {i}"}}]


def _run_containers(client: docker.DockerClient, run: Run) -> list:
    return client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run.id}"})


def _when(run_dir: Path, pred, timeout_s: float = 60.0) -> None:
    """Wait until ``pred(events)`` holds for the run's events (read-only, as any reader)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred(list(read_events(run_dir))):
            return
        time.sleep(0.1)
    raise AssertionError("the awaited event never came")


def _two_iterations_digest_ok(run: Run) -> None:
    d = ledger_digest(run.dir)
    assert [s[0] for s in d["submissions"]] == [1, 2] and d["iteration_ends"] == [1, 2]
    assert [s[0] for s in d["scores"]] == [1, 2]
    assert (run.dir / "workspace" / "src" / "distance.rs").read_text() == "// version 2\n"
    assert tree_of(run.dir, "sub-0001") != tree_of(run.dir, "sub-0002")


# -- the sandbox dies ---------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize(("how", "cause"), [("kill", "exited"), ("stop", "exited"), ("remove", "gone")])
def test_sandbox_death_mid_command_is_survived(how, cause, tmp_path, sandbox_image, docker_client):
    cfg = make_config(tmp_path, episodes=2, **{"sandbox.image": sandbox_image, "budget.max_iterations": 2})
    model = ScriptedModel([_steps(1, {"name": "bash", "arguments": {"command": "sleep 30; echo finished"}},
                                  {"name": "bash", "arguments": {"command": "cat src/distance.rs"}}),
                           _steps(2)])
    run = Run.create(cfg, tmp_path / "run", model=model, scorer_factory=lambda r: StubScorer())

    def fault() -> None:
        _when(run.dir, lambda es: any(isinstance(e, ToolCallEvent) for e in es))
        time.sleep(2.0)  # the sleep runs now
        (c,) = _run_containers(docker_client, run)
        {"kill": c.kill, "stop": lambda: c.stop(timeout=1), "remove": lambda: c.remove(force=True)}[how]()

    t = threading.Thread(target=fault)
    t.start()
    summary = run.execute()
    t.join()
    assert summary.status == "ended" and summary.iterations == 2
    (restart,) = [e for e in read_events(run.dir) if isinstance(e, SandboxRestarted)]
    assert restart.iteration == 1 and restart.cause == cause
    calls = [e for e in read_events(run.dir, "tool_call") if isinstance(e, ToolCallEvent)]
    assert "the sandbox died during this call" in calls[1].output and calls[1].is_error
    assert calls[2].output.startswith("// version 1"), "the workspace survived the sandbox"
    _two_iterations_digest_ok(run)
    assert _run_containers(docker_client, run) == [], "the run left a container behind"


@pytest.mark.docker
def test_oom_killed_command_is_told_and_the_run_goes_on(tmp_path, sandbox_image, docker_client):
    cfg = make_config(tmp_path, episodes=2, **{"sandbox.image": sandbox_image, "sandbox.memory": "128m",
                                               "budget.max_iterations": 2})
    hog = "python3 -c 'x = bytearray(1 << 30); print(len(x))'"
    model = ScriptedModel([_steps(1, {"name": "bash", "arguments": {"command": hog}}), _steps(2)])
    run = Run.create(cfg, tmp_path / "run", model=model, scorer_factory=lambda r: StubScorer())
    summary = run.execute()
    assert summary.status == "ended" and summary.iterations == 2
    hog_call = [e for e in read_events(run.dir, "tool_call") if isinstance(e, ToolCallEvent)][1]
    assert hog_call.exit_code == 137 and "out-of-memory killer" in hog_call.output
    assert "128m" in hog_call.output
    _two_iterations_digest_ok(run)
    assert _run_containers(docker_client, run) == []


def test_sandbox_that_keeps_dying_ends_the_iteration_not_the_run(tmp_path):
    class Dying(LocalSandbox):
        deaths = 0

        def exec(self, command, timeout_s=None, workdir=None):  # type: ignore[no-untyped-def]
            from harness.sandbox.base import SandboxDied

            if "die" in command:
                Dying.deaths += 1
                raise SandboxDied("killed by the test", "oom")
            return super().exec(command, timeout_s, workdir)

    cfg = make_config(tmp_path, episodes=2, **{"agent.sandbox_restarts_per_iteration": 2})
    die = {"name": "bash", "arguments": {"command": "die"}}
    model = ScriptedModel([_steps(1, die, die, die, die), _steps(2)])
    run = Run.create(cfg, tmp_path / "run", model=model, sandbox_factory=lambda r: Dying(r.workspace.path),
                     scorer_factory=lambda r: StubScorer())
    summary = run.execute()
    ends = [e for e in read_events(run.dir) if isinstance(e, IterationEnd)]
    assert [e.reason.value for e in ends] == ["sandbox_failed", "the model stopped"[:0] or "submitted"]
    assert Dying.deaths == 3 and summary.iterations == 2
    restarts = [e for e in read_events(run.dir) if isinstance(e, SandboxRestarted)]
    assert [r.restarts for r in restarts] == [1, 2, 3] and {r.cause for r in restarts} == {"oom"}


# -- the Docker engine goes away -----------------------------------------------------------------


@pytest.mark.docker
def test_engine_cut_for_a_while_is_waited_for(tmp_path, sandbox_image, docker_client, monkeypatch):
    with DockerProxy() as proxy:
        monkeypatch.setenv("DOCKER_HOST", proxy.url)
        cfg = make_config(tmp_path, episodes=2, **{"sandbox.image": sandbox_image, "budget.max_iterations": 2})
        model = ScriptedModel([_steps(1, {"name": "bash", "arguments": {"command": "sleep 3; echo slept"}}),
                               _steps(2, {"name": "bash", "arguments": {"command": "echo after"}})])
        run = Run.create(cfg, tmp_path / "run", model=model, scorer_factory=lambda r: StubScorer())

        def outage() -> None:
            _when(run.dir, lambda es: any(isinstance(e, ToolCallEvent) for e in es))
            proxy.cut()
            time.sleep(6.0)
            proxy.restore()

        t = threading.Thread(target=outage)
        t.start()
        summary = run.execute()
        t.join()
    assert summary.status == "ended" and summary.iterations == 2
    waits = [e for e in read_events(run.dir) if isinstance(e, Waiting)]
    assert waits and all(w.what == "docker" and "waiting for the Docker engine" in w.detail for w in waits)
    _two_iterations_digest_ok(run)
    assert _run_containers(docker_client, run) == []


@pytest.mark.docker
def test_engine_gone_past_the_limit_stops_and_resume_continues(tmp_path, sandbox_image, docker_client,
                                                               monkeypatch):
    with DockerProxy() as proxy:
        monkeypatch.setenv("DOCKER_HOST", proxy.url)
        cfg = make_config(tmp_path, episodes=2, **{"sandbox.image": sandbox_image, "budget.max_iterations": 2,
                                                   "sandbox.engine_wait_s": 3})
        steps = [_steps(1, {"name": "bash", "arguments": {"command": "sleep 2"}}), _steps(2)]
        run = Run.create(cfg, tmp_path / "run", model=ScriptedModel(steps), scorer_factory=lambda r: StubScorer())
        threading.Timer(1.0, proxy.cut).start()
        summary = run.execute()
        assert summary.status == "stopped"
        stop = list(read_events(run.dir))[-1]
        assert isinstance(stop, Stopped) and stop.kind == "docker" and "Docker engine" in stop.reason
        assert not [e for e in read_events(run.dir) if isinstance(e, Waiting) and e.seq > stop.seq]
        proxy.restore()
        again = Run.open(run.dir, model=ScriptedModel(steps), scorer_factory=lambda r: StubScorer()).execute()
    assert again.status == "ended" and again.iterations == 2
    _two_iterations_digest_ok(run)
    assert _run_containers(docker_client, run) == [], "the container left while the engine was cut is removed"


# -- the model API goes away ---------------------------------------------------------------------


def _api_cfg(tmp_path: Path, url: str, **extra: object):
    return make_config(tmp_path, episodes=1, **{
        "model.provider": "openai", "model.name": "glm-5.1", "model.base_url": url + "/v1",
        "model.api_key_env": "STAIRCASE_TEST_KEY", "budget.max_iterations": 1, "model.request_timeout_s": 2,
        **extra})


def _api_replies() -> list[Reply]:
    write = json.dumps({"path": "src/distance.rs", "content": "// version 1\n"})
    return [Reply(body=openai_completion(tool_calls=[openai_tool_call("c1", "write_file", write)])),
            Reply(body=openai_completion(tool_calls=[openai_tool_call("c2", "bash", '{"command": "ls"}')])),
            Reply(body=openai_completion(tool_calls=[openai_tool_call("c3", "submit", '{"message": "v1"}')]))]


def test_model_api_outage_is_waited_through(tmp_path, monkeypatch):
    monkeypatch.setenv("STAIRCASE_TEST_KEY", "sk-test")
    ok = _api_replies()
    with FlakyEndpoint() as api:
        api.queue(ok[0], openai_error(429, "slow down", {"Retry-After": "0.2"}), openai_error(503, "overloaded"),
                  Reply(hang_s=5.0), ok[1], ok[2])
        api.down(for_s=2.0)
        run = Run.create(_api_cfg(tmp_path, api.url), tmp_path / "run", sandbox_factory=lambda r:
                         LocalSandbox(r.workspace.path), scorer_factory=lambda r: StubScorer())
        summary = run.execute()
    assert summary.status == "ended" and summary.iterations == 1
    waits = [e.detail for e in read_events(run.dir) if isinstance(e, Waiting)]
    assert all(w.startswith("waiting for the model API (attempt ") for w in waits)
    text = " ".join(waits)
    assert "connection error" in text and "HTTP 429" in text and "HTTP 503" in text and "timed out" in text
    assert [e.message for e in read_events(run.dir, "submission")] == ["v1"]


def test_model_api_outage_past_the_limit_stops_and_resume_continues(tmp_path, monkeypatch):
    monkeypatch.setenv("STAIRCASE_TEST_KEY", "sk-test")
    kw = {"sandbox_factory": lambda r: LocalSandbox(r.workspace.path), "scorer_factory": lambda r: StubScorer()}
    with FlakyEndpoint() as api:
        api.down()
        run = Run.create(_api_cfg(tmp_path, api.url, **{"model.outage_limit_s": 2}), tmp_path / "run", **kw)
        summary = run.execute()
        assert summary.status == "stopped" and "outage limit" in summary.end_reason
        stop = list(read_events(run.dir))[-1]
        assert isinstance(stop, Stopped) and stop.kind == "model_api"
        api.up()
        api.queue(*_api_replies())
        again = Run.open(run.dir, **kw).execute()
    assert again.status == "ended" and again.iterations == 1
    assert [e.iteration for e in read_events(run.dir, "iteration_end")] == [1]


# -- signals, a full disk, a second writer, readers (a run in its own process) -------------------


def _drive(run_dir: Path, tmp: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.faults.drive", str(run_dir), str(tmp)], cwd=REPO,
                            env=os.environ | (env or {}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same script run without a fault: the digest every faulted-and-resumed run must match."""
    tmp = tmp_path_factory.mktemp("reference")
    p = _drive(tmp / "run", tmp)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    return ledger_digest(tmp / "run"), tmp / "run"


def _resume_matches(run_dir: Path, tmp: Path, reference) -> None:
    p = _drive(run_dir, tmp)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    expected, ref_dir = reference
    assert ledger_digest(run_dir) == expected, "an iteration was lost or counted twice"
    for _, tag, _ in expected["submissions"]:
        assert tree_of(run_dir, tag) == tree_of(ref_dir, tag)


@pytest.mark.parametrize(("sig", "where"), [(signal.SIGTERM, "command"), (signal.SIGINT, "command"),
                                            (signal.SIGTERM, "scoring"), (signal.SIGINT, "scoring")])
def test_stop_signal_stops_within_seconds_and_resume_continues(sig, where, tmp_path, reference):
    env = {"FAULT_SLEEP_S": "60"} if where == "command" else {"FAULT_SCORE_SLEEP_S": "60"}
    p = _drive(tmp_path / "run", tmp_path, env)
    if where == "command":  # iteration 2's `sleep 60` is running
        _when(tmp_path / "run", lambda es: any(isinstance(e, ToolCallEvent) and e.iteration == 2 for e in es))
    else:  # the first submission is being scored
        _when(tmp_path / "run", lambda es: any(e.type == "submission" for e in es))
    time.sleep(0.5)
    t0 = time.monotonic()
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert time.monotonic() - t0 < 5, "a stop signal must stop the run within seconds"
    assert p.returncode == 3, err[-3000:]
    last = list(read_events(tmp_path / "run"))[-1]
    assert isinstance(last, Stopped) and last.kind == "signal" and signal.Signals(sig).name in last.reason
    assert lock_holder(tmp_path / "run") is None
    _resume_matches(tmp_path / "run", tmp_path, reference)


@pytest.mark.docker
def test_stop_signal_removes_the_runs_containers(tmp_path, sandbox_image, docker_client, reference):
    p = _drive(tmp_path / "run", tmp_path, {"FAULT_SLEEP_S": "60", "FAULT_SANDBOX_IMAGE": sandbox_image})
    _when(tmp_path / "run", lambda es: any(isinstance(e, ToolCallEvent) and e.iteration == 2 for e in es))
    label = {"label": f"{RUN_LABEL}={(tmp_path / 'run').resolve()}"}
    assert len(docker_client.containers.list(all=True, filters=label)) == 1
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3, err[-3000:]
    assert docker_client.containers.list(all=True, filters=label) == []
    p = _drive(tmp_path / "run", tmp_path, {"FAULT_SANDBOX_IMAGE": sandbox_image})
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-3000:]
    # the same trees as without the signal: the restarted iteration could write the files its reset
    # rewrote (they were root's once, and the sandbox's user could not)
    assert ledger_digest(tmp_path / "run") == reference[0]
    assert not any("cannot write" in e.output for e in read_events(tmp_path / "run", "tool_call"))
    assert docker_client.containers.list(all=True, filters=label) == []


def test_second_signal_stops_at_once():
    from harness.stop import StopRequested, StopSignals

    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # outside any wait: only noted
        assert stop.requested == "SIGTERM"
        with pytest.raises(StopRequested, match="second signal"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


def _tmpfs(path: Path, size: str, remount: bool = False) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"remount,size={size}" if remount else f"size={size}"
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0


def test_disk_full_stops_cleanly_and_resume_continues_after_space_is_freed(tmp_path, reference):
    mnt = tmp_path / "small"
    if os.geteuid() != 0 or not _tmpfs(mnt, "1500k"):
        pytest.skip("needs root and tmpfs mounts")
    try:
        # iteration 2 writes a file as large as the disk: nothing after it fits
        p = _drive(mnt / "run", tmp_path, {"FAULT_BLOB_KB": "1500"})
        out, err = p.communicate(timeout=120)
        assert p.returncode == 3, err[-3000:]
        assert "disk full" in json.loads(out)["end_reason"]
        raw = (mnt / "run" / "events.jsonl").read_bytes()
        assert raw.endswith(b"\n") and all(json.loads(line) for line in raw.splitlines()), "a torn event"
        json.loads((mnt / "run" / "state.json").read_text())  # whole, if there is one
        assert not list((mnt / "run").glob(".*.tmp"))
        assert _tmpfs(mnt, "64m", remount=True)
        p = _drive(mnt / "run", tmp_path, {"FAULT_BLOB_KB": "1500"})
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        d = ledger_digest(mnt / "run")
        assert d["iteration_ends"] == [1, 2, 3] and [s[0] for s in d["scores"]] == [1, 2, 3]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_second_writer_fails_at_once_naming_the_holder(tmp_path):
    p = _drive(tmp_path / "run", tmp_path, {"FAULT_SLEEP_S": "30"})
    try:
        _when(tmp_path / "run", lambda es: any(isinstance(e, ToolCallEvent) and e.iteration == 2 for e in es))
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "harness.cli", "resume", str(tmp_path / "run")], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        assert time.monotonic() - t0 < 20
        assert r.returncode == 2 and f"in use by PID {p.pid}" in r.stderr and "host" in r.stderr
        with pytest.raises(RunLocked):
            Ledger(tmp_path / "run")
        assert lock_holder(tmp_path / "run")["pid"] == p.pid
    finally:
        p.terminate()
        p.communicate(timeout=30)
    assert lock_holder(tmp_path / "run") is None


def test_readers_never_change_the_ledger_while_it_is_written(tmp_path, reference):
    """`runs`, `report`-style reads and raw readers poll a live run; every byte they saw is a prefix
    of the final ledger (nothing truncated, rewritten or locked) and the writer never had to repair."""
    from harness.analysis.staircase import load_staircase

    p = _drive(tmp_path / "run", tmp_path, {"FAULT_SLEEP_S": "2", "FAULT_EPISODES": "3"})
    seen: list[tuple[int, str]] = []
    path = tmp_path / "run" / "events.jsonl"
    while p.poll() is None:
        if path.exists():
            data = path.read_bytes()
            seen.append((len(data), hashlib.sha256(data).hexdigest()))
            RunState.from_events(read_events(tmp_path / "run"))
            load_staircase(tmp_path / "run")
        time.sleep(0.02)
    r = subprocess.run([sys.executable, "-m", "harness.cli", "runs", str(tmp_path), "--json"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert p.returncode == 0
    final = path.read_bytes()
    assert len(seen) > 10
    for size, digest in seen:
        assert hashlib.sha256(final[:size]).hexdigest() == digest
    assert ledger_digest(tmp_path / "run") == reference[0]
    assert not any(e.type == "run_resume" for e in read_events(tmp_path / "run"))
