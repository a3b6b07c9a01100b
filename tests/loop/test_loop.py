import json

from harness.ledger import read_events
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


def test_resume_of_a_finished_run_does_nothing(tmp_path):
    run = Run.create(make_config(tmp_path, episodes=2), tmp_path / "r", **factories())
    first = run.execute()
    again = Run.open(tmp_path / "r", **factories()).execute()
    assert again.iterations == first.iterations == 2
    assert ledger_digest(tmp_path / "r")["run_end"] == ["the model stopped"]


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


