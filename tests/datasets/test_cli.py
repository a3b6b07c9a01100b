import json

from typer.testing import CliRunner

from harness.cli import app


def _run(*args):
    return CliRunner().invoke(app, list(args))


def test_generate_info_list_json(tmp_path):
    d = str(tmp_path)
    res = _run("datasets", "generate", "t1", "--n", "1500", "--queries", "20", "--dev-queries", "5",
               "--dim", "8", "--data-dir", d, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["reused"] is False and out["n_base"] == 1500
    again = json.loads(_run("datasets", "generate", "t1", "--n", "1500", "--queries", "20", "--dev-queries", "5",
                            "--dim", "8", "--data-dir", d, "--json").stdout)
    assert again["reused"] is True
    info = json.loads(_run("datasets", "info", "t1", "--data-dir", d, "--verify", "--json").stdout)
    assert info["verified"] is True and info["dim"] == 8 and info["files"]["base"]["bytes"] == 1500 * 36
    listing = json.loads(_run("datasets", "list", "--data-dir", d, "--json").stdout)
    assert [x["name"] for x in listing] == ["t1"]


def test_missing_dataset_is_a_clear_error(tmp_path):
    res = _run("datasets", "info", "absent", "--data-dir", str(tmp_path), "--json")
    assert res.exit_code == 2
    assert "dataset 'absent' not found" in res.output


def test_fetch_unknown_name(tmp_path):
    res = _run("datasets", "fetch", "glove", "--data-dir", str(tmp_path))
    assert res.exit_code == 2 and "only sift-1m" in res.output


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STAIRCASE_DATA", str(tmp_path / "env-data"))
    res = _run("datasets", "generate", "t2", "--n", "500", "--queries", "5", "--dev-queries", "5", "--dim", "4",
               "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["path"].startswith(str(tmp_path / "env-data"))
