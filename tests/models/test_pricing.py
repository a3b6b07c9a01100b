"""The price table: lookups, costs with cached tokens, unknown models, the shipped table."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from harness.models.base import Usage
from harness.models.pricing import REPO_ROOT, PriceTable

SHIPPED = REPO_ROOT / "configs" / "prices.yaml"


def test_shipped_table_has_the_models_we_run() -> None:
    snap = PriceTable.load(SHIPPED).snapshot()
    assert {"glm-5.1", "claude-opus-4-6", "claude-sonnet-4-5", "gpt-4.1", "gpt-5"} <= set(snap["models"])
    assert snap["unit"] == "USD per million tokens"
    assert snap["models"]["claude-opus-4-6"] == {"input": 5.0, "output": 25.0, "cached_input": 0.5, "cache_write": 6.25}


def test_relative_path_resolves_from_the_repo_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert PriceTable.load(Path("configs/prices.yaml")).lookup("glm-5.1") is not None


def test_lookup_by_alias_prefix_and_dated_snapshot() -> None:
    table = PriceTable.load(SHIPPED)
    opus = table.lookup("claude-opus-4-6")
    assert table.lookup("claude-opus-4-6-20260205") == opus
    assert table.lookup("anthropic/Claude-Opus-4-6") == opus
    assert table.lookup("gpt-4.1-2025-04-14") == table.lookup("gpt-4.1")
    assert table.lookup("zai-org/GLM-5.1") == table.lookup("glm-5.1")
    assert table.lookup("gpt-5-mini") is None  # a different model, not a snapshot of gpt-5


def test_cost_bills_each_part_of_the_input_at_its_rate() -> None:
    table = PriceTable.load(SHIPPED)
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, cached_input_tokens=600_000,
                  cache_write_tokens=300_000)
    # opus: 100K uncached at $5, 600K cached at $0.50, 300K written at $6.25, 100K out at $25.
    assert table.cost("claude-opus-4-6", usage) == pytest.approx(0.5 + 0.3 + 1.875 + 2.5)


def test_unknown_model_costs_zero_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable.load(SHIPPED)
    with caplog.at_level(logging.WARNING, logger="harness.models.pricing"):
        assert table.cost("local-model", Usage(input_tokens=10, output_tokens=10)) == 0.0
        assert table.cost("local-model", Usage(input_tokens=10, output_tokens=10)) == 0.0
    warnings = [r for r in caplog.records if "local-model" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_bad_table_names_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("models:\n  m:\n    input: 1\n    outptu: 2\n")
    with pytest.raises(ValueError, match=r"models\.m"):
        PriceTable.load(path)
