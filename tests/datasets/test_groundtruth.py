import numpy as np

from harness.datasets.generate import generate_sets
from harness.datasets.groundtruth import exact_knn


def _naive(base, queries, k):
    d = ((queries[:, None, :].astype(np.float64) - base[None, :, :].astype(np.float64)) ** 2).sum(-1)
    ids = np.broadcast_to(np.arange(base.shape[0]), d.shape)
    order = np.lexsort((ids, d), axis=1)[:, :k]
    return order, np.sqrt(np.take_along_axis(d, order, axis=1))


def test_matches_naive_brute_force_across_blocks():
    base, queries, _ = generate_sets(7, 3000, 40, 1)
    ids, dists = exact_knn(base, queries, 100, query_block=16, base_block=700)
    ref_ids, ref_d = _naive(base, queries, 100)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dists, ref_d, rtol=1e-6)
    assert np.all(np.diff(dists, axis=1) >= 0), "distances must be sorted nearest first"


def test_ties_broken_by_smaller_id():
    base = np.zeros((50, 4), dtype=np.float32)  # every vector ties
    base[10:] = 1.0
    ids, dists = exact_knn(base, np.zeros((1, 4), dtype=np.float32), 12)
    assert ids[0].tolist() == list(range(10)) + [10, 11]
    assert dists[0, :10].tolist() == [0.0] * 10


def test_k_larger_than_base():
    base, queries, _ = generate_sets(1, 30, 3, 1, dim=8)
    ids, _ = exact_knn(base, queries, 100)
    assert ids.shape == (3, 30)
    assert sorted(ids[0].tolist()) == list(range(30))


def test_generator_is_deterministic_and_sift_like():
    a, qa, da = generate_sets(5, 2000, 50, 20)
    b, qb, db = generate_sets(5, 2000, 50, 20)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(qa, qb)
    c, _, _ = generate_sets(6, 2000, 50, 20)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255
    assert np.array_equal(a, np.rint(a)), "components are integers"
    assert 0.2 < (a == 0).mean() < 0.6, "SIFT-like sparsity"
    # the three sets are disjoint draws
    assert not {tuple(r) for r in qa} & {tuple(r) for r in da}
