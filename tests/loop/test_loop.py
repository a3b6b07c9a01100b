import json
from pathlib import Path

from harness.events import RunEnd, RunStart
from harness.ledger import Ledger, read_events
from harness.models.scripted import ScriptedModel
from harness.run import Run
from tests.loop.support import factories, ledger_digest, make_config, tree_of


def test_a_run_iterates_submits_scores_and_ends_when_the_script_does(tmp_path):
    cfg = make_config(tmp_path, episodes=4)
    run = Run.create(cfg, tmp_path / "run", **factories())
    summary = run.execute()
    assert summary.end_reason == "the model stopped" and summary.iterations == 4
    d = ledger_digest(run.dir)
    assert [s[0] for s in d["submissions"]] == [1, 2, 3, 4]
    assert d["iteration_ends"] == [1, 2, 3, 4]
    assert (run.dir / "iterations" / "0002" / "diff.patch").read_text().count("version 2") >= 1
    assert json.loads((run.dir / "iterations" / "0003" / "score.json").read_text())["status"] in ("valid", "invalid")
    state = json.loads((run.dir / "state.json").read_text())
    assert state["iterations"] == 4 and state["usage"]["tool_calls"] == 16
    # every iteration's tree is what its episode wrote
    assert tree_of(run.dir, "sub-0001") != tree_of(run.dir, "sub-0002")
    notes = (run.dir / "workspace" / "NOTES.md").read_text()
    assert [ln for ln in notes.splitlines() if ln.startswith("iteration ")] == [f"iteration {i}" for i in range(1, 5)]
    # config saved without secrets, events parse, the price snapshot is present
    assert "api_key" not in (run.dir / "config.yaml").read_text().replace("api_key_env", "")
    events = list(read_events(run.dir))
    assert events[0].type == "run_start" and events[-1].type == "run_end"


def test_budget_on_iterations_ends_the_run(tmp_path):
    run = Run.create(make_config(tmp_path, episodes=6, **{"budget.max_iterations": 2}), tmp_path / "r", **factories())
    s = run.execute()
    assert s.iterations == 2 and s.end_reason == "max_iterations: 2 of 2 used"


def test_per_iteration_tool_cap_submits_what_is_there(tmp_path):
    cfg = make_config(tmp_path, episodes=2, **{"budget.max_tool_calls_per_iteration": 2})
    run = Run.create(cfg, tmp_path / "r", **factories())
    run.execute()
    subs = list(read_events(run.dir, "submission"))
    assert [s.reason for s in subs] == ["tool_cap", "tool_cap"]


def test_tool_call_budget_mid_episode_still_scores_the_work(tmp_path):
    run = Run.create(make_config(tmp_path, episodes=3, **{"budget.max_tool_calls": 6}), tmp_path / "r", **factories())
    s = run.execute()
    assert s.end_reason == "max_tool_calls: 6 of 6 used"
    assert [e.reason for e in read_events(run.dir, "submission")] == ["submitted", "budget"]


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


def test_resume_of_a_finished_run_does_nothing(tmp_path):
    run = Run.create(make_config(tmp_path, episodes=2), tmp_path / "r", **factories())
    first = run.execute()
    again = Run.open(tmp_path / "r", **factories()).execute()
    assert again.iterations == first.iterations == 2
    assert ledger_digest(tmp_path / "r")["run_end"] == ["the model stopped"]


def test_torn_last_line_is_repaired(tmp_path):
    led = Ledger(tmp_path)
    led.append(RunStart(name="a"))
    led.append(RunEnd(reason="b"))
    led.close()
    with (tmp_path / "events.jsonl").open("ab") as f:
        f.write(b'{"seq":2,"ts":1,"type":"run_end","reason":')
    # a reader stops before the torn line, and changes nothing
    size = (tmp_path / "events.jsonl").stat().st_size
    assert [e.type for e in read_events(tmp_path)] == ["run_start", "run_end"]
    assert (tmp_path / "events.jsonl").stat().st_size == size
    led2 = Ledger(tmp_path)
    assert led2.repaired_bytes > 0
    assert [e.type for e in led2.events()] == ["run_start", "run_end"]
    led2.append(RunEnd(reason="c"))
    assert [e.seq for e in led2.events()] == [0, 1, 2]
    led2.close()


def test_kcores_50_preset_tools_and_the_last_call_scores(tmp_path):
    cfg = make_config(tmp_path, episodes=1, **{"agent.preset": "kcores-50", "budget.max_tool_calls": 4,
                                               "budget.max_tool_calls_per_iteration": 50})
    steps = [{"name": "list_files", "arguments": {}},
             {"name": "write_file", "arguments": {"path": "src/distance.rs", "content": "// k\n"}},
             {"name": "get_status", "arguments": {}},
             {"name": "read_file", "arguments": {"path": "src/distance.rs"}},
             {"name": "finish", "arguments": {}}]
    model = ScriptedModel([steps])
    seen = {}
    original = model.complete

    def spy(messages, tools):
        seen["tools"] = [t.name for t in tools]
        return original(messages, tools)

    model.complete = spy
    run = Run.create(cfg, tmp_path / "r", model=model, **factories())
    s = run.execute()
    assert seen["tools"] == ["read_file", "write_file", "list_files", "build_project", "run_benchmark",
                             "run_correctness_test", "run_profiling", "get_status", "finish"]
    status = [e.output for e in read_events(run.dir, "tool_call") if e.name == "get_status"][0]
    assert "tool calls used: 2; left: 2 of 4" in status
    # the 50-call budget (4 here) ends the session; the last state is still scored, as in the original
    assert s.end_reason == "max_tool_calls: 4 of 4 used"
    assert [e.reason for e in read_events(run.dir, "submission")] == ["budget"]
    assert len(list(read_events(run.dir, "score"))) == 1


def test_kcores_finish_submits(tmp_path):
    cfg = make_config(tmp_path, episodes=1, **{"agent.preset": "kcores-50", "budget.max_tool_calls": 50})
    model = ScriptedModel([[{"name": "finish", "arguments": {"summary": "done"}}]])
    run = Run.create(cfg, tmp_path / "r", model=model, **factories())
    run.execute()
    assert [e.message for e in read_events(run.dir, "submission")] == ["done"]


def test_workspace_with_relative_paths(tmp_path, monkeypatch):
    """`staircase run` from any directory: runs_dir is relative ("runs") by default."""
    from harness.workspace import Workspace

    monkeypatch.chdir(tmp_path)
    ws = Workspace.create(Path("runs/r1/workspace"), Path("runs/r1/workspace.git"))
    (tmp_path / "runs/r1/workspace/src/db.rs").write_text("// changed\n")
    ws.commit_submission(1, "first")
    assert ws.last_submission_ref() == "sub-0001" and ws.path.is_absolute()
    monkeypatch.chdir("/")
    again = Workspace(tmp_path / "runs/r1/workspace", tmp_path / "runs/r1/workspace.git")
    assert again.head() == ws.head()
