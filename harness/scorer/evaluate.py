"""Judging what a server answered: recall, distances, signs of cheating, and which passes' QPS the
scorer can vouch for.

Nothing here trusts the server: every distance is recomputed from the vectors, and recall under
the strict protocol counts a returned id when its true distance is within the 10th true neighbour's
(ties count, as in ann-benchmarks).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from harness.scorer.record import PassResult, QpsConfidence, QpsSource

# Slack for float rounding when comparing a returned neighbour with the 10th true distance.
TIE_EPS = 1e-6
# Passes shorter than this are too short for their QPS to mean anything (a 10 ms pass moves 10x
# with one hiccup of the machine).
MIN_TIMED_PASS_S = 1.0
# The fewest fresh and remembered answers per later pass from which repeat_speedup judges; with
# fewer its statistics cannot tell a cache from noise and it gives no verdict.
MIN_FRESH_ANSWERS = 20


@dataclass
class Judgement:
    recall: float | None
    answered: int
    distance_kind: str | None = None
    problems: list[str] = field(default_factory=list)  # -> bad_response
    cheats: list[str] = field(default_factory=list)  # -> cheat_suspected


def true_squared(base: np.ndarray, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Exact float64 squared distances of ``ids`` (q, k) to their queries; NaN where id < 0."""
    q, k = ids.shape
    out = np.full((q, k), np.nan)
    ok = (ids >= 0) & (ids < base.shape[0])
    rows, cols = np.nonzero(ok)
    for start in range(0, rows.size, 65536):
        r, c = rows[start : start + 65536], cols[start : start + 65536]
        diff = np.asarray(base[ids[r, c]], dtype=np.float64) - np.asarray(queries[r], dtype=np.float64)
        out[r, c] = np.einsum("ij,ij->i", diff, diff)
    return out


def recall_strict(true_sq: np.ndarray, kth_true_sq: np.ndarray, answered: np.ndarray, k: int) -> float:
    """Tie-aware recall@k over the answered queries."""
    if not answered.any():
        return 0.0
    thresh = kth_true_sq[:, None] * (1 + TIE_EPS) + TIE_EPS
    hits = np.nan_to_num(true_sq[:, :k] <= thresh, nan=0.0).sum(axis=1)
    return float(np.minimum(hits, k)[answered].sum() / (k * answered.sum()))


def recall_overlap(ids: np.ndarray, gt_ids: np.ndarray, answered: np.ndarray, k: int) -> float:
    """KCORES recall: mean overlap of the first k returned ids with the true top-k ids."""
    if not answered.any():
        return 0.0
    hits = [len(set(ids[i, :k].tolist()) & set(gt_ids[i, :k].tolist()) - {-1}) for i in np.flatnonzero(answered)]
    return float(sum(hits) / (k * len(hits)))


def classify_distances(returned: np.ndarray, true_sq: np.ndarray, rtol: float) -> tuple[str | None, float]:
    """Which convention the server's distances follow, and the fraction that fits it.

    Returns ``(kind, fit)`` where kind is "euclidean" or "squared" (None when nothing to compare).
    """
    mask = np.isfinite(returned) & np.isfinite(true_sq)
    if not mask.any():
        return None, 1.0
    r, t = returned[mask].astype(np.float64), true_sq[mask]
    euclid = np.abs(r - np.sqrt(t)) <= rtol * np.maximum(1.0, np.sqrt(t))
    squared = np.abs(r - t) <= rtol * np.maximum(1.0, t)
    if euclid.mean() >= squared.mean():
        return "euclidean", float(euclid.mean())
    return "squared", float(squared.mean())


