"""The outer loop: a Run is a series of Iterations; each is an Episode that ends in a Submission,
which the Scorer turns into a Score; a Budget says when to stop; the Ledger remembers everything.

A run directory holds ``config.yaml`` (resolved, no secrets), ``events.jsonl`` (the record: typed
events, :mod:`harness.events`), ``state.json`` (a snapshot), ``iterations/NNNN/`` (diff, score, long
outputs), the ``workspace/`` and its git directory ``workspace.git/`` with a tag per submission.

One process writes a run (the ledger's lock). Everything the loop knows is a :class:`RunState`
rebuilt from the events, so :meth:`Run.open` resumes a run stopped or killed at any moment: an
interrupted iteration is finished (its submission scored) or started again from the last
submission, and nothing is done twice. Faults a long run meets are outlived where they can be: a
sandbox that dies is made anew (:class:`~harness.agent.episode.Episode`); the Docker engine and the
model API are waited for; a scoring that the engine's absence spoiled is done again. Where they
cannot (a stop signal, an outage past its limit, a full disk), the run stops with a ``stopped``
event, its containers removed, ready for ``staircase resume``.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from git import GitCommandError
from pydantic import BaseModel

from harness.agent.episode import Episode, EpisodeEnd, read_notes
from harness.agent.prompts import SYSTEM, iteration_prompt
from harness.agent.task import Task, make_task
from harness.budget import Budget, BudgetExhausted
from harness.config import RunConfig, config_to_yaml, validate_model
from harness.datasets.store import DatasetStore
from harness.docker_util import EngineUnavailable
from harness.events import (
    SCHEMA_VERSION,
    EndReason,
    Event,
    IterationAbandoned,
    IterationEnd,
    IterationStart,
    RunEnd,
    RunResume,
    RunStart,
    SandboxRestarted,
    ScoreEvent,
    Stopped,
    Submission,
    Verified,
    Waiting,
)
from harness.ledger import DiskFull, Ledger, is_disk_full, write_json_atomic, write_text_durable
from harness.models import make_model
from harness.models.base import Model, ModelError
from harness.models.pricing import price_snapshot
from harness.models.retry import read_api_key
from harness.sandbox.base import Sandbox
from harness.scorer.base import Incumbent, Scorer
from harness.scorer.record import Score, Verification
from harness.state import RunState
from harness.stop import StopRequested, StopSignals
from harness.workspace import Workspace, submission_tag

Observer = Callable[[Event], None]
RUN_LABEL = "staircase.run"  # on every container of a run, so that its end can remove them all


class RunSummary(BaseModel):
    run_dir: str
    status: str  # ended, stopped (resumable), running
    end_reason: str
    iterations: int
    best_valid_qps: float | None
    best_iteration: int | None
    usage: dict[str, float]
    # The verified best (paired rounds at the end): its iteration and ratio to the anchor [interval].
    verified_iteration: int | None = None
    verified_relative: tuple[float, float, float] | None = None


class Run:
    def __init__(self, ledger: Ledger, cfg: RunConfig, *, sandbox_factory: Callable[[Run], Sandbox] | None = None,
                 scorer_factory: Callable[[Run], Scorer] | None = None, model: Model | None = None,
                 observers: list[Observer] | None = None) -> None:
        self.dir, self.cfg, self.ledger = ledger.run_dir, cfg, ledger
        self.state = RunState.from_events(ledger.events())
        ledger.listeners += [self.state.apply, *(observers or [])]
        self.budget = Budget(cfg.budget, self.state.usage)
        self.workspace = Workspace(self.dir / "workspace", self.dir / "workspace.git")
        self.dataset = DatasetStore(cfg.dataset.data_dir).get(cfg.dataset.name)
        self.model = model or make_model(cfg.model, self.dir, on_wait=self._waiting("model_api"), seed=cfg.seed)
        self._sandbox_factory = sandbox_factory or _docker_sandbox
        self._scorer_factory = scorer_factory or _docker_scorer
        self.stop = StopSignals()
        self.sandbox: Sandbox | None = None
        self.scorer: Scorer | None = None
        self._task: Task | None = None
        self._engine_gone = False

    @property
    def id(self) -> str:
        return str(self.dir.resolve())

    # -- creating and opening ----------------------------------------------------------------------

    @classmethod
    def create(cls, cfg: RunConfig, run_dir: Path | None = None, **kw: object) -> Run:
        run_dir = run_dir or cfg.runs_dir / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        DatasetStore(cfg.dataset.data_dir).get(cfg.dataset.name)  # fail before anything is written
        read_api_key(cfg.model)  # an unset key variable too
        ledger = Ledger(run_dir)
        try:
            if ledger.path.stat().st_size or (run_dir / "workspace.git").exists():
                raise FileExistsError(f"{run_dir} already holds a run: use `staircase resume {run_dir}`")
            (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
            Workspace.create(run_dir / "workspace", run_dir / "workspace.git", notes=cfg.agent.notes_file)
            run = cls(ledger, cfg, **kw)  # type: ignore[arg-type]
        except BaseException:
            ledger.close()
            raise
        run.ledger.append(RunStart(schema_version=SCHEMA_VERSION, name=cfg.name, model=cfg.model.name,
                                   provider=cfg.model.provider, dataset=cfg.dataset.name, preset=cfg.agent.preset,
                                   host=platform.node(), prices=price_snapshot(cfg.model.prices),
                                   scaffold=cfg.agent.scaffold))
        return run

    @classmethod
    def open(cls, run_dir: Path, *, resume: bool = True, **kw: object) -> Run:
        """Open a run to write it (under its lock). ``resume``: the opening is a resumption of the
        loop (recorded); False for a one-off writer such as `staircase verify`."""
        path = Path(run_dir) / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
        cfg = validate_model(RunConfig, yaml.safe_load(path.read_text()), str(path))
        ledger = Ledger(Path(run_dir))  # fails at once while another process writes the run
        try:
            run = cls(ledger, cfg, **kw)  # type: ignore[arg-type]
            run.workspace.recover_index_lock()
        except BaseException:
            ledger.close()
            raise
        if run._sandbox_factory is _docker_sandbox:
            # What a killed process of this run left running (its sandbox, the scorer's anchor and
            # kept servers): no process of the run is alive now that we hold its lock.
            from harness.sandbox.docker_backend import remove_labelled

            try:
                remove_labelled(RUN_LABEL, run.id)
            except Exception:  # an unreachable engine is waited for where it is needed
                pass
        if resume:
            run.ledger.append(RunResume(repaired_bytes=ledger.repaired_bytes, host=platform.node(), pid=os.getpid()))
        return run

    # -- the loop ----------------------------------------------------------------------------------

    def execute(self) -> RunSummary:
        """Iterate until a budget ends or the model stops; stop cleanly on what cannot be outlived."""
        try:
            if self.state.end is not None:
                return self.summary()
            with self.stop:
                self._finish_interrupted()
                while True:
                    self.stop.checkpoint()
                    try:
                        self.budget.check()
                    except BudgetExhausted as e:
                        return self._end(e.reason)
                    end = self.iteration(self.state.usage.iterations + 1)
                    if end is None:
                        return self._end("the model stopped")
                    if end.reason is EndReason.BUDGET:
                        return self._end(end.detail)
        except StopRequested as e:
            return self._stopped(f"stopped by {e.reason}", "signal")
        except EngineUnavailable as e:
            self._engine_gone = True  # no more waiting for it on the way out
            return self._stopped(str(e), "docker")
        except ModelError as e:
            return self._stopped(str(e), "model_api")
        except DiskFull as e:
            return self._stopped(str(e), "disk")
        except (OSError, GitCommandError) as e:
            if not is_disk_full(e):
                raise
            return self._stopped(f"disk full under {self.dir}: {e}", "disk")
        finally:
            self._close()

    def iteration(self, n: int) -> EpisodeEnd | None:
        """One iteration; None when the model had nothing more to do (no submission is made)."""
        attempt = self.state.attempts.get(n, 0)
        start_ref = self.state.last_tag
        if attempt:
            self.workspace.reset_to(start_ref)  # a restarted iteration starts where the last one ended
        from harness.agent.scaffolds import scaffold_for

        scaffold = scaffold_for(self)  # None: the built-in loop; else a coding agent through the model gateway
        sandbox, task = self._services(n, attempt)
        sandbox.claim_workspace()  # files git wrote belong to us; hand them to the sandbox user
        self.ledger.append(IterationStart(iteration=n, attempt=attempt, start_ref=start_ref))
        self.model.begin_episode(n)
        episode = scaffold.episode(self, n, attempt, sandbox) if scaffold else \
            Episode(n, attempt, self.model, sandbox, task.tools, self.ledger, self.budget, self.cfg.agent,
                    self.cfg.model.context_window, self.stop)
        notes = read_notes(self.workspace.path, self.cfg.agent.notes_file)
        prompt = iteration_prompt(n, self.state.history, self.state.last_score, notes, self.cfg.agent.notes_file)
        # What the model was told, for the transcript (`staircase view`, replay): written before it runs.
        write_json_atomic(self.ledger.iteration_dir(n) / f"prompts-{attempt}.json",
                          {"system": SYSTEM, "task": task.text, "iteration": prompt})
        end = episode.run(SYSTEM, task.text, prompt)
        if end.reason is EndReason.MODEL_STOPPED and episode.tool_calls == 0:
            self.ledger.append(IterationAbandoned(iteration=n, attempt=attempt, detail=end.detail))
            return None
        self._score(self._submit(n, end.message, start_ref, end.reason))
        self.ledger.append(IterationEnd(iteration=n, reason=end.reason, tool_calls=episode.tool_calls,
                                        compactions=episode.context.compactions,
                                        sandbox_restarts=episode.sandbox_restarts))
        self._write_state()
        return end

    # -- submission and score ----------------------------------------------------------------------

    def _submit(self, n: int, message: str, start_ref: str, reason: EndReason) -> Submission:
        commit = self.workspace.commit_submission(n, message)
        tag = submission_tag(n)
        files, added, removed = self.workspace.diff_stat(start_ref, tag)
        write_text_durable(self.ledger.iteration_dir(n) / "diff.patch", self.workspace.diff(start_ref, tag))
        event = self.ledger.append(Submission(iteration=n, message=message, commit=commit, tag=tag, reason=reason,
                                              files_changed=files, lines_added=added, lines_removed=removed))
        assert isinstance(event, Submission)
        return event

    def _score(self, sub: Submission) -> Score:
        """Score a submission and record the score."""
        scorer = self.scorer or self._scorer_factory(self)
        self.scorer = scorer
        with tempfile.TemporaryDirectory(prefix="staircase-sub-") as tmp:
            tree = self.workspace.export(sub.tag, Path(tmp) / "tree")
            best = self._top(1, Path(tmp))  # a new best is rematched against it
            with self.stop.interruptible():
                # a measurement the engine's absence voided is redone there
                score = scorer.score(tree, incumbent=best[0] if best else None)
        write_json_atomic(self.ledger.iteration_dir(sub.iteration) / "score.json", score.model_dump(mode="json"))
        self.ledger.append(ScoreEvent(iteration=sub.iteration, score=score))
        return score

    def _top(self, k: int, tmp: Path) -> list[Incumbent]:
        """The run's k best valid submissions (distinct trees), exported under ``tmp``."""
        out: list[Incumbent] = []
        for s in sorted((s for s in self.state.history if s.valid and s.qps), key=lambda s: -(s.qps or 0)):
            if len(out) == k:
                break
            if any(i.tree == s.score.tree_hash for i in out):
                continue
            path = self.workspace.export(submission_tag(s.iteration), tmp / f"best-{s.iteration}")
            out.append(Incumbent(path=path, tree=s.score.tree_hash, qps=s.qps or 0.0, label=f"iteration {s.iteration}",
                                 iteration=s.iteration))
        return out

    def verify(self, k: int) -> Verification | None:
        """Rescore the k best valid submissions in paired rounds; the verification is recorded."""
        self.scorer = self.scorer or self._scorer_factory(self)
        with tempfile.TemporaryDirectory(prefix="staircase-verify-") as tmp:
            top = self._top(k, Path(tmp))
            if len(top) < 1:
                return None
            with self.stop.interruptible():
                v = self.scorer.verify(top)
        if v is not None:
            self.ledger.append(Verified(verification=v))
        return v

    def _finish_interrupted(self) -> None:
        """Complete what a killed process left half done, without redoing finished work."""
        n = self.state.interrupted()
        if n is None:
            return
        if n not in self.state.submissions and self.workspace.has_submission(n):
            # Killed between the commit and its event: record the submission as it was made.
            self._submit(n, self.workspace.submission_message(n), self.state.started[n].start_ref,
                         EndReason.RECOVERED)
        if n in self.state.submissions:
            if not self.state.scored(n):
                self._score(self.state.submissions[n])
            self.ledger.append(IterationEnd(iteration=n, reason=EndReason.RECOVERED))
            self._write_state()

    # -- the sandbox and the scorer ------------------------------------------------------------

    def _services(self, n: int, attempt: int) -> tuple[Sandbox, Task]:
        """The sandbox (started, or made anew if it died between iterations) and the preset's task."""
        if self.sandbox is None:
            self.sandbox = self._sandbox_factory(self)
            # The image carries the skeleton's dependencies pre-built: the agent's first build is short.
            self.sandbox.exec("command -v staircase-seed-target >/dev/null && staircase-seed-target target || true",
                              timeout_s=300)
        elif not self.sandbox.alive():
            self.sandbox.restart()
            self.ledger.append(SandboxRestarted(iteration=n, attempt=attempt, cause="exited",
                                                detail="found dead between iterations"))
        if self._task is None:
            self._task = make_task(self.cfg, self.sandbox, self.dataset.manifest, self.state.usage)
        return self.sandbox, self._task

    def _waiting(self, what: str) -> Callable[[str], None]:
        def note(detail: str) -> None:
            self.ledger.append(Waiting(what=what, detail=detail))  # type: ignore[arg-type]

        return note

    def _slot_waited(self, detail: str, seconds: float | None) -> None:
        self.ledger.append(Waiting(what="scorer_slot", detail=detail, seconds=seconds))

    def _close(self) -> None:
        """Remove the run's containers (whatever ended it) and give up the ledger's lock. With the
        engine gone that cannot be done: the next resume's end removes what is left."""
        try:
            if self._engine_gone:
                return
            for close in (self.sandbox.stop if self.sandbox else None, self.scorer.close if self.scorer else None):
                if close is not None:
                    try:
                        close()
                    except Exception:  # the engine may be gone; the label sweep below tries again
                        pass
            if self._sandbox_factory is _docker_sandbox:
                from harness.sandbox.docker_backend import remove_labelled

                remove_labelled(RUN_LABEL, self.id)
        finally:
            self.sandbox = self.scorer = None
            self.ledger.close()

    # -- the end -----------------------------------------------------------------------------------

    def _end(self, reason: str) -> RunSummary:
        if self.cfg.scorer.pairing and self.cfg.scorer.verify_top_k and self.state.verified is None:
            self.verify(self.cfg.scorer.verify_top_k)  # the reported best is the verified one
        self.ledger.append(RunEnd(reason=reason))
        self._write_state()
        return self.summary()

    def _stopped(self, reason: str, kind: str) -> RunSummary:
        try:
            self.ledger.append(Stopped(reason=reason, kind=kind))  # type: ignore[arg-type]
            self._write_state()
        except DiskFull:
            pass  # nothing more can be written; the record up to here is whole
        return self.summary(reason)

    def summary(self, stop_reason: str = "") -> RunSummary:
        s, best = self.state, self.state.best()
        u = s.usage
        v = s.verified
        rel = next((e.relative for e in v.entries if e.label == v.best), None) if v else None
        return RunSummary(run_dir=str(self.dir), status="stopped" if stop_reason else s.status,
                          end_reason=s.end.reason if s.end else stop_reason, iterations=u.iterations,
                          best_valid_qps=best.qps if best else None, best_iteration=best.iteration if best else None,
                          usage=u.model_dump() | {"tokens": u.tokens, "hours": round(u.hours, 4)},
                          verified_iteration=v.best_iteration if v else None,
                          verified_relative=(rel.ratio, rel.low, rel.high) if rel else None)

    def _write_state(self) -> None:
        self.ledger.write_state(self.summary().model_dump() | {"updated": time.time()})


def _docker_sandbox(run: Run) -> Sandbox:
    from harness.sandbox.docker_backend import DockerSandbox

    dev = run.dataset.dev_files_in_order(run.cfg.seed, run.dir / "dev-data")  # the seed's order of dev queries
    return DockerSandbox.start(run.workspace.path, run.cfg.sandbox, dev_data=dev,
                               log_dir=run.dir / "sandbox-logs", labels={RUN_LABEL: run.id},
                               on_wait=run._waiting("docker"))


def _docker_scorer(run: Run) -> Scorer:
    from harness.scorer.docker_runner import run_build_cache
    from harness.scorer.scorer import BenchmarkScorer

    return BenchmarkScorer.from_config(run.cfg, build_cache=run_build_cache(run.dir), labels={RUN_LABEL: run.id},
                                       on_wait=run._waiting("docker"), on_slot_wait=run._slot_waited)
