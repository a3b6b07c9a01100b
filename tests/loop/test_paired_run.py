"""The loop's side of paired scoring: the incumbent a new best is rematched against, the
verification at a run's end, and the scorer slot's waits kept out of the working hours."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.events import RunEnd, Verified, Waiting
from harness.ledger import read_events
from harness.run import Run
from harness.scorer.base import Incumbent
from harness.scorer.record import Paired, Score, Verification, VerifiedEntry
from harness.scorer.submission import tree_hash
from harness.state import RunState
from tests.loop.support import LocalSandbox, StubScorer, make_config


class PairingStub(StubScorer):
    """The stub's scores, plus what the loop hands a pairing scorer, and a verification."""

    def __init__(self) -> None:
        super().__init__()
        self.incumbents: list[Incumbent | None] = []
        self.verified: list[list[Incumbent]] = []

    def score(self, path: Path, **kw: object) -> Score:
        inc = kw.get("incumbent")
        assert inc is None or isinstance(inc, Incumbent)
        if inc is not None:
            assert tree_hash(inc.path) == inc.tree  # the incumbent's own tree, exported for the rematch
        self.incumbents.append(inc)
        return super().score(path)

    def verify(self, entries: list[Incumbent]) -> Verification:
        self.verified.append(entries)
        p = Paired(against="anchor", against_tree="a", rounds=3, ratio=1.0, low=0.9, high=1.1, qps=[1.0] * 3,
                   other_qps=[1.0] * 3, seconds=1.0)
        last = entries[-1]  # as if the paired rounds found the last of the top K the fastest
        return Verification(entries=[VerifiedEntry(label=e.label, iteration=e.iteration, tree=e.tree, relative=p)
                                     for e in entries], best=last.label, best_iteration=last.iteration)


def test_the_best_so_far_is_handed_over_and_the_top_k_verified_at_the_end(tmp_path: Path) -> None:
    scorer = PairingStub()
    cfg = make_config(tmp_path, episodes=6, **{"budget.max_iterations": 6, "scorer.verify_top_k": 2})
    run = Run.create(cfg, tmp_path / "run", sandbox_factory=lambda r: LocalSandbox(r.workspace.path),
                     scorer_factory=lambda r: scorer)
    summary = run.execute()
    events = list(read_events(run.dir))
    state = RunState.from_events(events)
    history = state.history
    # Each scoring got the best valid submission scored before it (None before the first valid one).
    for k, inc in enumerate(scorer.incumbents):
        before = [s for s in history[:k] if s.valid and s.qps]
        best = max(before, key=lambda s: s.qps or 0) if before else None
        assert (inc.iteration if inc else None) == (best.iteration if best else None)
        assert inc is None or (best is not None and inc.qps == best.qps and inc.tree == best.score.tree_hash)
    # At the end: the two best valid, distinct trees, verified once, recorded before run_end.
    top = sorted((s for s in history if s.valid), key=lambda s: -(s.qps or 0))
    assert [e.iteration for e in scorer.verified[0]] == [s.iteration for s in top[:2]] and len(scorer.verified) == 1
    kinds = [type(e) for e in events]
    assert kinds.index(Verified) < kinds.index(RunEnd)
    assert summary.verified_iteration == top[1].iteration and summary.verified_relative == (1.0, 0.9, 1.1)
    assert state.verified is not None and state.verified.best_iteration == top[1].iteration


class WaitingStub(PairingStub):
    """Each scoring first waits 0.3 s for the machine's scorer slot, and says so as the real one does."""

    report = None

    def score(self, path: Path, **kw: object) -> Score:
        time.sleep(0.3)
        assert self.report is not None
        self.report("held the scorer slot after 0.3 s", 0.3)
        return super().score(path, **kw)


def test_no_verification_without_pairing_and_slot_waits_are_not_working_hours(tmp_path: Path) -> None:
    scorer = WaitingStub()
    cfg = make_config(tmp_path, episodes=2, **{"budget.max_iterations": 2, "scorer.protocol": "kcores"})

    def factory(r: Run) -> WaitingStub:
        scorer.report = r._slot_waited
        return scorer

    run = Run.create(cfg, tmp_path / "run", sandbox_factory=lambda r: LocalSandbox(r.workspace.path),
                     scorer_factory=factory)
    run.execute()
    assert not scorer.verified  # kcores: no paired rounds by default, so no verification
    state = RunState.from_events(read_events(run.dir))
    waits = [e for e in read_events(run.dir) if isinstance(e, Waiting) and e.what == "scorer_slot"]
    assert [e.seconds for e in waits] == [0.3, 0.3]
    u = state.usage
    assert u.waiting_seconds == 0.6 and u.active_seconds > 0.6
    assert u.hours * 3600 == pytest.approx(u.active_seconds - 0.6)  # the waits are not working time
