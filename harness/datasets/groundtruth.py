"""Exact k-nearest-neighbour ground truth under L2, computed in blocks.

Candidates come from a float32 BLAS expansion (``|q|^2 - 2 q.b + |b|^2``), which is fast but can
misorder near-ties; each query keeps ``k + margin`` candidates, and their distances are then
recomputed exactly in float64 and sorted by (distance, id). Memory is bounded by the block sizes,
so 1M x 10K runs in a few GB.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Progress = Callable[[int, int], None]


def exact_knn(
    base: np.ndarray,
    queries: np.ndarray,
    k: int = 100,
    *,
    query_block: int = 1024,
    base_block: int = 131072,
    margin: int = 28,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(ids int32 (q, k), distances float32 (q, k))``, Euclidean, nearest first.

    Ties are broken by the smaller id, so the result is deterministic.
    """
    n, dim = base.shape
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries of shape {queries.shape} do not match base dimension {dim}")
    k = min(k, n)
    keep = min(k + margin, n)
    nq = queries.shape[0]
    ids = np.empty((nq, k), dtype=np.int32)
    dists = np.empty((nq, k), dtype=np.float32)
    base_norms = _squared_norms(base, base_block)

    for q0 in range(0, nq, query_block):
        q = np.asarray(queries[q0 : q0 + query_block], dtype=np.float32)
        q_norms = np.einsum("ij,ij->i", q, q, dtype=np.float32)
        best_d = np.full((q.shape[0], 0), np.inf, dtype=np.float32)
        best_i = np.zeros((q.shape[0], 0), dtype=np.int64)
        for b0 in range(0, n, base_block):
            b = np.asarray(base[b0 : b0 + base_block], dtype=np.float32)
            d = q_norms[:, None] - 2.0 * (q @ b.T) + base_norms[None, b0 : b0 + b.shape[0]]
            cand_d = np.concatenate([best_d, d], axis=1)
            cand_i = np.concatenate(
                [best_i, np.broadcast_to(np.arange(b0, b0 + b.shape[0]), d.shape)], axis=1
            )
            if cand_d.shape[1] > keep:
                part = np.argpartition(cand_d, keep - 1, axis=1)[:, :keep]
                cand_d = np.take_along_axis(cand_d, part, axis=1)
                cand_i = np.take_along_axis(cand_i, part, axis=1)
            best_d, best_i = cand_d, cand_i
        exact = _exact_squared(base, q, best_i)
        order = np.lexsort((best_i, exact), axis=1)[:, :k]
        ids[q0 : q0 + q.shape[0]] = np.take_along_axis(best_i, order, axis=1)
        dists[q0 : q0 + q.shape[0]] = np.sqrt(np.take_along_axis(exact, order, axis=1))
        if progress:
            progress(min(q0 + query_block, nq), nq)
    return ids, dists


def squared_l2(base: np.ndarray, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Exact float64 squared L2 distances from one query to the base rows ``ids``."""
    diff = np.asarray(base[ids], dtype=np.float64) - np.asarray(query, dtype=np.float64)
    return np.einsum("ij,ij->i", diff, diff)


def _exact_squared(base: np.ndarray, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    out = np.empty(cand.shape, dtype=np.float64)
    for i in range(q.shape[0]):
        out[i] = squared_l2(base, q[i], cand[i])
    return out


def _squared_norms(base: np.ndarray, block: int) -> np.ndarray:
    norms = np.empty(base.shape[0], dtype=np.float32)
    for b0 in range(0, base.shape[0], block):
        b = np.asarray(base[b0 : b0 + block], dtype=np.float32)
        norms[b0 : b0 + b.shape[0]] = np.einsum("ij,ij->i", b, b, dtype=np.float32)
    return norms
