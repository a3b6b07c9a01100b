"""The scorer end to end with the local process runner (no isolation: well-behaved submissions)."""

import json

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.scorer.record import Status
from harness.scorer.runner import LocalRunner
from harness.scorer.scorer import BenchmarkScorer
from harness.scorer.submission import SubmissionError, check_rules, prepare, tree_hash
from tests.scorer.conftest import needs_cargo, quick_scorer_config
from tests.scorer.submissions import write_stage1, write_variant

pytestmark = [pytest.mark.rust, needs_cargo]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    return write_stage1(tmp_path_factory.mktemp("sub") / "stage1")


def test_brute_force_is_valid_under_both_protocols(stage1, small_dataset, tmp_path):
    strict = BenchmarkScorer(quick_scorer_config(passes=3), small_dataset, LocalRunner(), cache_dir=tmp_path)
    s = strict.score(stage1)
    assert s.status == Status.VALID, s.reason
    assert s.recall == 1.0 and s.qps and s.qps > 50 and len(s.passes) == 3
    assert s.distance_kind == "euclidean" and s.queries == 300
    assert s.p50_ms is not None and s.p50_ms <= s.p99_ms
    assert {"build", "start", "load", "query"} <= set(s.phase_seconds)
    assert s.qps_spread is not None and s.qps_spread >= 1.0
    # cached on the second call, measured again with use_cache=False
    again = strict.score(stage1)
    assert again.cached and again.tree_hash == s.tree_hash and again.qps == s.qps
    kc = BenchmarkScorer(quick_scorer_config(protocol="kcores", passes=1), small_dataset, LocalRunner()).score(stage1)
    assert kc.status == Status.VALID and kc.recall == 1.0 and len(kc.passes) == 1 and kc.protocol == "kcores"


def test_compile_error_is_build_failed(small_dataset, tmp_path):
    sub = write_variant("compile_error", tmp_path / "ce")
    s = BenchmarkScorer(quick_scorer_config(), small_dataset, LocalRunner()).score(sub)
    assert s.status == Status.BUILD_FAILED
    assert "error" in s.reason and "src/db.rs" in s.server_log_tail


@pytest.mark.parametrize(("variant", "needle"), [
    ("edited_read_only", "src/main.rs differs"),
    ("banned_crate", "'hnsw_rs' is a vector-search library"),
    ("dropped_debug", "debug = true"),
])
def test_rule_violations_are_caught_before_building(variant, needle, small_dataset, tmp_path):
    sub = write_variant(variant, tmp_path / variant)
    s = BenchmarkScorer(quick_scorer_config(), small_dataset, LocalRunner()).score(sub)
    assert s.status == Status.RULE_VIOLATION and needle in s.reason
    assert "build" not in s.phase_seconds


def test_kcores_entry_layout_is_laid_over_the_skeleton(tmp_path):
    entry = tmp_path / "entry"
    (entry / "src_best_qps").mkdir(parents=True)
    (entry / "src").mkdir()
    stage = write_stage1(tmp_path / "s1")
    (entry / "Cargo.toml").write_text((stage / "Cargo.toml").read_text())
    (entry / "src" / "distance.rs").write_text("// final, older\n")
    (entry / "src_best_qps" / "db.rs").write_text((stage / "src" / "db.rs").read_text())
    (entry / "src_best_qps" / "distance.rs").write_text((stage / "src" / "distance.rs").read_text())
    best = prepare(entry, tmp_path / "best", "best")
    assert (best / "src" / "distance.rs").read_text() == (stage / "src" / "distance.rs").read_text()
    assert check_rules(best).violations == []
    assert tree_hash(best) == tree_hash(prepare(stage, tmp_path / "again"))
    final = prepare(entry, tmp_path / "final", "final")
    assert (final / "src" / "distance.rs").read_text() == "// final, older\n"
    with pytest.raises(SubmissionError):
        prepare(tmp_path / "empty-does-not-exist", tmp_path / "x")


def test_score_cli_json(stage1, small_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("STAIRCASE_DATA", str(small_dataset.root.parent))
    monkeypatch.setenv("STAIRCASE_CACHE", str(tmp_path))
    args = ["score", str(stage1), "--dataset", small_dataset.name, "--json", "--set", "scorer.runner=local",
            "--set", "scorer.passes=1", "--set", "scorer.pass_time_limit_s=5",
            # strict pairs with an anchor by default: the crate itself here, in three short rounds
            "--set", f"scorer.anchor={stage1}", "--set", "scorer.pair_rounds=3", "--set", "scorer.pair_round_s=0.2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["status"] == "valid" and record["recall"] == 1.0 and record["hardware"]["runner"] == "local"
    assert record["anchor"]["rounds"] == 3 and record["relative_qps"] == record["anchor"]["ratio"]
    assert 0.5 < record["relative_qps"] < 2  # the same code on both sides
    bad = CliRunner().invoke(app, ["score", str(stage1), "--set", "scorer.pases=1"])
    assert bad.exit_code == 2 and "scorer.pases: unknown field" in bad.output


@pytest.fixture(scope="module")
def dataset_200(tmp_path_factory):
    """200 hidden queries: fresh pools of 16 per pass, fewer than the caching check needs."""
    from harness.datasets.sources import generate_dataset
    from harness.datasets.store import DatasetStore

    return generate_dataset(DatasetStore(tmp_path_factory.mktemp("data200")), "scorer-5k-200q", n=5000,
                            queries=200, dev_queries=20, seed=15)[0]


def test_on_a_small_set_only_the_first_pass_counts(stage1, dataset_200, tmp_path):
    """Issue 15: a server that remembers answers gets its first pass's QPS (every query new to it) and
    a finding, not the median of passes its cache sped up; the honest brute force keeps its QPS."""
    from harness.scorer.record import QpsSource

    def run(sub):
        return BenchmarkScorer(quick_scorer_config(passes=3), dataset_200, LocalRunner()).score(sub, use_cache=False)

    honest = run(stage1)
    cache = run(write_variant("caches_results", tmp_path / "cache"))
    for s in (honest, cache):
        assert s.status == Status.VALID and s.recall == 1.0, s.reason
        assert s.qps_source == QpsSource.FIRST_PASS and s.qps == pytest.approx(s.passes[0].qps, abs=0.01)
        assert any(f.startswith("QPS from pass 1 only") for f in s.findings), s.findings
        assert "pass 1 only" in s.reason
    later = [p.qps for p in cache.passes[1:]]
    assert min(later) > 2 * cache.qps, [p.qps for p in cache.passes]  # the cache did pay off ...
    assert cache.qps < 2 * honest.qps, (cache.qps, honest.qps)  # ... and earned nothing certified
    median = sorted(p.qps for p in honest.passes)[1]
    assert 0.5 < honest.qps / median < 2, [p.qps for p in honest.passes]  # within a pass's noise
