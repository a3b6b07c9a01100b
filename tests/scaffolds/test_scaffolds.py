"""Scaffolds for real: the scaffold image, the sandbox that reaches the model gateway and nothing
else, and whole runs driven by a coding agent (a shell-script agent for ``command``; mini-swe-agent
from PyPI) against a fake OpenAI-compatible provider, scored by the stub scorer."""

from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import time
from pathlib import Path

import pytest

from harness.agent import scaffolds
from harness.agent.scaffolds import adapters
from harness.budget import Budget, Usage
from harness.config import BudgetConfig, ModelConfig, RunConfig, load_config
from harness.datasets.sources import generate_dataset
from harness.datasets.store import DatasetStore
from harness.events import (
    EndReason,
    GatewayCall,
    IterationEnd,
    IterationStart,
    ModelCall,
    RunEnd,
    ScoreEvent,
    Submission,
    ToolCallEvent,
)
from harness.gateway import Gateway
from harness.ledger import Ledger, read_events
from harness.models.openai_model import OpenAIModel
from harness.models.pricing import PriceTable
from harness.run import Run
from harness.sandbox import DockerSandbox, SandboxConfig
from tests.gateway.fakes import FakeOpenAI, Reply
from tests.loop.support import StubScorer
from tests.sandbox.test_isolation import _bridge_gateway
from tests.scaffolds.scripts import CANARY, FIND_CANARY, mini_three_iterations

pytestmark = [pytest.mark.docker, pytest.mark.slow]

KEY_ENV = "STAIRCASE_TEST_SCAFFOLD_KEY"
SHELL_AGENT = (Path(__file__).parent / "shell_agent.sh").read_text()


def _config(tmp: Path, fake: FakeOpenAI, scaffold: str, image: str, *sets: str) -> RunConfig:
    data_dir = tmp / "data"
    store = DatasetStore(data_dir)
    if not store.exists("tiny"):
        generate_dataset(store, "tiny", n=300, queries=10, dev_queries=5, dim=8, seed=1)
    return load_config(None, [f"dataset.data_dir={data_dir}", "dataset.name=tiny", f"runs_dir={tmp / 'runs'}",
                              "model.provider=openai", "model.name=fake-model", f"model.base_url={fake.url}/v1",
                              f"model.api_key_env={KEY_ENV}", "model.max_retries=2", f"agent.scaffold={scaffold}",
                              f"scaffold.image={image}", "scaffold.timeout_s=240", *sets])


def _run(cfg: RunConfig, tmp: Path) -> tuple[Run, Path]:
    run = Run.create(cfg, tmp / "run", scorer_factory=lambda _run: StubScorer())
    try:
        run.execute()
    finally:
        runtime = scaffolds._RUNTIMES.get(run)
        if runtime is not None:
            runtime.close()
    return run, tmp / "run"


def _assert_clean(run_dir: Path) -> None:
    for path in run_dir.rglob("*"):
        if path.is_file() and ".git" not in path.parts and "workspace.git" not in path.parts:
            assert CANARY.encode() not in path.read_bytes(), path


def _asked(fake: FakeOpenAI) -> str:
    """Everything the agent sent to the provider (what it saw of its commands' outputs)."""
    return json.dumps(fake.requests)


