import numpy as np

from harness.datasets.generate import generate_sets
from harness.datasets.groundtruth import exact_knn
from harness.scorer.evaluate import (
    caching_suspected,
    classify_distances,
    fresh_pools,
    identical_results,
    judge_pass,
    min_hidden_queries,
    repeat_speedup,
)
from tests.scorer.simulated import closed_loop


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


def test_fresh_pools_cover_the_queries():
    assert fresh_pools(10_000, 3, 0.1) == 833  # 7,501 shared + 833 fresh = a pass; 3 pools + shared = all
    assert fresh_pools(300, 1, 0.1) == 0 and fresh_pools(300, 3, 0.0) == 0
    for nq, passes in ((300, 2), (10_000, 5), (1000, 3)):
        size = fresh_pools(nq, passes, 0.1)
        assert passes * size < nq and abs(size / (nq - (passes - 1) * size) - 0.1) < 0.01


def test_min_hidden_queries_is_where_the_pools_reach_the_samples():
    assert min_hidden_queries(3, 0.1) == 240 and min_hidden_queries(2, 0.1) == 220
    assert min_hidden_queries(1, 0.1) is None and min_hidden_queries(3, 0.0) is None
    for passes in (2, 3, 5, 8):
        for fraction in (0.05, 0.1, 0.25, 0.45):
            n = min_hidden_queries(passes, fraction)
            assert fresh_pools(n, passes, fraction) >= 20 > fresh_pools(n - 1, passes, fraction)


def _run(seed, nq=300, passes=3, hit=1.0, concurrency=4, servers=1, slow_pass=None):
    """Latencies of a scoring's passes (the scorer's plan: shared queries plus a fresh pool per pass) for a
    server whose queries cost a gamma-distributed time, and ``hit`` times that for answers it remembers."""
    rng = np.random.default_rng(seed)
    base_cost = rng.gamma(3.0, 1 / 3.0, nq)
    size = fresh_pools(nq, passes, 0.1)
    perm = rng.permutation(nq)
    pools = [perm[p * size:(p + 1) * size] for p in range(passes)]
    shared = perm[passes * size:]
    seen: set[int] = set()
    lat = np.full((passes, nq), np.nan, dtype=np.float32)
    for p in range(passes):
        order = rng.permutation(np.concatenate([shared, pools[p]]))
        scale = 2.5 if p == slow_pass else 1.0
        jitter = rng.lognormal(0, 0.3, nq)  # the machine's noise, per request

        def cost(q, scale=scale, jitter=jitter):
            return scale * jitter[q] * base_cost[q] * (hit if q in seen else 1.0)

        for q, v in closed_loop(order, cost, concurrency, servers).items():
            if q >= 0:  # -1 is the pass's end
                lat[p, q] = v
        seen.update(order.tolist())
    return lat, pools, shared


def _flag(run, concurrency=4, servers=1):
    return repeat_speedup(*run, concurrency=concurrency, server_cpus=servers)


def test_repeat_speedup_catches_caches_that_pay_and_spares_honest_servers():
    # An answer cache that makes a remembered query 20x cheaper, or only 2x (worth ~1.8x QPS,
    # which the pass-QPS check above lets through), on one core with 4 connections.
    (msg,) = _flag(_run(1, hit=0.05))
    assert "cached across passes" in msg and "faster than new ones" in msg
    assert _flag(_run(2, nq=2000, hit=0.5))
    # ... and on 4 cores (no queueing).
    assert _flag(_run(3, nq=2000, hit=0.5, servers=4), servers=4)
    # Honest servers: no alarm over many draws, small and large sets, even with a pass slowed 2.5x
    # by load on the machine.
    assert not any(_flag(_run(s)) for s in range(100))
    assert not any(_flag(_run(s, nq=2000, slow_pass=1)) for s in range(100, 110))
    # A modest gain (1.1x) is below the bar; too few fresh answers give no verdict.
    assert not _flag(_run(4, nq=2000, hit=0.9))
    assert _flag(_run(5, nq=100, hit=0.05)) is None
