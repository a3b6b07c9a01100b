"""A whole run driven through the real OpenAI SDK against a local server speaking its wire format:
tool calls, a retried 429, usage and cost in the ledger, and a secrets canary that must appear
nowhere in the run directory or the sandbox."""

import json

from harness.ledger import read_events
from harness.run import Run
from tests.loop.support import factories, make_config
from tests.models.wire import Reply, WireServer, openai_completion, openai_error, openai_tool_call

CANARY = "sk-canary-7f3a9c1e-do-not-leak"


def test_openai_driven_run_with_retry_and_no_leaked_key(tmp_path, monkeypatch):
    monkeypatch.setenv("STAIRCASE_TEST_KEY", CANARY)
    with WireServer() as srv:
        srv.queue(
            Reply(body=openai_completion(tool_calls=[openai_tool_call(
                "c1", "write_file", json.dumps({"path": "src/distance.rs", "content": "// hi\n"}))])),
            openai_error(429, "slow down", {"Retry-After": "0"}),
            Reply(body=openai_completion(tool_calls=[openai_tool_call("c2", "bash", json.dumps(
                {"command": "env; echo key=$STAIRCASE_TEST_KEY"}))], prompt=2000, completion=30, cached=1500)),
            Reply(body=openai_completion(content="done", tool_calls=[openai_tool_call(
                "c3", "submit", json.dumps({"message": "first try"}))])),
        )
        cfg = make_config(tmp_path, episodes=1, **{
            "model.provider": "openai", "model.name": "glm-5.1", "model.base_url": srv.url + "/v1",
            "model.api_key_env": "STAIRCASE_TEST_KEY", "budget.max_iterations": 1, "model.max_retries": 3})
        run = Run.create(cfg, tmp_path / "run", **factories())
        summary = run.execute()
        sent = srv.requests
    assert summary.iterations == 1 and summary.end_reason == "max_iterations: 1 of 1 used"
    assert all(r.headers.get("authorization") == f"Bearer {CANARY}" for r in sent)
    calls = list(read_events(run.dir, "model_call"))
    assert [c.attempts for c in calls] == [1, 2, 1]
    assert calls[1].usage.cached_input_tokens == 1500 and calls[1].cost_usd > 0
    env_out = next(e for e in read_events(run.dir, "tool_call") if e.name == "bash").output
    assert "key=" in env_out and CANARY not in env_out, "the sandbox must not inherit the host's environment"
    assert [e.message for e in read_events(run.dir, "submission")] == ["first try"]
    waits = list(read_events(run.dir, "waiting"))
    assert len(waits) == 1 and waits[0].what == "model_api" and "slow down" in waits[0].detail
    # the second request carried the whole conversation, including the tool result
    assert any(m.get("role") == "tool" for m in sent[-1].body["messages"])
    for p in run.dir.rglob("*"):
        if p.is_file() and "workspace.git" not in p.parts:
            assert CANARY not in p.read_text(errors="replace"), f"the API key leaked into {p}"