def test_the_sandbox_reaches_the_gateway_and_nothing_else(scaffold_image: str, fake_openai: FakeOpenAI,
                                                          tmp_path: Path, docker_client, monkeypatch,  # type: ignore[no-untyped-def]
                                                          capsys) -> None:
    monkeypatch.setenv(KEY_ENV, CANARY)
    model = OpenAIModel(ModelConfig(provider="openai", name="fake-model", base_url=f"{fake_openai.url}/v1",
                                    api_key_env=KEY_ENV), PriceTable({}))
    ledger = Ledger(tmp_path / "run")
    gw_dir = tmp_path / "gw"
    gw_dir.mkdir(mode=0o755)
    gw_dir.chmod(0o755)
    gateway = Gateway(model, ledger, Budget(BudgetConfig(max_iterations=None), Usage()),
                      socket_path=gw_dir / "gateway.sock").start()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    sb = DockerSandbox.start(workspace, SandboxConfig(image=scaffold_image), gateway_dir=gw_dir)
    try:
        gateway.begin(1, 0)
        fake_openai.replies += [Reply("hello from the fake provider"), Reply("streamed, translated")]
        bridge = _bridge_gateway(docker_client)
        probe = ("curl -sS -m 5 $OPENAI_BASE_URL/chat/completions -H 'content-type: application/json' "
                 "-d '{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'; echo; "
                 "curl -sS -N -m 5 $ANTHROPIC_BASE_URL/v1/messages -H 'content-type: application/json' "
                 "-d '{\"model\": \"claude\", \"max_tokens\": 50, \"stream\": true, "
                 "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}' | grep -E '^event: |text_delta'; "
                 "echo interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '); "
                 "(exec 3<>/dev/tcp/10.255.255.1/80) 2>&1 | tail -1; "
                 f"(exec 3<>/dev/tcp/{bridge}/{fake_openai.port}) 2>&1 | tail -1; "
                 f"curl -sS -m 5 http://{bridge}:{fake_openai.port}/ 2>&1 | tail -1; "
                 "getent hosts pypi.org || echo 'no DNS: pypi.org does not resolve'; "
                 "ls -l /run/staircase; " + FIND_CANARY)
        env = " ".join(f"{k}={v}" for k, v in adapters.environment(_cfg_for_env(), 1).items())
        r = sb.exec(f"export {env}; staircase-agent-run bash -c {shlex.quote(probe)}", timeout_s=120)
        with capsys.disabled():
            print("\n--- isolation probe (from inside the scaffold sandbox) ---\n" + r.stdout + r.stderr)
        out = r.stdout
        answer = json.loads(out.splitlines()[0])
        assert answer["choices"][0]["message"]["content"] == "hello from the fake provider"
        # The Anthropic protocol, streamed through the forwarder, served by the OpenAI-protocol provider.
        assert "event: message_start" in out and "event: message_stop" in out and "streamed, translated" in out
        assert "interfaces: lo" in out
        assert out.count("Network is unreachable") >= 2
        assert "Couldn't connect" in out or "Failed to connect" in out or "unreachable" in out.lower()
        assert "no DNS" in out
        assert "canary hits: [0]" in out
        assert fake_openai.headers[-1]["authorization"] == f"Bearer {CANARY}"  # the key went only upstream
        assert [e.status for e in read_events(ledger.run_dir) if isinstance(e, GatewayCall)] == [200, 200]
    finally:
        sb.stop()
        gateway.close()
        ledger.close()
    _assert_clean(tmp_path / "run")


def _cfg_for_env() -> RunConfig:
    return load_config(None, ["agent.scaffold=command", "scaffold.command=bash"])


