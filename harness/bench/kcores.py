"""``staircase bench kcores``: published KCORES leaderboard entries scored here, beside their figures.

The published figures are the original's (its ``results/leaderboard.json`` when found, else the
entry's own ``eval_log.json`` best benchmark, else its best passing ``benchmarks/benchmark_NNN.json``):
SIFT-1M, 4 server CPUs of a Xeon Platinum 8269CY, usually 1,000 queries (see docs/kcores.md). Ours
are the kcores protocol's on the dataset and machine named in the report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from harness.analysis.kcores_import import published_variant
from harness.scorer.base import Scorer
from harness.scorer.record import Score

Log = Callable[[str], None]


class Published(BaseModel):
    """An entry's figure as the original published it."""

    qps: float | None = None
    recall: float | None = None
    recall_passed: bool | None = None
    queries: int | None = None
    source: str = Field(description="where the figure was read: leaderboard.json, eval_log.json or benchmarks/")


class Entry(BaseModel):
    """A published entry found in the folder."""

    name: str
    path: str
    model: str
    published: Published
    variant: str = Field("best", description="the variant the published figure was measured on: final when "
                         "a finish benchmark measured it (on src/), else best (src_best_qps/)")


class EntryRow(BaseModel):
    """One entry: the published figure and ours."""

    entry: str
    model: str
    published: Published
    variant: str
    status: str | None = None
    qps: float | None = None
    recall: float | None = None
    reason: str = ""
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    left_out: list[str] = Field(default_factory=list)
    score: Score | None = None


class KcoresBenchReport(BaseModel):
    entries_dir: str
    variant: str
    dataset: str
    n_base: int
    protocol: str
    cpu_model: str
    host_cpus: int
    server_cpus: str
    loadgen_cpus: str
    runner: str
    limits: dict[str, float]
    not_as_original: list[str] = Field(default_factory=list)
    rows: list[EntryRow] = Field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _model(entry: Path) -> str:
    log = entry / "agent_log.jsonl"
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("event") == "session_start":
                return str(rec.get("model") or entry.name)
    return entry.name.rsplit("-turn-", 1)[0]


def leaderboard_file(entries_dir: Path) -> Path | None:
    """The original's ``results/leaderboard.json`` beside a ``leaderboard/`` folder, or one inside it."""
    for p in (entries_dir / "leaderboard.json", entries_dir.parent / "results" / "leaderboard.json"):
        if p.is_file():
            return p
    return None


def _published_in_entry(entry: Path) -> Published:
    ev = _read_json(entry / "eval_log.json")
    best = ev.get("best_benchmark") if isinstance(ev, dict) else None
    if isinstance(best, dict):
        return Published(qps=best.get("qps"), recall=best.get("recall"), recall_passed=best.get("recall_passed"),
                         queries=best.get("total_queries"), source="eval_log.json best_benchmark")
    benches = [b for b in (_read_json(f) for f in sorted((entry / "benchmarks").glob("benchmark_*.json")))
               if isinstance(b, dict) and b.get("recall_passed")]
    if benches:
        b = max(benches, key=lambda x: x.get("qps") or 0)
        return Published(qps=b.get("qps"), recall=b.get("recall"), recall_passed=True,
                         queries=b.get("total_queries"), source="benchmarks/ (best passing)")
    return Published(recall_passed=False, source="none found")


def find_entries(entries_dir: Path, leaderboard: Path | None = None) -> list[Entry]:
    """The entries in ``entries_dir`` (folders with ``src_best_qps/`` or ``src/`` and a Cargo.toml),
    best published QPS first (ties: higher recall), as the original ranks them."""
    if not entries_dir.is_dir():
        raise ValueError(f"--entries: {entries_dir} is not a folder")
    board = leaderboard or leaderboard_file(entries_dir)
    by_dir: dict[str, dict[str, Any]] = {}
    if board is not None:
        data = _read_json(board)
        if not isinstance(data, list):
            raise ValueError(f"{board}: not the original's leaderboard.json (a JSON array of entries)")
        by_dir = {str(e.get("entry_dir")): e for e in data if isinstance(e, dict)}
    out: list[Entry] = []
    for d in sorted(p for p in entries_dir.iterdir() if p.is_dir()):
        if not (d / "Cargo.toml").is_file() or not ((d / "src_best_qps").is_dir() or (d / "src").is_dir()):
            continue
        row = by_dir.get(d.name)
        if row is not None:
            pub = Published(qps=row.get("qps"), recall=row.get("recall"), recall_passed=row.get("recall_passed"),
                            source=f"leaderboard.json ({row.get('result_source', '?')})")
            ev = _read_json(d / "eval_log.json")
            best = ev.get("best_benchmark") if isinstance(ev, dict) else None
            same = [b for b in [best, *(_read_json(f) for f in sorted((d / "benchmarks").glob("benchmark_*.json")))]
                    if isinstance(b, dict) and b.get("qps") == row.get("qps")]
            if same:
                pub.queries = same[0].get("total_queries")
            model = str(row.get("model_name") or _model(d))
        else:
            pub, model = _published_in_entry(d), _model(d)
        out.append(Entry(name=d.name, path=str(d), model=model, published=pub,
                         variant=published_variant(d, pub.qps)))
    if not out:
        raise ValueError(f"--entries: no KCORES entry (Cargo.toml with src/ or src_best_qps/) in {entries_dir}")
    out.sort(key=lambda e: (-(e.published.qps or 0), -(e.published.recall or 0), e.name))
    return out


def pick(entries: list[Entry], top: int | None, every_entry: bool = False) -> list[Entry]:
    """The best entry of each of the ``top`` best-ranked models (every entry with ``every_entry``)."""
    chosen: list[Entry] = []
    models: set[str] = set()
    for e in entries:
        if not every_entry and e.model in models:
            continue
        models.add(e.model)
        chosen.append(e)
    return chosen[:top] if top else chosen


def score_entries(scorer: Scorer, entries: list[Entry], variant: Literal["published", "best", "final"], log: Log,
                  *, use_cache: bool = True) -> list[EntryRow]:
    """Score each entry, one at a time, and pair it with its published figure. ``published``
    scores each entry's sources that the published figure was measured on."""
    rows = []
    for i, e in enumerate(entries, 1):
        which = e.variant if variant == "published" else variant
        log(f"[{i}/{len(entries)}] {e.name} ({e.model}, {which}): published {e.published.qps or 0:,.1f} QPS")
        s = scorer.score(Path(e.path), variant=which, use_cache=use_cache)
        log(f"[{i}/{len(entries)}] {e.name}: {s.status.value}: {s.reason}")
        rows.append(EntryRow(entry=e.name, model=e.model, published=e.published, variant=which,
                             status=s.status.value, qps=s.qps, recall=s.recall, reason=s.reason,
                             phase_seconds=s.phase_seconds, left_out=s.left_out or [], score=s))
    return rows
