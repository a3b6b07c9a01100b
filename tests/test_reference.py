"""The reference stages: the tuning variants of ``reference/variants.yaml`` are their base with other
knob values and nothing else; each stage builds, scores through the real scorer with the recall its
README row claims, and (the base stages) keeps the API contract on awkward inputs.

Claims live in one place, the table of ``reference/README.md``: its "Recall band" column is parsed
here. Builds use a quick profile (opt-level 1, incremental, ``debug = true`` kept for the rules) in
the shared target dir ``$STAIRCASE_CARGO_TARGET`` or ``~/.cache/staircase/cargo-target-tests``:
recall does not depend on the optimisation level, and a stage then rebuilds in ~10 s instead of ~40.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from harness.config import ScorerConfig
from harness.datasets.sources import generate_dataset
from harness.datasets.store import Dataset, DatasetStore
from harness.paths import REFERENCE, SKELETON
from harness.reference import ReferenceError, Stage, materialize, reference_stages, stage_files
from harness.scorer.record import Score, Status
from harness.scorer.runner import BuildOutcome, LocalRunner
from harness.scorer.scorer import BenchmarkScorer

FLOOR = 0.95

needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")

TEST_CARGO = """[package]
name = "vector-db-skeleton"
version = "0.1.0"
edition = "2021"

