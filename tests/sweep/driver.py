"""A stand-in for ``staircase run`` / ``staircase resume`` that a sweep launches in tests: the same
loop (:class:`harness.run.Run`), with a local sandbox and a stub scorer that holds the machine's
scorer slot while it "measures" (sleeps ``SWEEP_STUB_SCORE_S``, default 0.3 s), and records the slot
and its interval in the score as the real scorer does. The scripted model takes the run's seed (and
``SWEEP_STUB_MODEL_S`` per call, a remote model's latency).

``python -m tests.sweep.driver run CONFIG --run-dir DIR --json`` / ``... resume DIR --json``:
prints the run's summary, exits 0 (ended) or 3 (stopped).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

from harness.config import RunConfig, load_config, validate_model
from harness.models.scripted import ScriptedModel
from harness.run import Run
from harness.sandbox.local_backend import LocalSandbox
from harness.scorer.record import Score
from harness.scorer.slot import iso, scorer_slot, utc_now
from tests.loop.support import StubScorer


class SlotStubScorer(StubScorer):
    def score(self, path: Path, **kw: object) -> Score:
        with scorer_slot() as held:
            time.sleep(float(os.environ.get("SWEEP_STUB_SCORE_S", "0.3")))
            s = super().score(path, **kw)
            done = utc_now()
        return s.model_copy(update={"slot": held.name, "measured_from": iso(held.since), "measured_to": iso(done)})


class SlowModel:
    """The scripted model, each call taking ``SWEEP_STUB_MODEL_S`` (default 0) like a remote model's
    latency: time in which the run waits and uses no CPU."""

    def __init__(self, inner: ScriptedModel, latency_s: float) -> None:
        self.inner, self.latency_s, self.name = inner, latency_s, inner.name

    def begin_episode(self, iteration: int) -> None:
        self.inner.begin_episode(iteration)

    def complete(self, messages, tools):  # type: ignore[no-untyped-def]
        time.sleep(self.latency_s)
        return self.inner.complete(messages, tools)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("config", type=Path)
    r.add_argument("--run-dir", type=Path, required=True)
    r.add_argument("--json", action="store_true")
    s = sub.add_parser("resume")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.cmd == "run":
        cfg = load_config(args.config)
    else:
        cfg = validate_model(RunConfig, yaml.safe_load((args.run_dir / "config.yaml").read_text()), "config.yaml")
    scorer = SlotStubScorer()
    kw: dict[str, object] = {"sandbox_factory": lambda run: LocalSandbox(run.workspace.path),
                             "scorer_factory": lambda run: scorer,
                             "model": SlowModel(ScriptedModel.from_config(cfg.model.script, seed=cfg.seed),
                                                float(os.environ.get("SWEEP_STUB_MODEL_S", "0")))}
    run = Run.create(cfg, args.run_dir, **kw) if args.cmd == "run" else Run.open(args.run_dir, **kw)  # type: ignore[arg-type]
    summary = run.execute()
    print(summary.model_dump_json())
    sys.exit(3 if summary.status == "stopped" else 0)


if __name__ == "__main__":
    main()