def judge_pass(
    ids: np.ndarray,
    dists: np.ndarray,
    base: np.ndarray,
    queries: np.ndarray,
    gt_ids: np.ndarray,
    gt_dists: np.ndarray,
    *,
    k: int,
    protocol: str,
    rtol: float,
) -> Judgement:
    """Judge one pass's answers (``ids``/``dists`` of shape (q, k), -1/NaN where missing)."""
    answered = np.asarray((ids >= 0).any(axis=1), dtype=bool)
    j = Judgement(recall=None, answered=int(answered.sum()))
    if not answered.any():
        j.problems.append("no query was answered")
        return j
    true_sq = true_squared(base, queries, ids)
    kind, fit = classify_distances(dists, true_sq, rtol)
    j.distance_kind = kind
    if kind is not None and fit < 0.99:
        r, c = _first_mismatch(dists, true_sq, kind, rtol)
        shown = np.sqrt(true_sq[r, c]) if kind == "euclidean" else true_sq[r, c]
        j.problems.append(
            f"returned distances do not match the vectors ({(1 - fit):.1%} off): query {r} id {ids[r, c]} "
            f"returned {dists[r, c]:.6g}, the true {kind} distance is {shown:.6g}"
        )
    if protocol == "kcores":
        j.recall = recall_overlap(ids, gt_ids, answered, k)
    else:
        # The k-th true distance is recomputed exactly, not read back from float32 files.
        kth = true_squared(base, queries, gt_ids[:, k - 1 : k].astype(np.int64))[:, 0]
        j.recall = recall_strict(true_sq, kth, answered, k)
    j.cheats.extend(identical_results(ids, answered))
    return j


def identical_results(ids: np.ndarray, answered: np.ndarray, threshold: float = 0.5) -> list[str]:
    """Flag a server that returns the same ids whatever it is asked."""
    rows = [tuple(sorted(r)) for r in ids[answered].tolist()]
    if len(rows) < 20:
        return []
    top, count = Counter(rows).most_common(1)[0]
    share = count / len(rows)
    if share > threshold:
        return [f"{share:.0%} of queries got the same {len(top)} ids ({list(top)[:5]}...)"]
    return []


def caching_suspected(pass_qps: list[float], ratio: float = 3.0) -> list[str]:
    """Flag a server much faster on repeated queries than on first sight (a cache of answers).

    The first pass is the only one in which every hidden query is new (warm-up uses other
    vectors), so later passes that are all far faster than the first mean the answers were
    remembered. The bar is high (3x, every later pass) because a loaded machine alone can move
    QPS between passes by 2x; a real answer cache gains far more (24x in the test suite).
    """
    if len(pass_qps) < 2 or pass_qps[0] <= 0:
        return []
    later = min(pass_qps[1:])
    if later / pass_qps[0] > ratio:
        return [
            f"repeated queries were answered {later / pass_qps[0]:.1f}x faster than first-seen ones "
            f"({pass_qps[0]:.0f} -> {later:.0f} QPS): results cached across passes"
        ]
    return []


def fresh_pools(nq: int, passes: int, fraction: float) -> int:
    """Size of each pass's pool of fresh queries: pass p sends the shared queries (sent in every
    pass) plus its own pool (sent in that pass only), and pools are ``fraction`` of a pass."""
    if passes < 2 or fraction <= 0:
        return 0
    return int(fraction * nq / (1 + (passes - 1) * fraction))


def min_hidden_queries(passes: int, fraction: float, min_samples: int = MIN_FRESH_ANSWERS) -> int | None:
    """The fewest hidden queries whose fresh pools (see ``fresh_pools``) hold ``min_samples`` queries
    each: below it ``repeat_speedup`` cannot reach a verdict (240 at 3 passes and a fraction of 0.1).
    None when the plan has no fresh pools at all (one pass, or a fraction of 0)."""
    if passes < 2 or fraction <= 0:
        return None
    nq = max(1, int(min_samples * (1 + (passes - 1) * fraction) / fraction) - passes)
    while fresh_pools(nq, passes, fraction) < min_samples:  # the formula less float rounding, then exact
        nq += 1
    return nq


def small_hidden_set(nq: int, passes: int, fraction: float, min_pass_s: float = 1.0) -> str | None:
    """What a hidden set of ``nq`` queries is too small for under a strict scoring of ``passes``
    passes with fresh pools of ``fraction`` (None when the caching check can judge it)."""
    need = min_hidden_queries(passes, fraction)
    if need is None or nq >= need:
        return None
    per_pass = nq - (passes - 1) * fresh_pools(nq, passes, fraction)
    return (f"{nq:,} hidden queries are fewer than the {need:,} the scorer's caching check needs ("
            f"{MIN_FRESH_ANSWERS} fresh queries per pass at {passes} passes, {fraction:.0%} fresh): scores on this "
            f"set take their QPS from the first pass only, and a submission faster than "
            f"{per_pass / min_pass_s:,.0f} QPS gets passes under {min_pass_s:g} s, a low-confidence QPS")


