"""``staircase datasets generate`` says when a hidden set is too small for the scorer's checks."""

import json

from typer.testing import CliRunner

from harness.cli import app
from harness.scorer.evaluate import small_hidden_set


def _generate(tmp_path, queries: int):
    return CliRunner().invoke(app, ["datasets", "generate", f"q{queries}", "--n", "500", "--queries", str(queries),
                                    "--dev-queries", "5", "--dim", "4", "--data-dir", str(tmp_path), "--json"])


def test_a_set_below_the_caching_checks_size_is_warned_about(tmp_path):
    res = _generate(tmp_path, 200)
    assert res.exit_code == 0, res.output
    (warning,) = json.loads(res.stdout)["warnings"]
    assert "fewer than the 240 the scorer's caching check needs" in warning and "first pass only" in warning
    assert "faster than 168 QPS gets passes under 1 s" in warning
    assert "warning: 200 hidden queries" in res.stderr


def test_a_set_at_the_size_is_not(tmp_path):
    res = _generate(tmp_path, 240)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["warnings"] == [] and "warning" not in res.stderr


def test_the_size_follows_the_settings():
    assert small_hidden_set(219, 2, 0.1) and not small_hidden_set(220, 2, 0.1)
    assert small_hidden_set(100, 1, 0.1) is None  # one pass: nothing repeated, nothing to check
