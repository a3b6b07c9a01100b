"""The query plan of a scoring: which hidden queries each pass sends, and the warm-up."""

import numpy as np

from harness.scorer.plan import plan_queries
from tests.scorer.conftest import quick_scorer_config


def test_strict_plan_sends_every_query_with_fresh_pools(small_dataset):
    cfg = quick_scorer_config(passes=3, fresh_fraction=0.1, warmup_queries=20)
    plan = plan_queries(cfg, small_dataset)
    nq = small_dataset.manifest.n_queries
    assert plan.queries.shape == (nq, small_dataset.manifest.dim) and plan.orders.shape[0] == 3
    assert len(plan.fresh) == 3 and all(p.size > 0 for p in plan.fresh)
    sent = [set(o.tolist()) for o in plan.orders]
    assert set().union(*sent) == set(range(nq))  # every hidden query is sent in some pass
    for p, pool in enumerate(plan.fresh):
        # Pass p sends the shared queries and its own pool, nothing else; pools never overlap.
        assert sent[p] == set(plan.shared.tolist()) | set(pool.tolist())
        assert not set(pool.tolist()) & set(plan.shared.tolist())
        assert all(not set(pool.tolist()) & set(q.tolist()) for q in plan.fresh[p + 1:])
    # The warm-up is never a hidden query, and the plan is the same every time.
    assert plan.warmup.dtype == np.float32 and plan.warmup.shape == (20, small_dataset.manifest.dim)
    again = plan_queries(cfg, small_dataset)
    assert np.array_equal(again.orders, plan.orders) and np.array_equal(again.warmup, plan.warmup)


def test_kcores_plan_is_one_pass_shuffled_with_the_seed(small_dataset):
    cfg = quick_scorer_config(protocol="kcores", passes=1, max_queries=100, warmup_queries=10)
    plan = plan_queries(cfg, small_dataset)
    assert plan.queries.shape[0] == 100 and plan.fresh == [] and plan.shared.size == 0
    assert np.array_equal(plan.orders, np.random.default_rng(42).permutation(100)[None, :])
    assert np.array_equal(plan.warmup, plan.queries[:10])
