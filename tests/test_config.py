from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
RUN_CONFIGS = [p for p in CONFIGS if p.name != "prices.yaml"]


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.name


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_sweeps_validate_with_every_run_config(path):
    from harness.sweep.spec import load_sweep, plan

    spec, _ = load_sweep(path)
    assert plan(spec)  # every entry's run config loads, with the sweep's overrides


def test_misspelled_key_names_field_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  provder: openai\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "model.provder: unknown field" in str(e.value)


def test_wrong_type_names_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("budget:\n  max_iterations: lots\n")
    with pytest.raises(ConfigError, match=r"budget\.max_iterations"):
        load_config(p)


def test_overrides_are_typed_and_validated():
    cfg = load_config(None, ["scorer.passes=5", "model.provider=openai", "budget.max_hours=1.5"])
    assert cfg.scorer.passes == 5 and cfg.model.provider == "openai" and cfg.budget.max_hours == 1.5
    with pytest.raises(ConfigError, match=r"scorer\.pases: unknown field"):
        load_config(None, ["scorer.pases=5"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(None, ["scorer.passes"])
    with pytest.raises(ConfigError, match=r"scorer\.server_cpus"):
        load_config(None, ["scorer.server_cpus=zero"])


def test_config_show_json_prints_one_value(tmp_path):
    res = CliRunner().invoke(app, ["config", "show", "configs/demo.yaml", "--set", "scorer.passes=2", "--json"])
    assert res.exit_code == 0, res.output
    import json

    data = json.loads(res.stdout)
    assert data["scorer"]["passes"] == 2 and data["model"]["provider"] == "scripted"


def test_config_show_bad_key_exit_code(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("scorer:\n  recal_floor: 0.9\n")
    res = CliRunner().invoke(app, ["config", "show", str(p)])
    assert res.exit_code == 2
    assert "scorer.recal_floor: unknown field" in res.output
