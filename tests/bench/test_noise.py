"""The noise bench's step: a slowed copy whose busy wait is sized to lose a set share of QPS."""

from pathlib import Path

import pytest

from harness.bench.noise import max_min, slowed_copy, spin_for

REFERENCE = Path(__file__).resolve().parents[2] / "reference"


@pytest.mark.parametrize("slowdown,qps", [(0.10, 10_000.0), (0.10, 1_500.0), (0.25, 4_000.0)])
def test_spin_makes_a_one_cpu_server_lose_the_share(slowdown: float, qps: float) -> None:
    e = spin_for(slowdown, qps) / 1e6
    # A server whose one CPU spends 1/qps per query, plus the wait, serves (1 - slowdown) qps.
    assert 1 / (1 / qps + e) == pytest.approx((1 - slowdown) * qps, rel=1e-9)


@pytest.mark.parametrize("slowdown,qps", [(0.0, 1000.0), (1.0, 1000.0), (0.1, 0.0)])
def test_spin_refuses_what_cannot_be_sized(slowdown: float, qps: float) -> None:
    with pytest.raises(ValueError):
        spin_for(slowdown, qps)


def test_slowed_copy_waits_a_fixed_time_after_the_original_search(tmp_path: Path) -> None:
    crate = slowed_copy(REFERENCE / "stage05-two-level", tmp_path / "slowed", 12.5)
    db = (crate / "src" / "db.rs").read_text()
    assert db.count("fn search_unslowed(&self,") == 1
    assert db.count("pub fn search(&self, vector: &[f32], top_k: u32)") == 1
    assert "Duration::from_nanos(12500)" in db
    # The original's body is kept whole: the renamed function still answers.
    orig = (REFERENCE / "stage05-two-level" / "src" / "db.rs").read_text()
    body = orig[orig.index("pub fn search(&self, vector: &[f32], top_k: u32)"):]
    assert body.split("\n", 1)[1][:400] in db


def test_slowed_copy_needs_the_contract_signature(tmp_path: Path) -> None:
    src = tmp_path / "odd"
    (src / "src").mkdir(parents=True)
    (src / "src" / "db.rs").write_text("pub struct VectorDB;\n")
    with pytest.raises(ValueError, match="pub fn search"):
        slowed_copy(src, tmp_path / "slowed", 5.0)


def test_max_min() -> None:
    assert max_min([100.0, 125.0, 110.0]) == 1.25
    assert max_min([100.0]) is None
