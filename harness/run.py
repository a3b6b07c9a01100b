"""The outer loop: a Run is a series of Iterations; each is an Episode that ends in a Submission,
which the Scorer turns into a Score; a Budget says when to stop; the Ledger remembers everything.

A run directory holds ``config.yaml`` (resolved, no secrets), ``events.jsonl`` (the record),
``state.json`` (a snapshot), ``iterations/NNNN/`` (diff, score, long outputs), the ``workspace/``
and its git directory ``workspace.git/`` with a tag per submission. ``Run.open`` resumes a run
killed at any moment: usage is rebuilt from the events, an interrupted iteration is finished (its
submission scored) or restarted from the last submission, and nothing is done twice.
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from harness.agent.episode import Episode, EpisodeEnd, read_notes
from harness.agent.prompts import KCORES_TASK, LONG_HORIZON_TASK, SYSTEM, api_md, iteration_prompt
from harness.agent.tools import Tool, kcores_tools, long_horizon_tools
from harness.budget import Budget, BudgetExhausted, Usage
from harness.config import RunConfig, config_to_yaml, validate_model
from harness.datasets.store import Dataset, DatasetStore
from harness.ledger import Ledger, write_json_atomic
from harness.models import make_model
from harness.models.base import Model
from harness.sandbox.base import Sandbox
from harness.scorer.record import Score
from harness.scorer.scorer import Scorer
from harness.workspace import Workspace, submission_tag

Log = Callable[[str], None]


@dataclass
class RunSummary:
    run_dir: str
    status: str
    end_reason: str
    iterations: int
    best_valid_qps: float | None
    best_iteration: int | None
    usage: dict[str, Any]


class Run:
    def __init__(self, run_dir: Path, cfg: RunConfig, *, log: Log | None = None,
                 sandbox_factory: Callable[[Run], Sandbox] | None = None,
                 scorer_factory: Callable[[Run], Scorer] | None = None, model: Model | None = None) -> None:
        self.dir = Path(run_dir)
        self.cfg = cfg
        self.log = log or (lambda _m: None)
        self.ledger = Ledger(self.dir)
        self.usage = Usage.from_events(self.ledger.events())
        self.budget = Budget(cfg.budget, self.usage)
        self.workspace = Workspace(self.dir / "workspace", self.dir / "workspace.git")
        self.dataset: Dataset = DatasetStore(cfg.dataset.data_dir).get(cfg.dataset.name)
        self.model = model or make_model(cfg.model, self.dir)
        self._sandbox_factory = sandbox_factory or _docker_sandbox
        self._scorer_factory = scorer_factory or _docker_scorer
        self.sandbox: Sandbox | None = None
        self.scorer: Scorer | None = None
        self._history: list[dict[str, Any]] | None = None
        self._last_score: dict[str, Any] | None = None
        self._messages: dict[int, str] = {}  # submission messages of this process, by iteration
        # Read once: how often each iteration was started, and the last submission's tag.
        self._attempts: dict[int, int] = {}
        self._last_tag = "start"
        for e in self.ledger.events():
            if e["type"] == "iteration_start":
                self._attempts[e["iteration"]] = self._attempts.get(e["iteration"], 0) + 1
            elif e["type"] == "submission":
                self._last_tag = e["tag"]

    # -- creating and opening ----------------------------------------------------------------------

    @classmethod
    def create(cls, cfg: RunConfig, run_dir: Path | None = None, **kw: Any) -> Run:
        run_dir = run_dir or cfg.runs_dir / f"{cfg.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
        if (run_dir / "events.jsonl").exists():
            raise FileExistsError(f"{run_dir} already holds a run: use `staircase resume {run_dir}`")
        run_dir.mkdir(parents=True, exist_ok=True)
        DatasetStore(cfg.dataset.data_dir).get(cfg.dataset.name)  # fail before anything is written
        (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
        Workspace.create(run_dir / "workspace", run_dir / "workspace.git", notes=cfg.agent.notes_file)
        run = cls(run_dir, cfg, **kw)
        run.ledger.append("run_start", name=cfg.name, model=cfg.model.name, provider=cfg.model.provider,
                          dataset=cfg.dataset.name, preset=cfg.agent.preset, host=platform.node(),
                          prices=_price_snapshot(cfg))
        return run

    @classmethod
    def open(cls, run_dir: Path, **kw: Any) -> Run:
        path = Path(run_dir) / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
        cfg = validate_model(RunConfig, yaml.safe_load(path.read_text()), str(path))
        _clear_stale_git_lock(Path(run_dir) / "workspace.git")
        run = cls(Path(run_dir), cfg, **kw)
        run.ledger.append("run_resume", repaired_bytes=run.ledger.repaired_bytes)
        return run

    # -- the loop ----------------------------------------------------------------------------------

    def execute(self) -> RunSummary:
        """Iterate until a budget ends or the model stops; return the summary."""
        ended = [e for e in self.ledger.events("run_end")]
        if ended:
            return self.summary(ended[-1]["reason"])
        self.sandbox = self._sandbox_factory(self)
        self.scorer = self._scorer_factory(self)
        # The image carries the skeleton's dependencies pre-built: the agent's first build is short.
        self.sandbox.exec("command -v staircase-seed-target >/dev/null && staircase-seed-target target || true",
                          timeout_s=300)
        try:
            self._finish_interrupted()
            while True:
                try:
                    self.budget.check()
                except BudgetExhausted as e:
                    return self._end(e.reason)
                n = self.usage.iterations + 1
                end = self.iteration(n)
                if end is None:
                    return self._end("the model stopped")
                if end.reason == "budget":
                    return self._end(end.detail)
        finally:
            if self.sandbox is not None:
                self.sandbox.stop()

    def iteration(self, n: int) -> EpisodeEnd | None:
        """One iteration; None when the model had nothing more to do (no submission is made)."""
        assert self.sandbox is not None
        attempt = self._attempts.get(n, 0)
        self._attempts[n] = attempt + 1
        start_ref = self._last_tag
        if attempt:
            self.workspace.reset_to(start_ref)  # a restarted iteration starts where the last one ended
        claim = getattr(self.sandbox, "claim_workspace", None)
        if claim:
            claim()  # files git wrote belong to us; hand them to the sandbox user
        self.ledger.append("iteration_start", iteration=n, attempt=attempt, start_ref=start_ref)
        self.log(f"iteration {n}" + (f" (attempt {attempt + 1})" if attempt else ""))
        begin = getattr(self.model, "begin_episode", None)
        if begin:
            begin(n)
        episode = Episode(n, self.model, self.sandbox, self._tools(), self.ledger, self.budget, self.cfg.agent,
                          self.cfg.model.context_window, attempt)
        end = episode.run(SYSTEM, self._task_text(), self._prompt(n))
        if end.reason == "model_stopped" and episode.tool_calls == 0:
            self.ledger.append("iteration_abandoned", iteration=n, attempt=attempt, detail=end.detail)
            return None
        self._submit(n, end.message, start_ref, end.reason)
        self._score(n)
        self.ledger.append("iteration_end", iteration=n, reason=end.reason, tool_calls=episode.tool_calls,
                           compactions=episode.context.compactions)
        self.usage.iterations += 1
        self._write_state()
        return end

    # -- submission and score ----------------------------------------------------------------------

    def _submit(self, n: int, message: str, start_ref: str, reason: str) -> None:
        commit = self.workspace.commit_submission(n, message)
        self._messages[n] = message
        tag = submission_tag(n)
        self._last_tag = tag
        files, added, removed = self.workspace.diff_stat(start_ref, tag)
        (self.ledger.iteration_dir(n) / "diff.patch").write_text(self.workspace.diff(start_ref, tag))
        self.ledger.append("submission", iteration=n, message=message, commit=commit, tag=tag, reason=reason,
                           files_changed=files, lines_added=added, lines_removed=removed)

    def _score(self, n: int) -> Score:
        assert self.scorer is not None
        with tempfile.TemporaryDirectory(prefix="staircase-sub-") as tmp:
            tree = self.workspace.export(submission_tag(n), Path(tmp) / "tree")
            score = self.scorer.score(tree)
        self.usage.tick(time.time())
        write_json_atomic(self.ledger.iteration_dir(n) / "score.json", score.model_dump(mode="json"))
        event = self.ledger.append("score", iteration=n, score=score)
        if self._history is not None:
            message = self._messages.get(n) or next(
                (e["message"] for e in self.ledger.events("submission") if e["iteration"] == n), "")
            self._history.append(self._row(event, message))
            self._last_score = event["score"]
        qps = f"{score.qps:,.0f} QPS" if score.qps is not None else "-"
        self.log(f"iteration {n}: {score.status.value} {qps} recall {score.recall}: {score.reason}")
        return score

    def _finish_interrupted(self) -> None:
        """Complete what a killed process left half done, without redoing finished work."""
        events = list(self.ledger.events())
        started = [e["iteration"] for e in events if e["type"] == "iteration_start"]
        if not started:
            return
        n = started[-1]
        done = {(e["type"], e.get("iteration")) for e in events}
        if ("iteration_end", n) in done:
            return
        tags = {t.name for t in self.workspace.repo.tags}
        if ("submission", n) not in done and submission_tag(n) in tags:
            # Killed between the commit and its event: record the submission as it was made.
            start = next(e["start_ref"] for e in reversed(events)
                         if e["type"] == "iteration_start" and e["iteration"] == n)
            message = str(self.workspace.repo.git.log("-1", "--format=%s", submission_tag(n))).split(": ", 1)[-1]
            self._submit(n, message, start, "recovered")
            done.add(("submission", n))
        if ("submission", n) in done:
            if ("score", n) not in done:
                self._score(n)
            self.ledger.append("iteration_end", iteration=n, reason="recovered")
            self.usage.iterations += 1
            self._write_state()

    # -- prompts -----------------------------------------------------------------------------------

    def _tools(self) -> list[Tool]:
        t = self.cfg.agent.command_timeout_s
        if self.cfg.agent.preset == "kcores-50":
            return kcores_tools(t, self._kcores_status)
        return long_horizon_tools(t)

    def _kcores_status(self) -> str:
        cap = self.cfg.budget.max_tool_calls
        left = f"{cap - self.usage.tool_calls} of {cap}" if cap else "unlimited"
        return f"tool calls used: {self.usage.tool_calls}; left: {left}"

    def _task_text(self) -> str:
        s, m = self.cfg.scorer, self.dataset.manifest
        fields = {"recall_floor": s.recall_floor, "hardware": self._hardware_text(), "server_cpus":
                  _count_cpus(s.server_cpus), "concurrency": s.concurrency, "memory_limit": s.memory_limit,
                  "n_base": m.n_base, "dim": m.dim, "notes_file": self.cfg.agent.notes_file, "api_md": api_md(),
                  "crates": self._crates_text(), "tool_budget": self.cfg.budget.max_tool_calls or "unlimited"}
        template = KCORES_TASK if self.cfg.agent.preset == "kcores-50" else LONG_HORIZON_TASK
        return template.format(**fields)

    def _hardware_text(self) -> str:
        """Read from the sandbox the run uses, never copied from elsewhere."""
        if not hasattr(self, "_hw"):
            assert self.sandbox is not None
            r = self.sandbox.exec("echo cores: $(nproc); grep -m1 'model name' /proc/cpuinfo | cut -d: -f2; "
                                  "grep -m1 -o -w -E 'avx512f|avx2|fma|sse4_2|neon|asimd' /proc/cpuinfo | "
                                  "sort -u | tr '\\n' ' '", timeout_s=30)
            lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
            self._hw = "; ".join(lines) if lines else "unknown"
        return f"sandbox CPU: {self._hw} (SIMD flags listed are those the CPU reports)"

    def _crates_text(self) -> str:
        assert self.sandbox is not None
        r = self.sandbox.exec("cat /opt/staircase/vendored-crates.txt 2>/dev/null | head -n 200", timeout_s=30)
        return r.stdout.strip() or "(the vendored crate list is unavailable)"

    def _prompt(self, n: int) -> str:
        return iteration_prompt(n, self.history(), self.last_score(),
                                read_notes(self.workspace.path, self.cfg.agent.notes_file), self.cfg.agent.notes_file)

    def history(self) -> list[dict[str, Any]]:
        """Every scored submission: iteration, status, QPS, recall, message (read from the ledger once,
        then kept up to date as scores are appended)."""
        if self._history is None:
            messages = {e["iteration"]: e["message"] for e in self.ledger.events("submission")}
            self._history = [self._row(e, messages.get(e["iteration"], "")) for e in self.ledger.events("score")]
            scores = list(self.ledger.events("score"))
            self._last_score = scores[-1]["score"] if scores else None
        return self._history

    def last_score(self) -> dict[str, Any] | None:
        self.history()
        return self._last_score

    @staticmethod
    def _row(score_event: dict[str, Any], message: str) -> dict[str, Any]:
        s = score_event["score"]
        return {"iteration": score_event["iteration"], "status": s["status"], "qps": s.get("qps"),
                "recall": s.get("recall"), "message": message}

    # -- the end -----------------------------------------------------------------------------------

    def _end(self, reason: str) -> RunSummary:
        self.ledger.append("run_end", reason=reason)
        self._write_state()
        return self.summary(reason)

    def summary(self, end_reason: str = "") -> RunSummary:
        best = max((r for r in self.history() if r["status"] == "valid" and r["qps"]), key=lambda r: r["qps"],
                   default=None)
        u = self.usage
        return RunSummary(run_dir=str(self.dir), status="ended" if end_reason else "running", end_reason=end_reason,
                          iterations=u.iterations, best_valid_qps=best["qps"] if best else None,
                          best_iteration=best["iteration"] if best else None,
                          usage=u.model_dump() | {"tokens": u.tokens, "hours": round(u.hours, 4)})

    def _write_state(self) -> None:
        self.ledger.write_state(self.summary().__dict__ | {"updated": time.time()})


def _count_cpus(cpus: str) -> int:
    n = 0
    for part in cpus.split(","):
        a, _, b = part.partition("-")
        n += int(b) - int(a) + 1 if b else 1
    return n


def _price_snapshot(cfg: RunConfig) -> dict[str, Any]:
    try:
        from harness.models.pricing import PriceTable

        return PriceTable.load(Path(cfg.model.prices)).snapshot()
    except (ImportError, OSError, ValueError, AttributeError):
        return {}


def _clear_stale_git_lock(git_dir: Path) -> None:
    """A kill -9 during a git command leaves index.lock behind; we are the only writer."""
    for name in ("index.lock", "HEAD.lock"):
        (git_dir / name).unlink(missing_ok=True)


def _docker_sandbox(run: Run) -> Sandbox:
    from harness.sandbox.docker_backend import DockerSandbox

    return DockerSandbox.start(run.workspace.path, run.cfg.sandbox, dev_data=run.dataset.dev_files(),
                               log_dir=run.dir / "sandbox-logs")


def _docker_scorer(run: Run) -> Scorer:
    from harness.scorer.cli import make_scorer
    from harness.scorer.docker_runner import run_build_cache

    return make_scorer(run.cfg, build_cache=run_build_cache(run.dir))


