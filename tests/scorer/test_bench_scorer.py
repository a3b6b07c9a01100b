"""``staircase bench scorer``: the split of a scoring's wall time, the rows, and the command end to end
(local runner, small set; the issue's figures come from running it on gen-1m, not from CI)."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from harness.bench import scorer_bench as sb
from harness.cli import app
from harness.scorer.record import Hardware, PassResult, Score, Status
from tests.scorer.conftest import needs_cargo
from tests.scorer.submissions import write_stage1


def score(**kw) -> Score:
    base = dict(status=Status.VALID, reason="ok", valid=True, qps=1000.0, recall=1.0, recall_floor=0.95,
                protocol="strict", dataset="d", dataset_sha256="0", tree_hash="t", settings_hash="s",
                hardware=Hardware(cpu_model="x", host_cpus=2, server_cpus="0", loadgen_cpus="1", memory_limit="8g",
                                  runner="local"),
                scored_at="2026-01-01T00:00:00+00:00",
                passes=[PassResult(sent=100, completed=100, errors=0, elapsed_s=2.0, qps=50.0, timed_out=False)] * 3,
                phase_seconds={"prepare": 0.5, "build": 20.0, "start": 0.5, "load": 10.0, "warmup": 4.0,
                               "query": 10.5, "judge": 1.0, "total": 41.0})
    return Score(**(base | kw))


def test_split_counts_only_the_scorers_own_time_as_overhead():
    s = sb.split(score())
    # 41 - (20 build + 10 load + 4 warm-up + 3 x 2 passes) = 1
    assert s.passes_s == 6.0 and s.overhead_s == pytest.approx(1.0)
    assert s.overhead_fraction == pytest.approx(1 / 41, abs=1e-4)


def test_rows_judge_their_targets():
    quiet = [sb.split(score(qps=q)) for q in (1000, 1020, 990)]
    noisy = [sb.split(score(qps=q)) for q in (1000, 1300)]
    assert sb.noise_row(quiet).met and sb.noise_row(quiet).figure == pytest.approx(1020 / 990, abs=1e-4)
    assert not sb.noise_row(noisy).met
    assert sb.overhead_row(quiet).met
    slow = [sb.split(score(phase_seconds={**score().phase_seconds, "total": 60.0}))]
    assert not sb.overhead_row(slow).met  # 20 s of 60 outside the work
    rounds = [sb.CeilingRound(loadgen_rps=9000, wrk_rps=10000), sb.CeilingRound(loadgen_rps=11000, wrk_rps=10000)]
    assert sb.ceiling_row(rounds).figure == 1.0 and sb.ceiling_row(rounds).met
    assert not sb.brute_force_row(score(recall=0.97)).met


@pytest.mark.rust
@pytest.mark.slow
@needs_cargo
def test_bench_scorer_end_to_end_local(small_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("STAIRCASE_CACHE", str(tmp_path / "cache"))
    sub = write_stage1(tmp_path / "stage1")
    only = "overhead,noise,brute" + (",ceiling" if shutil.which("wrk") else "")
    res = CliRunner().invoke(app, [
        "bench", "scorer", "--dataset", small_dataset.name, "--submission", str(sub), "--brute-force", str(sub),
        "--rescorings", "2", "--brute-force-queries", "50", "--ceiling-rounds", "1", "--ceiling-seconds", "1",
        "--only", only, "--json",
        "--set", "scorer.runner=local", "--set", f"dataset.data_dir={small_dataset.root.parent}",
        "--set", "scorer.passes=2", "--set", "scorer.warmup_queries=10"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    rows = {r["name"]: r for r in report["rows"]}
    assert {"scorer overhead", "noise (rescorings)", "brute force"} <= set(rows)
    assert len(report["scorings"]) == 2 and all(s["status"] == "valid" for s in report["scorings"])
    for s in report["scorings"]:
        assert 0 < s["overhead_s"] < s["total_s"] and s["build_s"] > 0 and s["passes_s"] > 0
    assert report["brute_force"]["recall"] == 1.0 and report["brute_force"]["queries"] == 50
    assert rows["brute force"]["met"] is True
    if "ceiling" in only:
        (r,) = report["ceiling_rounds"]
        assert r["loadgen_rps"] > 0 and r["wrk_rps"] > 0


def test_bench_scorer_rejects_an_unknown_row():
    res = CliRunner().invoke(app, ["bench", "scorer", "--only", "ceiling,speed"])
    assert res.exit_code == 2 and "speed" in res.output