def repeat_speedup(latency_ms: np.ndarray, fresh: list[np.ndarray], repeated: np.ndarray, *, concurrency: int,
                   server_cpus: int, limit: float = 1.25, min_samples: int = MIN_FRESH_ANSWERS,
                   z_min: float = 3.0) -> list[str] | None:
    """Flag a server that answers queries it has seen before faster than queries it has not.

    Within one later pass, the repeated queries (sent in every earlier pass) and that pass's
    fresh ones (never sent before) share the machine, the moment and the connections: load moves
    both alike, so only a memory of answers makes them differ. From the latencies we estimate
    how much QPS the difference bought: with C requests in flight on P = min(C, server CPUs)
    CPUs, a request waits behind about (C - P) / P others, so the mean latency is C / P mean
    service times and a latency difference between the two kinds is a service-time difference:

        gain = measured QPS / (QPS if every query cost what a fresh one costs)
             = 1 + share_repeated * (C / P) * (median_fresh - median_repeated) / mean_latency

    Flagged when, in every later pass, the gain exceeds ``limit`` and the fresh latencies are
    larger beyond doubt (Mann-Whitney U, z >= ``z_min``). ``latency_ms``: shape (passes,
    queries), NaN where not sent or failed; ``fresh[p]`` and ``repeated`` index the queries.
    None: too few answers of either kind in some later pass to tell.
    """
    from scipy.stats import mannwhitneyu

    p_cpus = max(1, min(concurrency, server_cpus))
    found = []
    for p in range(1, latency_ms.shape[0]):
        f = latency_ms[p, fresh[p]].astype(np.float64)
        r = latency_ms[p, repeated].astype(np.float64)
        f, r = f[np.isfinite(f)], r[np.isfinite(r)]
        if f.size < min_samples or r.size < min_samples:
            return None
        mean = float(np.concatenate([f, r]).mean())
        delta = float(np.median(f) - np.median(r))
        gain = 1 + r.size / (f.size + r.size) * (concurrency / p_cpus) * delta / mean if mean > 0 else 1.0
        test = mannwhitneyu(f, r, alternative="greater", method="asymptotic")
        z = float(test.statistic - f.size * r.size / 2) / float(np.sqrt(f.size * r.size * (f.size + r.size + 1) / 12))
        if gain < limit or z < z_min:
            return []
        found.append((p, gain, float(np.median(f)), float(np.median(r))))
    if not found:
        return None if latency_ms.shape[0] < 2 else []
    p, gain, fm, rm = max(found, key=lambda t: t[1])
    return [f"queries seen in earlier passes were answered faster than new ones in the same pass (median "
            f"{rm:.3f} ms vs {fm:.3f} ms in pass {p + 1}), worth about {gain:.2f}x QPS: results cached across passes"]


def answers_to_compare(latency_ms: np.ndarray, fresh: list[np.ndarray], repeated: np.ndarray) -> tuple[int, int]:
    """The fewest fresh and the fewest remembered answers in any later pass: what ``repeat_speedup``
    needs ``min_samples`` of each to judge. (0, 0) with fewer than two passes."""
    later = range(1, latency_ms.shape[0])
    if not later:
        return 0, 0
    return (min(int(np.isfinite(latency_ms[p, fresh[p]]).sum()) for p in later),
            min(int(np.isfinite(latency_ms[p, repeated]).sum()) for p in later))