[dependencies]
axum = "0.7"
tokio = { version = "1", features = ["full"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"

[profile.release]
opt-level = 1
codegen-units = 16
incremental = true
debug = true
"""


def readme_claims() -> dict[str, tuple[float, float]]:
    """Stage (folder or variant) -> (low, high) recall band on the test set, from reference/README.md's table."""
    claims: dict[str, tuple[float, float]] = {}
    for line in (REFERENCE / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*`(stage[^`/]+)/?`\s*\|.*?\|\s*([01]\.\d+)\s*[-–]\s*([01]\.\d+)\s*\|", line)
        if m:
            claims[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return claims


CLAIMS = readme_claims()
TRAJECTORY = reference_stages()
STAGES = [s.name for s in TRAJECTORY]
BASE_STAGES = [s.name for s in TRAJECTORY if not s.is_variant]
VARIANTS = [s for s in TRAJECTORY if s.is_variant]


def test_trajectory_interleaves_stages_and_variants() -> None:
    assert STAGES == ["stage01-brute-force", "stage02-flat-simd", "stage03-ivf", "stage03b-ivf-nprobe8",
                      "stage03c-ivf-nprobe28", "stage04-u8-rerank", "stage05-two-level", "stage05b-prune-1.4",
                      "stage05c-lists3-prune-1.8", "stage06-fused-scan"]
    folders = sorted(p.name for p in REFERENCE.iterdir() if p.is_dir() and p.name.startswith("stage"))
    assert folders == BASE_STAGES, "a folder per base stage; variants are data (variants.yaml)"


def test_every_stage_has_a_claim() -> None:
    assert STAGES and set(CLAIMS) == set(STAGES), f"README rows {sorted(CLAIMS)} vs stages {STAGES}"
    for lo, hi in CLAIMS.values():
        assert lo <= hi and not lo < FLOOR <= hi, "a band must say valid or invalid, not straddle the floor"


def test_stages_hold_only_editable_files() -> None:
    for stage in TRAJECTORY:
        for rel in stage_files(stage):
            assert rel == "Cargo.toml" or (rel.startswith("src/") and rel.endswith(".rs")), f"{stage.name}/{rel}"
            assert rel not in ("src/main.rs", "src/api.rs"), f"{stage.name} overrides a read-only file"


# A knob's new value must still be a literal of the const's type, or the variant would not compile.
LITERALS = {"usize": r"\d+", "u32": r"\d+", "u64": r"\d+", "f32": r"\d+\.\d+", "f64": r"\d+\.\d+"}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_variant_is_its_base_with_other_knobs(variant: Stage) -> None:
    """A tuning variant differs from its base stage only in its knob lines: same code, same files,
    each const keeping its name and type with a literal of that type; nothing else moves."""
    assert variant.base is not None
    ours, theirs = stage_files(variant), stage_files(variant.base)
    assert set(ours) == set(theirs)
    changed: dict[str, str] = {}
    for rel in sorted(ours):
        a, b = theirs[rel].split("\n"), ours[rel].split("\n")
        assert len(a) == len(b), f"{rel}: lines added or removed"
        for x, y in zip(a, b, strict=True):
            if x != y:
                changed[f"{rel}: {y}"] = x
    expected = set()
    for name, value in variant.consts.items():
        m = re.fullmatch(rf"const {name}: (\w+) = (.+);", next(line for line in ours["src/db.rs"].split("\n")
                                                               if line.startswith(f"const {name}:")))
        assert m and m[2] == value, (name, value)
        assert re.fullmatch(LITERALS[m[1]], value), f"{name}: {value!r} is no {m[1]} literal"
        expected.add(f"src/db.rs: {m[0]}")
    expected |= {f"{k.file}: {k.new}" for k in variant.lines}
    assert set(changed) == expected, f"{variant.name}: changed lines {sorted(changed)}, knobs {sorted(expected)}"
    assert variant.message, "a variant says what it submits"


TINY_DB = "//! Tiny.\nconst A: usize = 1;\nconst B: f32 = 2.0;\n"


def tiny_reference(root: Path, variants: str, db: str = TINY_DB) -> Path:
    """Two base stages with the same number and ``variants``: a reference folder in miniature."""
    for name in ("stage01-one", "stage01-two"):
        (root / name / "src").mkdir(parents=True)
        (root / name / "src" / "db.rs").write_text(db)
    (root / "variants.yaml").write_text(variants)
    return root


@pytest.mark.parametrize(("db", "knob", "hits"), [
    ("//! Tiny.\nconst B: f32 = 2.0;\n", "const A", 0),
    ("//! Tiny.\nconst A: usize = 1;\n    const A: usize = 1;\nconst B: f32 = 2.0;\n", "const A", 2),
])
def test_a_knob_matching_other_than_once_fails_naming_it(tmp_path: Path, db: str, knob: str, hits: int) -> None:
    root = tiny_reference(tmp_path, "stage01b-tuned:\n  base: stage01-one\n  message: tuned\n  consts: {A: 3}\n", db)
    with pytest.raises(ReferenceError, match=f"variant stage01b-tuned: knob {knob} matches {hits} lines"):
        materialize("stage01b-tuned", tmp_path / "out", root)


def test_line_knobs_and_bad_variants(tmp_path: Path) -> None:
    root = tiny_reference(tmp_path, "stage01b-tuned:\n  base: stage01-one\n  message: tuned\n  replace:\n"
                                    "    - {file: src/db.rs, old: 'const B: f32 = 2.0;', new: 'const B: f32 = 2.5;'}\n")
    out = materialize("stage01b-tuned", tmp_path / "out", root)
    assert (out / "src" / "db.rs").read_text() == "//! Tiny.\nconst A: usize = 1;\nconst B: f32 = 2.5;\n"
    assert [s.name for s in reference_stages(root)] == ["stage01-one", "stage01-two", "stage01b-tuned"]
    assert reference_stages(root)[0].message == "Tiny."
    for bad, says in [("stage02b-x:\n  base: stage01-one\n  message: m\n  consts: {A: 3}\n", "is named stage01"),
                      ("stage01b-x:\n  base: stage09-none\n  message: m\n  consts: {A: 3}\n", "not a stage folder"),
                      ("stage01b-x:\n  base: stage01-one\n  message: m\n  consts: {B: 2.5}\n", "as a string"),
                      ("stage01b-x:\n  base: stage01-one\n  message: m\n  consts: {A: 1}\n", "changes nothing"),
                      ("stage01b-x:\n  base: stage01-one\n  consts: {A: 3}\n", "a message")]:
        (root / "variants.yaml").write_text(bad)
        with pytest.raises(ReferenceError, match=says):
            materialize("stage01b-x", tmp_path / "bad", root)
    (root / "stage01c-folder").mkdir()
    with pytest.raises(ReferenceError, match="variants live in variants.yaml"):
        reference_stages(root)


# -- building and scoring ------------------------------------------------------------------------


def cargo_target_dir() -> Path:
    default = Path.home() / ".cache" / "staircase" / "cargo-target-tests"
    return Path(os.environ.get("STAIRCASE_CARGO_TARGET", default))


def crate(stage: str, dest: Path) -> Path:
    """The skeleton with ``stage`` laid over it and the quick test profile, as a complete crate."""
    shutil.copytree(SKELETON, dest, ignore=shutil.ignore_patterns("target", "API.md"), copy_function=shutil.copy)
    # Fresh mtimes (shutil.copy): cargo decides staleness by mtime, and the shared target dir may
    # hold a newer build of another stage under the same crate name.
    materialize(stage, dest)
    (dest / "Cargo.toml").write_text(TEST_CARGO)
    return dest


class KeepingRunner(LocalRunner):
    """The local runner, keeping each built server binary for the contract tests below."""

    def __init__(self, keep: Path) -> None:
        super().__init__(memory_limit="4g")
        self.keep = keep
        self.binaries: dict[str, Path] = {}
        self.current = ""

    def build(self, src: Path, timeout_s: float) -> BuildOutcome:
        out = super().build(src, timeout_s)
        if out.ok and out.binary is not None:
            kept = self.keep / self.current
            shutil.copy2(out.binary, kept)
            self.binaries[self.current] = kept
        return out


@pytest.fixture(scope="module")
def test_set(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """20,000 SIFT-like vectors, 500 hidden queries: large enough that IVF parameters matter."""
    store = DatasetStore(tmp_path_factory.mktemp("data"))
    ds, _ = generate_dataset(store, "reference-test", n=20_000, queries=500, dev_queries=10, seed=7)
    return ds


Scoring = tuple[BenchmarkScorer, KeepingRunner]


@pytest.fixture(scope="module")
def scoring(test_set: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scoring]:
    tmp = tmp_path_factory.mktemp("scoring")
    cfg = ScorerConfig(paired=False, passes=1, warmup_queries=20, pass_time_limit_s=30, request_timeout_s=10,
                       warmup_timeout_s=60, start_timeout_s=15, load_timeout_s=120, benchmark_timeout_s=180,
                       memory_limit="4g")
    runner = KeepingRunner(tmp / "bin")
    runner.keep.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        # The local runner builds in $STAIRCASE_CARGO_TARGET/submissions.
        mp.setenv("STAIRCASE_CARGO_TARGET", str(cargo_target_dir()))
        yield BenchmarkScorer(cfg, test_set, runner), runner


@pytest.fixture(scope="module")
def scores() -> dict[str, Score]:
    """Every stage scored at most once per module, by whichever test needs it first."""
    return {}


def score_stage(stage: str, scoring: Scoring, scores: dict[str, Score], tmp: Path) -> Score:
    if stage not in scores:
        scorer, runner = scoring
        runner.current = stage
        scores[stage] = scorer.score(crate(stage, tmp / stage), use_cache=False)
    return scores[stage]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.rust
@pytest.mark.slow
@needs_cargo
def test_stage_recall_is_as_claimed(stage: str, scoring: Scoring, scores: dict[str, Score],
                                    tmp_path: Path) -> None:
    s = score_stage(stage, scoring, scores, tmp_path)
    lo, hi = CLAIMS[stage]
    expected = Status.VALID if lo >= FLOOR else Status.INVALID
    assert s.status == expected, f"{s.status}: {s.reason}\n{s.server_log_tail[-2000:]}"
    assert s.recall is not None and lo <= s.recall <= hi, f"{stage}: recall {s.recall} outside the claimed {lo}-{hi}"
    assert s.distance_kind == "euclidean"


# -- the API contract on awkward inputs (base stages) ----------------------------------------------


class Client:
    """One keep-alive HTTP connection, JSON in and out."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: object) -> object:
        self.conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        raw = resp.read()
        assert resp.status == 200, (path, resp.status, raw[:200])
        return json.loads(raw)

    def search(self, q: np.ndarray, k: int) -> list[tuple[int, float]]:
        body = self.post("/search", {"vector": q.tolist(), "top_k": k})
        return [(r["id"], r["distance"]) for r in body["results"]]  # type: ignore[index]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(binary: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(binary)], env={**os.environ, "PORT": str(port)}, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}: {log.read_text()[-2000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the server did not accept TCP within 30 s")


@pytest.mark.parametrize("stage", [s for s in BASE_STAGES if s != "stage01-brute-force"])
@pytest.mark.rust
@pytest.mark.slow
@needs_cargo
def test_stage_keeps_the_contract_on_generic_data(stage: str, scoring: Scoring,
                                                  scores: dict[str, Score], tmp_path: Path) -> None:
    """Float data of an odd dimension (no SIMD-width multiple, negative, non-integer: the lossy u8
    path), sparse ids, empty store, an upsert, inserts after the index is built, a top_k above n,
    a query of the wrong dimension, concurrent first searches racing the lazy build."""
    score_stage(stage, scoring, scores, tmp_path)
    _, runner = scoring
    proc, port = serve(runner.binaries[stage], tmp_path / "server.log")
    try:
        check_contract(port)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def check_contract(port: int) -> None:
    rng = np.random.default_rng(3)
    dim, n = 100, 3000
    # Clustered Gaussian data, offset so that components are negative and positive.
    centres = rng.normal(0, 4, (30, dim))
    base = (centres[rng.integers(0, 30, n)] + rng.normal(0, 1, (n, dim)) - 1.5).astype(np.float32)
    ids = rng.choice(10**12, size=n + 3, replace=False).astype(np.int64) + 2**33
    client = Client(port)

    assert client.search(base[0], 10) == []  # empty store
    for lo in range(0, n, 1000):
        batch = [{"id": int(i), "vector": v.tolist()} for i, v in zip(ids[lo:lo + 1000], base[lo:lo + 1000],
                                                                       strict=True)]
        assert client.post("/bulk_insert", {"vectors": batch}) == {"status": "ok", "inserted": len(batch)}

    # The first searches (several at once) build the index lazily; all must agree.
    queries = (base[rng.integers(0, n, 40)] + rng.normal(0, 0.5, (40, dim))).astype(np.float32)

    def first(q: np.ndarray) -> list[tuple[int, float]]:
        return Client(port).search(q, 10)

    with ThreadPoolExecutor(4) as pool:
        racing = list(pool.map(first, queries[:8]))
    assert racing == [client.search(q, 10) for q in queries[:8]]

    # Recall and exact distances against numpy.
    stored = {int(i): v.astype(np.float64) for i, v in zip(ids[:n], base, strict=True)}

    def check(q: np.ndarray, got: list[tuple[int, float]], k: int) -> float:
        assert len(got) == min(k, len(stored)) and len({i for i, _ in got}) == len(got)
        dists = [d for _, d in got]
        assert dists == sorted(dists)
        for i, d in got:
            assert i in stored
            assert d == pytest.approx(np.linalg.norm(stored[i] - q), rel=1e-4, abs=1e-3)
        keys = np.array(list(stored))
        d2 = ((np.stack([stored[int(i)] for i in keys]) - q.astype(np.float64)) ** 2).sum(axis=1)
        truth = set(keys[np.argsort(d2, kind="stable")[:k]].tolist())
        return len(truth & {i for i, _ in got}) / k

    recall = np.mean([check(q, client.search(q, 10), 10) for q in queries])
    assert recall >= 0.9, f"recall {recall:.3f} on clustered float data"

    # Inserts after the build are found; an upsert replaces the old vector.
    fresh = rng.normal(0, 4, (3, dim)).astype(np.float32) + 40
    for i, v in zip(ids[n:], fresh, strict=True):
        assert client.post("/insert", {"id": int(i), "vector": v.tolist()}) == {"status": "ok"}
        stored[int(i)] = v.astype(np.float64)
    for i, v in zip(ids[n:], fresh, strict=True):
        got = client.search(v, 5)
        assert got[0] == (int(i), 0.0)
        check(v, got, 5)
    moved = fresh[0] + 1
    client.post("/insert", {"id": int(ids[0]), "vector": moved.tolist()})
    stored[int(ids[0])] = moved.astype(np.float64)
    got = client.search(moved, 10)
    assert got[0][0] == int(ids[0]) and got[0][1] == pytest.approx(0.0, abs=1e-3)
    check(moved, got, 10)

    # top_k above the count returns everything; a wrong dimension returns nothing, without crashing.
    everything = client.search(queries[0], n + 100)
    check(queries[0], everything, n + 100)
    assert client.search(queries[0][:7], 10) == []
    assert len(client.search(queries[1], 10)) == 10
