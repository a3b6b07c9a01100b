"""KCORES leaderboard entries scored as the original scored them (issue 16, part 1).

The entries here are our own code in an entry's shape: ``Cargo.toml``, ``Cargo.lock``, ``src/`` and
``src_best_qps/`` each holding a ``main.rs`` and an ``api.rs`` whose text differs from our skeleton's
(as the original skeleton's does), plus the entry's record files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.analysis.kcores_import import import_entry
from harness.scorer.record import Score, Status
from harness.scorer.runner import LocalRunner
from harness.scorer.scorer import BenchmarkScorer
from harness.scorer.submission import check_rules, prepare, prepare_entry, tree_hash
from tests.scorer.conftest import needs_cargo, quick_scorer_config
from tests.scorer.submissions import REPO, write_stage1

# A first search that builds the index, as the published entries do (k-means on the first query).
LAZY_BUILD = """
impl VectorDB {
    pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult> {
        static BUILT: std::sync::Once = std::sync::Once::new();
        BUILT.call_once(|| std::thread::sleep(std::time::Duration::from_secs(SECONDS)));
        self.exact_search(v, k)
    }
}
"""


def _read_only_text(name: str) -> str:
    """Our skeleton's read-only file, reworded as the original's is (same code, other text)."""
    text = (REPO / "skeleton" / "src" / name).read_text()
    return "// the original skeleton's copy, as an entry holds it\n" + text.replace("//!", "//")


def _lazy(db: str, seconds: int) -> str:
    old = "pub fn search("
    assert old in db
    return db.replace(old, "#[allow(dead_code)]\n    fn exact_search(", 1) + LAZY_BUILD.replace("SECONDS", str(seconds))


def make_entry(root: Path, *, final_lazy_s: int | None = None, best_lazy_s: int | None = None) -> Path:
    """An entry: best = the stage-1 brute force (or it with a lazy build), final = the same with a
    lazy build of ``final_lazy_s`` seconds (or unchanged)."""
    stage = write_stage1(root / "stage1")
    entry = root / "entry"
    for layer, lazy in (("src", final_lazy_s), ("src_best_qps", best_lazy_s)):
        d = entry / layer
        d.mkdir(parents=True)
        for f in (stage / "src").glob("*.rs"):
            shutil.copy(f, d / f.name)
        for name in ("main.rs", "api.rs"):
            (d / name).write_text(_read_only_text(name))
        if lazy is not None:
            (d / "db.rs").write_text(_lazy((d / "db.rs").read_text(), lazy))
    shutil.copy(stage / "Cargo.toml", entry / "Cargo.toml")
    if (REPO / "skeleton" / "Cargo.lock").is_file():
        shutil.copy(REPO / "skeleton" / "Cargo.lock", entry / "Cargo.lock")
    (entry / "final-report.md").write_text("# what the model wrote about itself\n")
    (entry / "benchmarks").mkdir()
    for i, (qps, ok) in enumerate([(50.0, True), (80.0, True), (70.0, True)], 1):
        (entry / "benchmarks" / f"benchmark_{i:03d}.json").write_text(json.dumps(
            {"qps": qps, "total_queries": 1000, "recall": 0.99 if ok else 0.5, "recall_threshold": 0.95,
             "recall_passed": ok, "concurrency": 4}))
    lines = [{"event": "session_start", "model": "ours/entry-shaped", "timestamp": "2026-02-19T19:00:00Z"}]
    for i in range(1, 4):
        tool = "finish" if i == 3 else "run_benchmark"
        lines += [{"event": "tool_call", "index": i, "tool": tool, "arguments": "{}", "tool_call_id": f"c{i}",
                   "timestamp": f"2026-02-19T19:0{i}:00Z"},
                  {"event": "tool_result", "index": i, "tool": tool, "tool_call_id": f"c{i}", "result": {},
                   "timestamp": f"2026-02-19T19:0{i}:30Z"}]
    (entry / "agent_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return entry


def test_entry_takes_only_what_the_model_could_write(tmp_path):
    entry = make_entry(tmp_path, final_lazy_s=1)
    stage = tmp_path / "stage1"
    # As given, the entry's read-only files differ from ours: a crate holding them breaks the rules.
    assert (entry / "src" / "main.rs").read_text() != (REPO / "skeleton" / "src" / "main.rs").read_text()
    best = prepare_entry(entry, tmp_path / "best", "best")
    assert check_rules(best.root).violations == []
    assert tree_hash(best.root) == tree_hash(prepare(stage, tmp_path / "stage-again"))
    assert (best.root / "Cargo.lock").read_bytes() == (entry / "Cargo.lock").read_bytes()
    assert not (best.root / "final-report.md").exists() and not (best.root / "agent_log.jsonl").exists()
    said = "\n".join(best.left_out)
    for name in ("src/main.rs", "src/api.rs", "src_best_qps/main.rs", "src_best_qps/api.rs"):
        assert f"{name}: read-only in the original" in said
    assert "final-report.md: outside what the original let the model write" in said
    assert "benchmarks" not in said and "agent_log" not in said  # the entry's record, not its code
    final = prepare_entry(entry, tmp_path / "final", "final")
    assert check_rules(final.root).violations == []
    assert "exact_search" in (final.root / "src" / "db.rs").read_text()
    assert tree_hash(final.root) != tree_hash(best.root)
    assert any(x.startswith("src_best_qps/: the best-QPS snapshot") for x in final.left_out)
    assert not any(x.startswith("src_best_qps/main.rs") for x in final.left_out)
    # A complete crate of the skeleton's shape is still taken whole (its main.rs is checked, not dropped).
    whole = prepare_entry(stage, tmp_path / "whole")
    assert whole.left_out == [] and (whole.root / "src" / "main.rs").read_bytes() == (
        REPO / "skeleton" / "src" / "main.rs").read_bytes()


def test_import_names_the_trees_score_lays_out(tmp_path):
    entry = make_entry(tmp_path, final_lazy_s=1)
    out = import_entry(entry, tmp_path / "runs" / "imported")
    best = prepare_entry(entry, tmp_path / "best", "best")
    final = prepare_entry(entry, tmp_path / "final", "final")
    assert out["variants"]["best"] == {"tree_hash": tree_hash(best.root), "left_out": best.left_out}
    assert out["variants"]["final"] == {"tree_hash": tree_hash(final.root), "left_out": final.left_out}
    # benchmark 2 (80 QPS) is the best passing one: src_best_qps/ holds its sources; 3 is finish's.
    assert out["variant_iterations"] == {"best": 2, "final": 3}
    scores = [json.loads(line)["score"] for line in (tmp_path / "runs" / "imported" / "events.jsonl").read_text()
              .splitlines() if '"type":"score"' in line.replace(" ", "")]
    assert [s["tree_hash"] for s in scores] == ["", tree_hash(best.root), tree_hash(final.root)]
    assert Score.model_validate(scores[1]).left_out == best.left_out
    assert "left_out" not in scores[0]  # an unset later field stays out of the record


def test_which_sources_each_benchmark_measured(tmp_path):
    """src_best_qps/ is copied for a run_benchmark only, never for finish (agent/src/tools.rs); a
    failed benchmark wrote no file; the finish the agent runs at the tool-call limit logs no result."""
    from harness.analysis.kcores_import import published_variant

    entry = make_entry(tmp_path)
    lines = [json.loads(x) for x in (entry / "agent_log.jsonl").read_text().splitlines()]
    error = [{"event": "tool_call", "index": 9, "tool": "run_benchmark", "arguments": "{}", "tool_call_id": "e",
              "timestamp": "2026-02-19T19:00:10Z"},
             {"event": "tool_result", "index": 9, "tool": "run_benchmark", "tool_call_id": "e",
              "result": {"type": "Error", "message": "Build failed"}, "timestamp": "2026-02-19T19:00:20Z"}]
    # the finish (the third file) is now the agent's own, at the limit, and the highest QPS
    lines = lines[:1] + error + lines[1:5] + [{"event": "session_end", "reason": "tool_call_limit",
                                               "timestamp": "2026-02-19T19:09:00Z"}]
    (entry / "agent_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (entry / "benchmarks" / "benchmark_003.json").write_text(json.dumps(
        {"qps": 90.0, "total_queries": 10000, "recall": 0.99, "recall_threshold": 0.95, "recall_passed": True}))
    out = import_entry(entry, tmp_path / "runs" / "imported")
    assert out["submissions"] == 3 and out["variant_iterations"] == {"best": 2, "final": 3}
    assert published_variant(entry, 90.0) == "final" and published_variant(entry, 80.0) == "best"


@pytest.mark.rust
@pytest.mark.slow
@needs_cargo
def test_entry_variants_score_under_the_originals_limits(small_dataset, tmp_path):
    """best: valid. final: its first search builds for 4 s, longer than a strict request may take
    (3 s here) but the original has no limit per request: valid, the warm-up took the build. A build
    longer than the whole benchmark's limit: timeout, naming the warm-up and the times. And import
    and score name the same trees."""
    entry = make_entry(tmp_path, final_lazy_s=4)
    cfg = quick_scorer_config(protocol="kcores", passes=1, request_timeout_s=3, benchmark_timeout_s=60)
    scorer = BenchmarkScorer(cfg, small_dataset, LocalRunner())
    try:
        best = scorer.score(entry, variant="best", use_cache=False)
        assert best.status == Status.VALID and best.recall == 1.0, best.reason
        assert any("src_best_qps/main.rs: read-only" in x for x in best.left_out or [])
        assert json.loads(best.model_dump_json())["left_out"] == best.left_out
        final = scorer.score(entry, variant="final", use_cache=False)
        assert final.status == Status.VALID, final.reason
        assert final.phase_seconds["warmup"] >= 4 > cfg.request_timeout_s
        assert any("server CPUs: the original pinned the server to 4 CPUs" in f for f in final.not_as_original or [])
    finally:
        scorer.close()
    out = import_entry(entry, tmp_path / "runs" / "imported")
    assert out["variants"]["best"]["tree_hash"] == best.tree_hash
    assert out["variants"]["final"]["tree_hash"] == final.tree_hash
    assert out["variants"]["best"]["left_out"] == best.left_out

    slow = make_entry(tmp_path / "slow", best_lazy_s=30)
    short = BenchmarkScorer(cfg.model_copy(update={"benchmark_timeout_s": 8.0}), small_dataset, LocalRunner())
    try:
        s = short.score(slow, variant="best", use_cache=False)
    finally:
        short.close()
    assert s.status == Status.TIMEOUT, s.reason
    assert s.reason.startswith("warm-up (20 sequential searches, unfinished)"), s.reason
    assert "longer than 8 s, the whole benchmark's limit (load " in s.reason and "warm-up " in s.reason
    assert "BENCHMARK_TIMEOUT_SECS = 600" in s.reason
    assert s.phase_seconds["warmup"] < 8 + 5  # stopped at the limit, not after the 30 s build


class _Recorded:
    """Stands in for the scorer in the bench's own test: what it was asked to score, in order."""

    def __init__(self, dataset) -> None:
        from harness.scorer.record import Hardware

        self.asked: list[tuple[str, str]] = []
        self.dataset = dataset
        self.hardware = Hardware(cpu_model="test", host_cpus=2, server_cpus="0", loadgen_cpus="1", memory_limit="1g",
                                 runner="local")

    def score(self, path, *, use_cache=True, variant="best", incumbent=None):
        self.asked.append((Path(path).name, variant))
        return Score(status=Status.VALID, reason="measured", valid=True, qps=12.5, recall=0.97, recall_floor=0.95,
                     protocol="kcores", dataset="d", dataset_sha256="", tree_hash="t", settings_hash="s",
                     hardware=self.hardware, scored_at="", left_out=["src_best_qps/main.rs: read-only"])

    def kcores_cpus_note(self):
        return ["server CPUs: 1 of the original's 4"]

    def close(self):
        pass