def judge_caching(passes: list[PassResult], latency_ms: np.ndarray | None, fresh: list[np.ndarray],
                  repeated: np.ndarray, *, concurrency: int, server_cpus: int, limit: float,
                  fresh_fraction: float) -> tuple[list[str], str | None]:
    """The caching checks of a strict scoring: ``(cheats, unjudged)``.

    Remembered versus fresh queries within each later pass decides (``repeat_speedup``). When there
    are too few fresh answers for it to judge, the passes' QPS flags a gross cache (``caching_suspected``,
    if the passes are long enough to time), and ``unjudged`` says why the repeated passes cannot be
    vouched for: their QPS must not be certified, only the first pass's, where every query was new
    to the server. A silent pass-QPS check is no warrant: it misses caches worth under 3x.
    """
    verdict = None
    if latency_ms is not None:
        verdict = repeat_speedup(latency_ms, fresh, repeated, concurrency=concurrency, server_cpus=server_cpus,
                                 limit=limit)
    if verdict is not None:
        return verdict, None
    shortest = min(p.elapsed_s for p in passes)
    if shortest >= MIN_TIMED_PASS_S and (cheats := caching_suspected([p.qps for p in passes])):
        return cheats, None
    nq = latency_ms.shape[1] if latency_ms is not None else 0
    if latency_ms is None:
        why = "no latencies of fresh and repeated queries to compare"
    else:
        n_fresh, n_repeated = answers_to_compare(latency_ms, fresh, repeated)
        why = (f"a later pass had {n_fresh} fresh answers and {n_repeated} repeated ones, it needs "
               f"{MIN_FRESH_ANSWERS} of each")
        need = min_hidden_queries(len(passes), fresh_fraction)
        if n_fresh < MIN_FRESH_ANSWERS and need is not None and nq < need:
            why += f": a hidden set of at least {need:,} queries ({nq:,} here)"
    if shortest < MIN_TIMED_PASS_S:
        why += f"; the shortest pass lasted {shortest:.2f} s, under the {MIN_TIMED_PASS_S:g} s the pass-QPS check needs"
    else:
        why += "; the pass-QPS check found no gain over 3x, and smaller ones it cannot see"
    median = float(np.median([p.qps for p in passes]))
    return [], (f"QPS from pass 1 only ({passes[0].qps:,.0f} QPS; every query in it was new to the server), not "
                f"the median of {len(passes)} passes ({median:,.0f} QPS): the caching check could not judge the "
                f"repeated passes ({why})")


def used_passes(passes: list[PassResult], source: QpsSource) -> list[PassResult]:
    """The passes a QPS from ``source`` is measured over (those that completed a query)."""
    return passes[:1] if source == QpsSource.FIRST_PASS else [p for p in passes if p.completed]


def certified_qps(passes: list[PassResult], source: QpsSource) -> float:
    """The QPS a record reports: the median over the passes ``source`` names."""
    used = used_passes(passes, source)
    return float(np.median([p.qps for p in used])) if used else 0.0


def qps_confidence(passes: list[PassResult], source: QpsSource, nq: int) -> tuple[QpsConfidence, str | None]:
    """Low, with the finding that says so, when every pass the QPS comes from is shorter than
    ``MIN_TIMED_PASS_S``: too short a time for one hiccup of the machine not to move it."""
    used = used_passes(passes, source)
    longest = max((p.elapsed_s for p in used), default=0.0)
    if not used or longest >= MIN_TIMED_PASS_S:
        return QpsConfidence.NORMAL, None
    which = "its pass" if len(used) == 1 else f"the longest of its {len(used)} passes"
    # A pass's length grows with the hidden set: the set that would make this one last long enough.
    need = (f" (at this speed, a hidden set of about {int(np.ceil(nq * MIN_TIMED_PASS_S / longest)):,} queries "
            f"gives one)") if longest > 0 and nq else ""
    return QpsConfidence.LOW, (f"low-confidence QPS: {which} lasted {longest:.2f} s, under the {MIN_TIMED_PASS_S:g} s "
                               f"a timed pass needs to mean much{need}")


def _first_mismatch(dists: np.ndarray, true_sq: np.ndarray, kind: str, rtol: float) -> tuple[int, int]:
    want = np.sqrt(true_sq) if kind == "euclidean" else true_sq
    bad = np.isfinite(dists) & np.isfinite(want) & (np.abs(dists - want) > rtol * np.maximum(1.0, want))
    r, c = np.argwhere(bad)[0]
    return int(r), int(c)
