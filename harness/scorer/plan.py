"""Which hidden queries a scoring sends, in which order per pass, and what it warms up with."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.config import ScorerConfig
from harness.datasets.store import Dataset
from harness.scorer.evaluate import fresh_pools


@dataclass
class QueryPlan:
    """The queries of one scoring. ``orders[p]`` lists the indexes into ``queries`` that pass p
    sends, in its order. Under the strict protocol, ``fresh[p]`` are the queries pass p sends for
    the first time and ``shared`` those every pass sends (what ``repeat_speedup`` compares);
    under ``kcores`` there are no fresh pools."""

    queries: np.ndarray
    orders: np.ndarray
    warmup: np.ndarray
    fresh: list[np.ndarray] = field(default_factory=list)
    shared: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def plan_queries(cfg: ScorerConfig, dataset: Dataset) -> QueryPlan:
    """The plan for ``dataset`` under ``cfg``: deterministic from ``cfg.seed``."""
    queries = np.asarray(dataset.queries("test"))
    if cfg.max_queries:
        queries = queries[: cfg.max_queries]
    nq = queries.shape[0]
    if cfg.protocol == "kcores":
        # One pass over the queries shuffled with seed 42; the warm-up is 100 of the queries.
        orders = np.random.default_rng(cfg.seed).permutation(nq)[None, :]
        warmup = queries[: max(1, cfg.warmup_queries)]
        return QueryPlan(queries, orders, warmup.astype(np.float32))
    # A fresh order per pass. Most queries ("shared") are sent in every pass; each pass also sends
    # its own pool of queries no pass sent before, so that within a later pass the latency of
    # remembered and of new queries can be compared (a cache of answers shows). Every hidden query
    # is sent in some pass. The warm-up uses vectors near the base, never a hidden query.
    size = fresh_pools(nq, cfg.passes, cfg.fresh_fraction)
    perm = np.random.default_rng([cfg.seed, 7]).permutation(nq)
    pools = [perm[p * size:(p + 1) * size] for p in range(cfg.passes)]
    shared = perm[cfg.passes * size:]
    orders = np.stack([np.random.default_rng([cfg.seed, p]).permutation(np.concatenate([shared, pools[p]]))
                       for p in range(cfg.passes)])
    rng = np.random.default_rng([cfg.seed, 1_000_003])
    base = dataset.base()
    pick = rng.choice(base.shape[0], size=max(1, cfg.warmup_queries), replace=base.shape[0] < 100)
    warmup = np.clip(np.asarray(base[np.sort(pick)]) + rng.normal(0, 4, (pick.size, base.shape[1])), 0, None)
    return QueryPlan(queries, orders, warmup.astype(np.float32), fresh=pools, shared=shared)