def test_bench_kcores_ranks_models_and_prints_published_beside_measured(tmp_path, small_dataset, monkeypatch):
    from typer.testing import CliRunner

    from harness.bench import kcores as kb
    from harness.cli import app

    root = tmp_path / "repo"
    board = []
    for name, model, qps in [("a-turn-1", "m/a", 900.0), ("a-turn-2", "m/a", 1000.0), ("b-turn-1", "m/b", 500.0),
                             ("c-turn-1", "m/c", 0.0)]:
        d = root / "leaderboard" / name / "src_best_qps"
        d.mkdir(parents=True)
        (d / "db.rs").write_text("// code\n")
        (d.parent / "Cargo.toml").write_text("[package]\nname = \"x\"\n")
        board.append({"model_name": model, "entry_dir": name, "qps": qps, "recall": 0.96 if qps else 0.0,
                      "recall_passed": qps > 0, "result_source": "best_benchmark"})
    (root / "results").mkdir()
    (root / "results" / "leaderboard.json").write_text(json.dumps(board))
    found = kb.find_entries(root / "leaderboard")
    assert [e.name for e in found] == ["a-turn-2", "a-turn-1", "b-turn-1", "c-turn-1"]
    assert [e.name for e in kb.pick(found, 2)] == ["a-turn-2", "b-turn-1"]
    assert len(kb.pick(found, None, every_entry=True)) == 4
    assert found[0].published.source == "leaderboard.json (best_benchmark)" and found[0].variant == "best"

    recorded = _Recorded(small_dataset)
    monkeypatch.setattr("harness.scorer.scorer.BenchmarkScorer.from_config", lambda cfg, ds: recorded)
    res = CliRunner().invoke(app, ["bench", "kcores", "--entries", str(root / "leaderboard"), "--top", "2",
                                   "--variant", "final", "--json", "--set", "scorer.runner=local"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert recorded.asked == [("a-turn-2", "final"), ("b-turn-1", "final")]
    assert out["protocol"] == "kcores" and out["not_as_original"] == ["server CPUs: 1 of the original's 4"]
    assert [(r["entry"], r["published"]["qps"], r["qps"], r["status"]) for r in out["rows"]] == [
        ("a-turn-2", 1000.0, 12.5, "valid"), ("b-turn-1", 500.0, 12.5, "valid")]
    assert out["rows"][0]["left_out"] == ["src_best_qps/main.rs: read-only"]
    bad = CliRunner().invoke(app, ["bench", "kcores", "--entries", str(tmp_path / "nowhere")])
    assert bad.exit_code != 0 and "not a folder" in bad.output
