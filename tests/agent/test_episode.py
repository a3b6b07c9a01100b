"""The episode: tool errors the model can read, the stuck detector, long outputs cut for the model and
kept in full (driven through a short run with a local sandbox and the stub scorer)."""

from harness.ledger import read_events
from harness.models.scripted import ScriptedModel
from harness.run import Run
from tests.loop.support import factories, make_config


def test_stuck_detector_and_readable_tool_errors(tmp_path):
    cfg = make_config(tmp_path, episodes=1, **{"agent.stuck_repeats": 3})
    steps = [{"name": "bash", "arguments": {"command": "echo same"}}] * 5
    bad = [{"name": "nosuchtool", "arguments": {}}, {"name": "write_file", "arguments": {"path": "x"}}]
    model = ScriptedModel([bad + steps])
    run = Run.create(cfg, tmp_path / "r", model=model, **factories())
    run.execute()
    tools = list(read_events(run.dir, "tool_call"))
    assert "unknown tool 'nosuchtool'" in tools[0].output and tools[0].is_error
    assert "missing required argument(s): content" in tools[1].output
    assert [e.reason for e in read_events(run.dir, "iteration_end")] == ["stuck"]
    assert len(tools) == 5  # two errors, then three identical calls


def test_long_output_is_cut_for_the_model_and_kept_in_full(tmp_path):
    cfg = make_config(tmp_path, episodes=1, **{"agent.tool_output_head_chars": 100,
                                               "agent.tool_output_tail_chars": 100})
    model = ScriptedModel([[{"name": "bash", "arguments": {"command": "seq 1 2000"}},
                            {"name": "submit", "arguments": {"message": "x"}}]])
    run = Run.create(cfg, tmp_path / "r", model=model, **factories())
    run.execute()
    call = next(read_events(run.dir, "tool_call"))
    assert "characters cut" in call.output and len(call.output) < 400
    full = (run.dir / call.full_output).read_text()
    assert "\n1000\n" in full and full.startswith("1\n")
