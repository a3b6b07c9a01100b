import numpy as np
import pytest

from harness.datasets.formats import read_vecs
from harness.datasets.sources import generate_dataset
from harness.datasets.store import FILES, DatasetError, DatasetStore


def _gen(store, name="tiny", **kw):
    args = {"n": 2000, "queries": 30, "dev_queries": 10, "dim": 16, "seed": 1} | kw
    return generate_dataset(store, name, **args)


def test_generate_then_reuse(tmp_path):
    store = DatasetStore(tmp_path)
    ds, reused = _gen(store)
    assert not reused
    m = ds.manifest
    assert (m.n_base, m.n_queries, m.n_dev_queries, m.dim, m.gt_k) == (2000, 30, 10, 16, 100)
    assert set(m.files) == set(FILES)
    assert ds.verify() == []
    ids, dists = ds.groundtruth("test")
    assert ids.shape == (30, 100) and np.all(np.diff(dists, axis=1) >= 0)
    assert ds.groundtruth("dev")[0].shape == (10, 100)
    mtime = (ds.root / "base.fvecs").stat().st_mtime_ns
    ds2, reused2 = _gen(store)
    assert reused2 and (ds2.root / "base.fvecs").stat().st_mtime_ns == mtime
    assert store.names() == ["tiny"]


def test_other_parameters_under_same_name_is_an_error(tmp_path):
    store = DatasetStore(tmp_path)
    _gen(store)
    with pytest.raises(DatasetError, match="exists with other parameters"):
        _gen(store, seed=2)


def test_interrupted_build_reuses_complete_files(tmp_path):
    store = DatasetStore(tmp_path)
    ds, _ = _gen(store)
    base_mtime = (ds.root / "base.fvecs").stat().st_mtime_ns
    expected = read_vecs(ds.root / "groundtruth.ivecs").copy()
    # As if killed after the base and queries were written, before the ground truth was done:
    (ds.root / "manifest.json").unlink()
    (ds.root / "groundtruth.ivecs").unlink()
    (ds.root / ".groundtruth.ivecs.123.tmp").write_bytes(b"partial")
    with pytest.raises(DatasetError, match="unfinished build"):
        store.get("tiny")
    ds2, reused = _gen(store)
    assert not reused
    assert (ds2.root / "base.fvecs").stat().st_mtime_ns == base_mtime
    np.testing.assert_array_equal(read_vecs(ds2.root / "groundtruth.ivecs"), expected)


def test_missing_dataset_error_names_directory_and_fix(tmp_path):
    with pytest.raises(DatasetError) as e:
        DatasetStore(tmp_path).get("nope")
    assert "nope" in str(e.value) and str(tmp_path) in str(e.value) and "generate" in str(e.value)


def test_verify_detects_corruption(tmp_path):
    ds, _ = _gen(DatasetStore(tmp_path))
    p = ds.root / "queries.fvecs"
    raw = bytearray(p.read_bytes())
    raw[100] ^= 0xFF
    p.write_bytes(bytes(raw))
    assert any("queries" in problem for problem in ds.verify())


def test_dev_files_exclude_hidden_split(tmp_path):
    ds, _ = _gen(DatasetStore(tmp_path))
    names = set(ds.dev_files())
    assert "queries.fvecs" not in names and "groundtruth.ivecs" not in names
    assert {"base.fvecs", "dev_queries.fvecs", "dev_groundtruth.ivecs"} <= names


def test_bad_name(tmp_path):
    with pytest.raises(DatasetError, match="invalid dataset name"):
        DatasetStore(tmp_path).folder("../x")


def test_a_seed_reorders_the_dev_queries_with_their_ground_truth(tmp_path):

    ds, _ = generate_dataset(DatasetStore(tmp_path / "data"), "seeded", n=500, queries=10, dev_queries=40, dim=8,
                             seed=2)
    assert ds.dev_files_in_order(0, tmp_path / "none") == ds.dev_files()  # seed 0: the dataset's own files
    a = ds.dev_files_in_order(3, tmp_path / "a")
    b = ds.dev_files_in_order(3, tmp_path / "b")
    c = ds.dev_files_in_order(4, tmp_path / "c")
    q0, g0 = read_vecs(ds.path("dev_queries")), read_vecs(ds.path("dev_groundtruth"))
    qa, ga = read_vecs(a["dev_queries.fvecs"]), read_vecs(a["dev_groundtruth.ivecs"])
    assert a["base.fvecs"] == ds.path("base") and a["dev_queries.fvecs"].parent == tmp_path / "a"
    assert not np.array_equal(qa, q0) and np.array_equal(qa, read_vecs(b["dev_queries.fvecs"]))
    assert not np.array_equal(qa, read_vecs(c["dev_queries.fvecs"]))
    # the same queries, each still next to its own ground truth
    rows = {q.tobytes(): i for i, q in enumerate(q0)}
    for q, g in zip(qa, ga, strict=True):
        assert np.array_equal(g, g0[rows[q.tobytes()]])
