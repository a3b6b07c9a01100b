import numpy as np

from harness.datasets.generate import generate_sets
from harness.datasets.groundtruth import exact_knn
from harness.scorer.evaluate import caching_suspected, classify_distances, identical_results, judge_pass


def _setup(k=10):
    base, queries, _ = generate_sets(3, 2000, 40, 1, dim=16)
    gt_ids, gt_d = exact_knn(base, queries, 100)
    ids = gt_ids[:, :k].astype(np.int64)
    return base, queries, gt_ids, gt_d, ids, gt_d[:, :k].copy()


def _judge(ids, dists, base, queries, gt_ids, gt_d, protocol="strict"):
    return judge_pass(ids, dists, base, queries, gt_ids, gt_d, k=10, protocol=protocol, rtol=1e-3)


def test_exact_answers_have_recall_one_in_both_protocols():
    base, q, gt_ids, gt_d, ids, d = _setup()
    for protocol in ("strict", "kcores"):
        j = _judge(ids, d, base, q, gt_ids, gt_d, protocol)
        assert j.recall == 1.0 and not j.problems and not j.cheats and j.distance_kind == "euclidean"


def test_squared_distances_are_accepted():
    base, q, gt_ids, gt_d, ids, d = _setup()
    j = _judge(ids, d.astype(np.float64) ** 2, base, q, gt_ids, gt_d)
    assert j.distance_kind == "squared" and not j.problems


def test_ties_count_in_strict_but_not_in_kcores():
    base = np.zeros((30, 4), dtype=np.float32)
    base[:, 0] = np.repeat(np.arange(3), 10)  # ten vectors at each of three distances
    queries = np.zeros((1, 4), dtype=np.float32)
    gt_ids, gt_d = exact_knn(base, queries, 30)
    base = np.vstack([base, np.zeros((1, 4), np.float32)])  # a twin of the nearest group, id 30
    ids = np.array([[30] + list(range(1, 10))], dtype=np.int64)  # a tie swapped in for id 0
    d = np.zeros((1, 10), dtype=np.float32)
    strict = _judge(ids, d, base, queries, gt_ids, gt_d, "strict")
    kcores = _judge(ids, d, base, queries, gt_ids, gt_d, "kcores")
    assert strict.recall == 1.0 and kcores.recall == 0.9


def test_wrong_distances_are_a_problem():
    base, q, gt_ids, gt_d, ids, d = _setup()
    j = _judge(ids, d * 2 + 1, base, q, gt_ids, gt_d)
    assert j.problems and "do not match" in j.problems[0]


def test_partial_recall_and_unanswered_queries():
    base, q, gt_ids, gt_d, ids, d = _setup()
    ids = ids.copy()
    ids[:, 5:] = gt_ids[:, 50:55]
    d[:, 5:] = gt_d[:, 50:55]
    ids[0] = -1
    d[0] = np.nan
    j = _judge(ids, d, base, q, gt_ids, gt_d)
    assert j.answered == 39 and abs(j.recall - 0.5) < 1e-9


def test_identical_results_and_caching_detectors():
    ids = np.tile(np.arange(10), (100, 1))
    assert identical_results(ids, np.ones(100, bool))
    shuffled = np.array([np.random.default_rng(i).permutation(10) for i in range(100)])
    assert identical_results(shuffled, np.ones(100, bool)), "the same ids in another order are the same answer"
    assert not identical_results(np.arange(1000).reshape(100, 10), np.ones(100, bool))
    assert caching_suspected([500.0, 5000.0, 5200.0])
    assert not caching_suspected([500.0, 520.0, 490.0])
    assert not caching_suspected([282.0, 537.0]), "2x between passes happens on a loaded machine"
    assert not caching_suspected([100.0, 5000.0, 250.0]), "every later pass must be faster"


def test_classify_distances_nothing_to_compare():
    assert classify_distances(np.full((2, 2), np.nan), np.full((2, 2), np.nan), 1e-3) == (None, 1.0)
