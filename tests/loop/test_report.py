import json
from pathlib import Path

from typer.testing import CliRunner

from harness.analysis.staircase import Point, find_transitions, load_staircase
from harness.cli import app
from harness.run import Run
from tests.loop.support import factories, make_config


def _pt(i, qps, valid=True):
    return Point(iteration=i, status="valid" if valid else "invalid", valid=valid, qps=qps, recall=0.99,
                 qps_spread=1.02, message=f"m{i}", best_so_far=None, at={"iterations": i})


def test_transitions_are_jumps_beyond_the_threshold_after_plateaus():
    qps = [100, 102, 101, 300, 305, 290, 900, 910]
    points = []
    best = None
    for i, q in enumerate(qps, 1):
        p = _pt(i, q, valid=(i != 6))
        if p.valid:
            best = max(best or 0, q)
        p.best_so_far = best
        points.append(p)
    ts = find_transitions(points, 0.1)
    assert [t.iteration for t in ts] == [1, 4, 7]
    assert ts[1].plateau_iterations == 2 and ts[1].from_qps == 102 and ts[1].ratio == round(300 / 102, 3)


def test_report_and_runs_commands(tmp_path):
    run = Run.create(make_config(tmp_path, episodes=3), tmp_path / "runs" / "r1", **factories())
    run.execute()
    sc = load_staircase(run.dir)
    assert len(sc.points) == 3 and sc.end_reason == "the model stopped"
    assert sc.points[-1].at["tool_calls"] == 12
    res = CliRunner().invoke(app, ["report", str(run.dir), "--axis", "tool_calls", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    png = run.dir / "staircase-tool_calls.png"
    assert out["png"] == str(png) and png.read_bytes()[:4] == b"\x89PNG"
    page = (run.dir / "report.html").read_text()
    assert "Plotly.newPlot" in page and "version 3" in page and "<script src=\"http" not in page
    listing = json.loads(CliRunner().invoke(app, ["runs", str(tmp_path / "runs"), "--json"]).stdout)
    assert listing[0]["run"] == "r1" and listing[0]["iterations"] == 3
    bad = CliRunner().invoke(app, ["report", str(run.dir), "--axis", "parsecs"])
    assert bad.exit_code == 2 and "--axis must be one of" in bad.output


def test_compare_cuts_runs_at_the_same_budget(tmp_path):
    a = Run.create(make_config(tmp_path / "a", episodes=4), tmp_path / "runs" / "a", **factories())
    a.execute()
    b = Run.create(make_config(tmp_path / "b", episodes=2), tmp_path / "runs" / "b", **factories())
    b.execute()
    res = CliRunner().invoke(app, ["compare", str(a.dir), str(b.dir), "--budget", "tool_calls=8", "--json",
                                   "--out", str(tmp_path / "cmp.png")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["points"] for r in out["runs"]] == [2, 2]  # 4 tool calls per iteration
    # the same script and a scorer that depends only on the tree: the same staircase up to the cut
    assert out["runs"][0]["best_valid_qps"] == out["runs"][1]["best_valid_qps"]
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert out["models"][0]["runs"] == 2  # same (scripted) model: mean and spread over the two runs
    whole = json.loads(CliRunner().invoke(app, ["compare", str(a.dir), str(b.dir), "--json", "--out",
                                                 str(tmp_path / "c2.png")]).stdout)
    assert [r["points"] for r in whole["runs"]] == [4, 2]
    bad = CliRunner().invoke(app, ["compare", str(a.dir), "--budget", "parsecs=3"])
    assert bad.exit_code == 2


def test_replay_shows_and_redrives_an_iteration_to_the_same_tree(tmp_path):
    run = Run.create(make_config(tmp_path, episodes=3), tmp_path / "runs" / "r", **factories())
    run.execute()
    res = CliRunner().invoke(app, ["replay", str(run.dir), "--iteration", "2", "--redrive", "--sandbox", "local",
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["iteration"] == 2 and out["redrive"]["identical"] is True
    assert out["redrive"]["end"] == "submitted"
    shown = CliRunner().invoke(app, ["replay", str(run.dir), "--iteration", "3"])
    assert shown.exit_code == 0 and "write_file" in shown.output and "version 3" in shown.output
    missing = CliRunner().invoke(app, ["replay", str(run.dir), "--iteration", "9"])
    assert missing.exit_code == 2 and "has no score" in missing.output


def _kcores_entry(root):
    entry = root / "gemini-3-pro-preview-turn-1"
    (entry / "benchmarks").mkdir(parents=True)
    lines = [{"event": "session_start", "model": "google/gemini-3-pro-preview",
              "timestamp": "2026-02-19T19:07:42.100114355+00:00"}]
    qps = [(15.76, 0.9994, True), (27.289, 0.9994, True), (400.0, 0.93, False), (349.5, 0.96, True)]
    for i, (q, r, ok) in enumerate(qps, 1):
        tool = "finish" if i == len(qps) else "run_benchmark"
        lines += [{"event": "tool_call", "index": 2 * i - 1, "tool": "write_file", "arguments": "{}",
                   "timestamp": f"2026-02-19T19:{10 + i:02d}:00Z"},
                  {"event": "tool_call", "index": 2 * i, "tool": tool, "arguments": "{}",
                   "timestamp": f"2026-02-19T19:{10 + i:02d}:30Z"},
                  {"event": "tool_result", "index": 2 * i, "tool": tool, "result": {},
                   "timestamp": f"2026-02-19T19:{11 + i:02d}:00Z"}]
        (entry / "benchmarks" / f"benchmark_{i:03d}.json").write_text(json.dumps(
            {"qps": q, "total_queries": 1000, "recall": r, "recall_threshold": 0.95, "recall_passed": ok,
             "p50_latency_ms": 1.0, "p95_latency_ms": 2.0, "p99_latency_ms": 3.0, "concurrency": 4}))
    lines.append({"event": "session_end", "tool_calls_used": 8, "tool_calls_total": 50, "reason": "finish_called",
                  "timestamp": "2026-02-19T19:20:00Z"})
    (entry / "agent_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return entry


def test_import_kcores_entry_then_report_and_compare(tmp_path):
    entry = _kcores_entry(tmp_path)
    res = CliRunner().invoke(app, ["import", "kcores", str(entry), "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["submissions"] == 4 and out["tool_calls"] == 8
    sc = load_staircase(Path(out["run_dir"]))
    assert sc.imported and sc.model == "google/gemini-3-pro-preview"
    assert [p.status for p in sc.points] == ["valid", "valid", "invalid", "valid"]
    assert sc.best().qps == 349.5 and sc.end_reason == "kcores: finish_called"
    assert abs(sc.usage["hours"] - (20 * 60 - 7 * 60 - 42.1) / 3600) < 0.01
    rep = CliRunner().invoke(app, ["report", out["run_dir"], "--json"])
    assert rep.exit_code == 0, rep.output
    ours = Run.create(make_config(tmp_path, episodes=2), tmp_path / "runs" / "ours", **factories())
    ours.execute()
    cmp_ = json.loads(CliRunner().invoke(app, ["compare", out["run_dir"], str(ours.dir), "--json", "--out",
                                              str(tmp_path / "c.png")]).stdout)
    assert any("different hardware" in w for w in cmp_["warnings"])
    again = CliRunner().invoke(app, ["import", "kcores", str(entry), "--runs-dir", str(tmp_path / "runs")])
    assert again.exit_code == 2 and "already holds a run" in again.output


def test_run_prints_the_view_command_for_its_run(tmp_path, capsys):
    from harness.run_cli import _execute

    run_dir = tmp_path / "runs" / "watched"
    _execute(lambda: Run.create(make_config(tmp_path, episodes=1), run_dir, **factories()), json=True)
    err = capsys.readouterr().err
    assert f"staircase view {run_dir}" in " ".join(err.split())


def test_charts_draw_verdicts_and_the_anchor_only_when_recorded():
    from harness.analysis.charts import ANCHOR, CONFIRMED, INVALID, VALID, WITHIN_NOISE, staircase_figure
    from harness.analysis.staircase import Staircase

    def sc(points):
        return Staircase(run_dir="r", name="r", model="m", points=points, transitions=find_transitions(points, 0.05),
                         noise=0.02, threshold=0.05, usage={}, end_reason=None)

    old = [_pt(1, 100), _pt(2, 50, valid=False), _pt(3, 200)]
    for p, best in zip(old, [100, 100, 200], strict=True):
        p.best_so_far = best
    names = [t.name for t in staircase_figure(sc(old)).data]
    assert VALID in names and INVALID in names and CONFIRMED not in names and ANCHOR not in names
    paired = [p.model_copy(update={"relative_qps": (p.qps or 0) / 90, "relative_low": 0.9, "relative_high": 1.2,
                                   "anchor_qps": 90.0 + p.iteration}) for p in old]
    paired[0].verdict, paired[2].verdict = "confirmed", "within_noise"
    fig = staircase_figure(sc(paired))
    by_name = {t.name: t for t in fig.data}
    assert list(by_name[CONFIRMED].customdata) == [1] and list(by_name[WITHIN_NOISE].customdata) == [3]
    assert by_name[WITHIN_NOISE].marker.symbol == "diamond-open" and by_name[CONFIRMED].marker.symbol == "diamond"
    assert list(by_name[ANCHOR].y) == [91.0, 92.0, 93.0]


def test_charts_label_at_most_the_twelve_largest_transitions():
    from harness.analysis.charts import MAX_LABELS, staircase_figure
    from harness.analysis.staircase import Staircase

    points = []
    for i in range(1, 41):
        p = _pt(i, 100 * 1.1 ** i + (500 if i == 30 else 0))
        points.append(p)
    best = 0.0
    for p in points:
        best = max(best, p.qps or 0)
        p.best_so_far = best
    ts = find_transitions(points, 0.05)
    assert len(ts) > MAX_LABELS
    sc = Staircase(run_dir="r", name="r", model="m", points=points, transitions=ts, noise=0.02, threshold=0.05,
                   usage={}, end_reason=None)
    labels = [a.text for a in staircase_figure(sc).layout.annotations if a.text.startswith("#")]
    assert len(labels) == MAX_LABELS and any(t.startswith("#1 ") for t in labels)
    assert any(t.startswith("#30 ") for t in labels)  # the largest jump is among them


def test_a_step_within_noise_is_never_a_transition():
    points = []
    for i, (q, verdict) in enumerate([(100, None), (300, "within_noise"), (320, None), (900, "confirmed")], 1):
        p = _pt(i, q)
        p.best_so_far, p.verdict = q, verdict
        points.append(p)
    ts = find_transitions(points, 0.1)
    # 100 -> 300 is a 3x rise, but its rematch could not tell it from 100: no transition there; the
    # next rise (320, unchecked) is measured from the noisy best, and 900 is a confirmed jump.
    assert [t.iteration for t in ts] == [1, 4]
    assert ts[1].from_qps == 320 and ts[1].plateau_iterations == 2
    # A confirmed step needs only the least jump (5%), not the raw-noise threshold.
    steps = [_pt(1, 100), _pt(2, 112), _pt(3, 130)]
    for p, best, verdict in zip(steps, [100, 112, 130], [None, "confirmed", None], strict=True):
        p.best_so_far, p.verdict = best, verdict
    assert [t.iteration for t in find_transitions(steps, 0.5)] == [1, 2]


def test_report_shows_the_verified_best_and_draws_verdicts_in_the_png(tmp_path):
    from harness.analysis.report import write_report
    from harness.analysis.staircase import Staircase
    from harness.scorer.record import Paired, Verification, VerifiedEntry

    def paired(r, against):
        return Paired(against=against, against_tree="t", rounds=6, ratio=r, low=r - 0.05, high=r + 0.05,
                      qps=[1.0] * 6, other_qps=[1.0] * 6, seconds=3.0)

    points = [_pt(1, 100), _pt(2, 300)]
    points[0].best_so_far, points[1].best_so_far, points[1].verdict = 100, 300, "confirmed"
    v = Verification(entries=[VerifiedEntry(label="iteration 2", iteration=2, tree="b", qps=300,
                                            relative=paired(1.5, "anchor")),
                              VerifiedEntry(label="iteration 1", iteration=1, tree="a", qps=100,
                                            relative=paired(0.5, "anchor"))],
                     best="iteration 2", best_iteration=2, best_vs_next=paired(3.0, "iteration 1"), told_apart=True,
                     anchor_tree="x", rounds=6, seconds=3.0)
    sc = Staircase(run_dir="r", name="r", model="m", points=points, transitions=find_transitions(points, 0.05),
                   noise=0.02, threshold=0.05, usage={}, end_reason=None, verified=v)
    png, page = write_report(sc, "iterations", tmp_path)
    text = page.read_text()
    assert "Verified best" in text and "iteration 2 (verified best)" in text and "1.500x [1.450, 1.550]" in text
    assert "told apart" in text and png.stat().st_size > 10_000
    assert sc.verified_best() is points[1]


def test_runs_are_labelled_and_grouped_by_their_scaffold(tmp_path):
    a = Run.create(make_config(tmp_path / "a", episodes=2), tmp_path / "runs" / "a", **factories())
    a.execute()
    cfg = make_config(tmp_path / "b", episodes=2, **{"agent.scaffold": "command", "scaffold.command": "echo"})
    b = Run.create(cfg, tmp_path / "runs" / "b", **factories())  # recorded, not run: only its start matters
    b.ledger.close()
    assert load_staircase(a.dir).model == "reference"
    assert load_staircase(b.dir).model == "reference via command"
    res = CliRunner().invoke(app, ["compare", str(a.dir), str(b.dir), "--json", "--out", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    assert sorted(m["model"] for m in json.loads(res.stdout)["models"]) == ["reference", "reference via command"]