def test_command_scaffold_runs_iterations_with_a_shell_agent(scaffold_image: str, fake_openai: FakeOpenAI,
                                                             tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two iterations by the shell-script agent: edit, submit, scored; the third is cut by the
    run's budget (model calls) in the middle of its episode (still scored), and the run ends on it."""
    monkeypatch.setenv(KEY_ENV, CANARY)
    fake_openai.replies += [
        Reply("sed -i '1i // iteration 1 was here' src/distance.rs && head -2 src/distance.rs"),
        Reply("submit 'a comment in distance.rs'"),
        Reply(FIND_CANARY + "; stat -c 'socket mode %a' /run/staircase/gateway.sock"),
        Reply("echo '// iteration 2' >> src/db.rs; submit 'a comment in db.rs'"),
        Reply("echo '// iteration 3, cut short' >> src/db.rs"),
    ]
    fake_openai.default = Reply("echo one more step")
    # The budget: five model calls. The sixth, in iteration 3, is refused and ends that episode.
    cfg = _config(tmp_path, fake_openai, "command", scaffold_image, f"scaffold.command={json.dumps(SHELL_AGENT)}",
                  "budget.max_iterations=5", "budget.max_model_calls=5")
    run, run_dir = _run(cfg, tmp_path)
    events = list(read_events(run_dir))
    subs = [e for e in events if isinstance(e, Submission)]
    assert [s.message for s in subs[:2]] == ["a comment in distance.rs", "a comment in db.rs"]
    assert [s.reason for s in subs] == ["submitted", "submitted", "budget"]
    ends = [e for e in events if isinstance(e, IterationEnd)]
    assert [e.reason for e in ends] == [EndReason.SUBMITTED, EndReason.SUBMITTED, EndReason.BUDGET]
    assert len([e for e in events if isinstance(e, ScoreEvent)]) == 3
    assert [e for e in events if isinstance(e, RunEnd)][0].reason.startswith("max_model_calls")
    ws = run.workspace
    assert "// iteration 1 was here" in ws.repo.git.show("sub-0001:src/distance.rs")
    assert ws.repo.git.show("sub-0003:src/db.rs").endswith("// iteration 3, cut short")
    calls = [e for e in events if isinstance(e, ModelCall)]
    assert sum(c.usage.input_tokens for c in calls) == fake_openai.input_tokens
    assert sum(c.usage.output_tokens for c in calls) == fake_openai.output_tokens
    refused = [e for e in events if isinstance(e, GatewayCall) and e.status != 200]
    assert any(e.error and e.error.startswith("budget_exhausted") for e in refused)
    assert "canary hits: [0]" in _asked(fake_openai)
    assert "socket mode 660" in _asked(fake_openai)  # the sandbox's group only, not every local user
    assert (run_dir / "iterations/0001/agent-0.log").read_text().startswith("# exit status 0")
    assert "the gateway refused step 2" in (run_dir / "iterations/0003/agent-0.log").read_text()
    _assert_clean(run_dir)


def test_mini_swe_agent_runs_three_iterations(scaffold_image: str, fake_openai: FakeOpenAI, tmp_path: Path,
                                              monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """mini-swe-agent, installed from PyPI in the scaffold image, edits src/db.rs, builds, submits,
    three times; every score lands; the gateway's usage is the provider's count; the key is nowhere."""
    monkeypatch.setenv(KEY_ENV, CANARY)
    fake_openai.replies += mini_three_iterations()
    cfg = _config(tmp_path, fake_openai, "mini-swe-agent", scaffold_image, "budget.max_iterations=3")
    t0 = time.monotonic()
    run, run_dir = _run(cfg, tmp_path)
    events = list(read_events(run_dir))
    subs = [e for e in events if isinstance(e, Submission)]
    with capsys.disabled():
        print(f"\nmini-swe-agent: 3 iterations in {time.monotonic() - t0:.0f} s; run dir {run_dir}")
    assert [s.message for s in subs] == ["brute force: scan every vector", "iteration 2: a note",
                                         "iteration 3: another note"]
    assert all(s.reason == "submitted" for s in subs)
    assert len([e for e in events if isinstance(e, ScoreEvent)]) == 3
    assert "fn search" in run.workspace.repo.git.show("sub-0001:src/db.rs")
    assert "todo!" not in run.workspace.repo.git.show("sub-0001:src/db.rs")
    assert "iteration 3: another note" in run.workspace.repo.git.show("sub-0003:src/db.rs")
    build_output = json.dumps(fake_openai.requests[3]["messages"])
    assert "Finished" in build_output, build_output[-2000:]
    calls = [e for e in events if isinstance(e, ModelCall)]
    assert len(calls) == 8
    # Each bash call's output came back through the gateway (the last, submit, ended the agent).
    tools = [e for e in events if isinstance(e, ToolCallEvent)]
    assert [t.name for t in tools] == ["bash"] * 8 and "Finished" in tools[2].output
    assert "no result came back" in tools[3].output
    assert sum(c.usage.input_tokens for c in calls) == fake_openai.input_tokens
    assert sum(c.usage.output_tokens for c in calls) == fake_openai.output_tokens
    assert fake_openai.requests[0]["tools"][0]["function"]["name"] == "bash"  # mini's own tool, unchanged
    assert "canary hits: [0]" in _asked(fake_openai)
    for n in (1, 2, 3):
        trajectory = json.loads((run_dir / f"iterations/{n:04d}/trajectory-0.json").read_text())
        assert trajectory["info"]["exit_status"] == "Submitted"
    _assert_clean(run_dir)


def test_an_agent_that_hangs_is_stopped_and_its_workspace_scored(scaffold_image: str, fake_openai: FakeOpenAI,
                                                                 tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(KEY_ENV, CANARY)
    fake_openai.default = Reply("ok")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    hang = ("echo '// before the hang' >> src/db.rs; "
            "curl -sS -o /dev/null -X POST \"$OPENAI_BASE_URL/chat/completions\" "
            f"-H 'content-type: application/json' --data '{body}'; sleep 3600 & sleep 3600")
    cfg = _config(tmp_path, fake_openai, "command", scaffold_image, f"scaffold.command={json.dumps(hang)}",
                  "budget.max_iterations=1", "scaffold.timeout_s=6")
    t0 = time.monotonic()
    run, run_dir = _run(cfg, tmp_path)
    assert time.monotonic() - t0 < 90
    events = list(read_events(run_dir))
    assert [e.reason for e in events if isinstance(e, IterationEnd)] == [EndReason.TIMEOUT]
    assert len([e for e in events if isinstance(e, ScoreEvent)]) == 1
    assert run.workspace.repo.git.show("sub-0001:src/db.rs").endswith("// before the hang")
    assert len([e for e in events if isinstance(e, ModelCall)]) == 1


def test_a_scaffold_run_stopped_mid_episode_resumes(scaffold_image: str, fake_openai: FakeOpenAI, tmp_path: Path,
                                                    monkeypatch, docker_client) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while the agent works: the run stops (its containers removed, the gateway's session
    closed); resumed, the iteration starts again and the agent's submission is scored once."""
    monkeypatch.setenv(KEY_ENV, CANARY)
    fake_openai.replies += [Reply("echo '// lost with the stop' >> src/db.rs; sleep 600"),
                            Reply("echo '// after the resume' >> src/db.rs; submit 'after the resume'")]
    cfg = _config(tmp_path, fake_openai, "command", scaffold_image, f"scaffold.command={json.dumps(SHELL_AGENT)}",
                  "budget.max_iterations=1")

    def stop_when_asked() -> None:
        deadline = time.monotonic() + 120
        while not fake_openai.requests and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_asked, daemon=True).start()
    run = Run.create(cfg, tmp_path / "run", scorer_factory=lambda _run: StubScorer())
    try:
        summary = run.execute()
    finally:
        scaffolds._RUNTIMES[run].close()
    assert summary.status == "stopped" and "SIGTERM" in summary.end_reason
    assert docker_client.containers.list(all=True, filters={"label": f"staircase.run={run.id}"}) == []
    resumed = Run.open(tmp_path / "run", scorer_factory=lambda _run: StubScorer())
    try:
        summary = resumed.execute()
    finally:
        scaffolds._RUNTIMES[resumed].close()
    events = list(read_events(tmp_path / "run"))
    assert [(e.iteration, e.attempt) for e in events if isinstance(e, IterationStart)] == [(1, 0), (1, 1)]
    assert [s.message for s in events if isinstance(s, Submission)] == ["after the resume"]
    assert len([e for e in events if isinstance(e, ScoreEvent)]) == 1
    db = resumed.workspace.repo.git.show("sub-0001:src/db.rs")
    assert db.endswith("// after the resume") and "lost with the stop" not in db
    assert summary.status == "ended"
