"""Deterministic SIFT-like vector sets.

SIFT descriptors are 128 non-negative integer components (0..255), skewed (many small values, a few
large), strongly clustered, with an intrinsic dimension far below 128. Those properties are what
make IVF and graph indexes behave on SIFT as they do, so the generator reproduces them: points are
drawn around cluster centres with gamma-distributed, sparse-ish components, plus low-rank
correlated noise, then rounded and clipped to 0..255. Everything comes from one seed; the base
set, the hidden queries and the dev queries are separate draws of the same distribution, and are
made in fixed-size chunks so that the output does not depend on memory settings.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 65536


class SiftLikeGenerator:
    """A SIFT-like distribution fixed by ``seed`` and ``dim``; draw independent sets from it."""

    def __init__(self, seed: int, dim: int = 128, clusters: int = 1024, latent_rank: int = 16) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.seed = seed
        self.dim = dim
        rng = np.random.default_rng([seed, 0])
        self.clusters = clusters
        # Centres: skewed, non-negative, with about a third of the components near zero.
        centres = rng.gamma(shape=0.6, scale=40.0, size=(clusters, dim))
        centres *= rng.random((clusters, dim)) > 0.3
        self.centres = centres.astype(np.float32)
        # Cluster popularity is uneven, as real descriptor clusters are.
        weights = rng.pareto(1.5, size=clusters) + 0.2
        self.weights = weights / weights.sum()
        # Correlated within-cluster spread: a shared low-rank basis, scaled per cluster.
        self.basis = (rng.standard_normal((latent_rank, dim)) / np.sqrt(latent_rank)).astype(np.float32)
        self.spread = rng.uniform(8.0, 20.0, size=clusters).astype(np.float32)

    def draw(self, n: int, stream: int) -> np.ndarray:
        """Draw ``n`` vectors (float32 with integer values 0..255) from stream ``stream``.

        Different streams are independent; the same (seed, stream, n) always gives the same array.
        """
        out = np.empty((n, self.dim), dtype=np.float32)
        for c, start in enumerate(range(0, n, _CHUNK)):
            m = min(_CHUNK, n - start)
            rng = np.random.default_rng([self.seed, stream, c])
            assign = rng.choice(self.clusters, size=m, p=self.weights)
            latent = rng.standard_normal((m, self.basis.shape[0]), dtype=np.float32)
            noise = latent @ self.basis * (self.spread[assign, None] * 2.0)
            noise += rng.standard_normal((m, self.dim), dtype=np.float32) * (self.spread[assign, None] * 0.5)
            x = self.centres[assign] + noise
            np.clip(np.rint(x), 0, 255, out=x)
            out[start : start + m] = x
        return out


STREAM_BASE, STREAM_QUERIES, STREAM_DEV = 1, 2, 3


def generate_sets(
    seed: int, n: int, queries: int, dev_queries: int, dim: int = 128
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The base set, the hidden queries and the dev queries of a generated dataset."""
    gen = SiftLikeGenerator(seed, dim)
    return gen.draw(n, STREAM_BASE), gen.draw(queries, STREAM_QUERIES), gen.draw(dev_queries, STREAM_DEV)
