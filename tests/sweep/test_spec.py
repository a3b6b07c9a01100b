"""The sweep file: groups from entries x matrix, one run per seed, overrides in order, errors that
name the file, the entry and the field; the head's copy of a run and the checks a node makes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config import ConfigError
from harness.ledger import Ledger
from harness.sweep.ray_executor import check_node, pack_run, requirements, unpack_run
from harness.sweep.spec import default_concurrency, load_sweep, plan
from tests.sweep.support import write_sweep


def test_plan_is_entries_x_matrix_x_seeds(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, seeds=[3, 5], iterations={"a": 2, "b": 4},
                       extra={"matrix": {"scorer.passes": [2, 3]}, "set": ["scorer.max_queries=7"]})
    spec, run_sets = load_sweep(path, ["sweep.concurrency=3", "budget.max_tool_calls=9"])
    assert spec.concurrency == 3 and run_sets == ["budget.max_tool_calls=9"]
    runs = plan(spec, run_sets)
    assert [r.run_id for r, _ in runs] == ["a+passes=2-s3", "a+passes=2-s5", "a+passes=3-s3", "a+passes=3-s5",
                                           "b+passes=2-s3", "b+passes=2-s5", "b+passes=3-s3", "b+passes=3-s5"]
    r, cfg = runs[-1]
    assert (r.group, r.seed, cfg.seed, cfg.name) == ("b+passes=3", 5, 5, "b+passes=3-s5")
    assert (cfg.budget.max_iterations, cfg.scorer.passes, cfg.scorer.max_queries, cfg.budget.max_tool_calls) == \
        (4, 3, 7, 9)


def test_bad_input_names_the_field(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, seeds=[1], iterations={"a": 2}, extra={"set": ["scorer.pases=2"]})
    with pytest.raises(ConfigError, match=r"(?s)runs\[0\] \(a, seed 1\).*base.yaml.*scorer.pases: unknown field"):
        plan(*load_sweep(path))
    with pytest.raises(ConfigError, match="seeds must be distinct"):
        load_sweep(path, ["sweep.seeds=[1,1]"])
    with pytest.raises(ConfigError, match="(?s)sweep.yaml with --set concurency=2.*concurency: unknown field"):
        load_sweep(path, ["sweep.concurency=2"])
    data = yaml.safe_load(path.read_text())
    data["set"] = []
    data["runs"].append(dict(data["runs"][0]))
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="group 'a' is also runs\\[0\\]'s"):
        plan(*load_sweep(path))


def test_default_concurrency_leaves_the_scorer_its_cpus() -> None:
    assert default_concurrency(2) == 1 and default_concurrency(4) == 1 and default_concurrency(8) == 3


def test_a_run_copy_round_trips_without_its_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ledger = Ledger(run)  # holds run/.lock
    (run / "events.jsonl").write_text('{"type": "run_start"}\n')
    (run / "workspace.git" / "refs").mkdir(parents=True)
    (run / "workspace.git" / "refs" / "x").write_text("abc")
    (run / ".state.json.tmp").write_text("half")
    data = pack_run(run)
    ledger.close()
    copy = tmp_path / "head" / "run"
    copy.mkdir(parents=True)
    (copy / "stale").write_text("from an older copy")
    unpack_run(data, copy)
    got = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    assert got == ["events.jsonl", "workspace.git/refs/x"]
    assert not list(copy.parent.glob(".run.*"))


def test_a_node_checks_the_dataset_and_generates_a_missing_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_sweep(tmp_path, seeds=[1], iterations={"a": 2}, extra={"ray": {"check_image": False}})
    spec, _ = load_sweep(path)
    (run, cfg), = plan(spec)
    cfg_text = yaml.safe_dump(cfg.model_dump(mode="json"))
    req = requirements(cfg_text, spec)
    assert req["image"] is None and req["dataset"]["name"] == "tiny"
    assert check_node(req) == []
    # Another node, whose data directory lacks the set: generated there from the same parameters.
    other = dict(req["dataset"], data_dir=str(tmp_path / "node-data"))
    assert check_node({"dataset": other}) == [] and (tmp_path / "node-data" / "tiny").is_dir()
    wrong = dict(other, sha256=dict(other["sha256"], base="0" * 64))
    problems = check_node({"dataset": wrong})
    assert len(problems) == 1 and "differs from the head's" in problems[0] and "base" in problems[0]
