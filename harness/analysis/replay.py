"""``staircase replay``: show an iteration, score it again, or drive it again and compare trees."""

from __future__ import annotations

import json as jsonlib
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.panel import Panel

from harness.cli_options import Json
from harness.config import RunConfig, validate_model
from harness.console import emit_json, err, fail
from harness.events import Event, IterationStart, ModelCall, SandboxRestarted, ScoreEvent, Submission, ToolCallEvent
from harness.ledger import Ledger, read_events
from harness.scorer.submission import tree_hash
from harness.stop import StopSignals
from harness.workspace import Workspace, submission_tag


def _events(run_dir: Path, n: int) -> list[Event]:
    return [e for e in read_events(run_dir) if getattr(e, "iteration", None) == n]


def _config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.yaml"
    return validate_model(RunConfig, yaml.safe_load(path.read_text()), str(path))


def show_transcript(events: list[Event]) -> None:
    for e in events:
        match e:
            case ModelCall():
                m, u = e.message, e.usage
                calls = "\n".join(f"→ {c.name}({c.arguments[:300]})" for c in m.tool_calls)
                body = "\n".join(x for x in ((m.reasoning or "")[:600], m.content[:1500], calls) if x)
                err.print(Panel(body or "(empty)", title=f"model turn {e.turn} (attempt {e.attempt}) · "
                                f"in {u.input_tokens} out {u.output_tokens} tokens · ${e.cost_usd:.4f}",
                                border_style="blue"))
            case ToolCallEvent():
                err.print(Panel(e.output[-2500:], title=f"{e.name} → " + ("error" if e.is_error else "ok"),
                                border_style="red" if e.is_error else "green"), markup=False)
            case SandboxRestarted():
                err.print(f"[bold red]sandbox died[/] ({e.cause}): {e.detail}; made anew")
            case Submission():
                err.print(f"[bold]submitted[/] {e.tag}: {e.message} (+{e.lines_added}/-{e.lines_removed})")
            case ScoreEvent():
                s = e.score
                err.print(f"[bold]score[/]: {s.status.value} · {s.qps} QPS · recall {s.recall} · {s.reason}")


def rescore(run_dir: Path, n: int, logged: dict[str, Any]) -> dict[str, Any]:
    from harness.scorer.scorer import BenchmarkScorer

    ws = Workspace(run_dir / "workspace", run_dir / "workspace.git")
    with tempfile.TemporaryDirectory() as tmp:
        tree = ws.export(submission_tag(n), Path(tmp) / "tree")
        scorer = BenchmarkScorer.from_config(_config(run_dir))
        try:
            new = scorer.score(tree, use_cache=False).model_dump(mode="json")
        finally:
            scorer.close()
    diff = {"status": (logged.get("status"), new["status"]), "qps": (logged.get("qps"), new["qps"]),
            "recall": (logged.get("recall"), new["recall"])}
    if logged.get("qps") and new["qps"]:
        diff["qps_ratio"] = round(new["qps"] / logged["qps"], 4)
    return {"logged": logged, "rescored": new, "difference": diff}


def redrive(run_dir: Path, n: int, start_ref: str, sandbox: str) -> dict[str, Any]:
    """Play iteration n's recorded model turns again, in a fresh sandbox at its starting commit."""
    from harness.agent.episode import Episode
    from harness.agent.prompts import SYSTEM
    from harness.agent.tools import long_horizon_tools
    from harness.budget import Budget, Usage
    from harness.models.replay import ReplayModel

    cfg = _config(run_dir)
    original = Workspace(run_dir / "workspace", run_dir / "workspace.git")
    with tempfile.TemporaryDirectory(prefix="staircase-redrive-") as tmp:
        scratch = Path(tmp)
        tree = original.export(start_ref, scratch / "start")
        ws = Workspace.create(scratch / "workspace", scratch / "workspace.git", skeleton=tree)
        shutil.rmtree(tree)
        if sandbox == "local":
            from harness.sandbox.local_backend import LocalSandbox

            sb: Any = LocalSandbox(ws.path, cfg.sandbox)
        else:
            from harness.datasets.store import DatasetStore
            from harness.sandbox.docker_backend import DockerSandbox

            ds = DatasetStore(cfg.dataset.data_dir).get(cfg.dataset.name)
            sb = DockerSandbox.start(ws.path, cfg.sandbox, dev_data=ds.dev_files())
        model = ReplayModel(run_dir)
        model.begin_episode(n)
        ledger = Ledger(scratch / "ledger")
        unlimited = cfg.budget.model_copy(update={k: None for k in type(cfg.budget).model_fields})
        try:
            end = Episode(n, 0, model, sb, long_horizon_tools(cfg.agent.command_timeout_s), ledger,
                          Budget(unlimited, Usage()), cfg.agent, cfg.model.context_window,
                          StopSignals()).run(SYSTEM, "", "")
        finally:
            sb.stop()
            ledger.close()
        ws.commit_submission(n, end.message)
        a = original.export(submission_tag(n), scratch / "a")
        b = ws.export(submission_tag(n), scratch / "b")
        ha, hb = tree_hash(a), tree_hash(b)
        differ = sorted({str(p.relative_to(a)) for p in a.rglob("*") if p.is_file()} ^
                        {str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()})
        return {"iteration": n, "identical": ha == hb, "recorded_tree": ha, "redriven_tree": hb,
                "end": end.reason, "files_only_in_one": differ}


def replay(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    iteration: Annotated[int | None, typer.Option(help="The iteration (default: the last scored one).")] = None,
    rescore_: Annotated[bool, typer.Option("--rescore", help="Score the submission again; show the difference.")]
    = False,
    redrive_: Annotated[bool, typer.Option("--redrive", help="Replay the model's turns in a fresh sandbox at the "
                                                            "iteration's start; check the tree is identical.")]
    = False,
    sandbox: Annotated[str, typer.Option(help="Sandbox for --redrive: docker or local (no isolation).")] = "docker",
    json: Json = False,
) -> None:
    """Show an iteration's transcript (model turns, tool calls, outputs, score); rescore or redrive it."""
    if not (run_dir / "events.jsonl").is_file():
        fail(f"{run_dir}: not a run directory (no events.jsonl)")
    scored = [e.iteration for e in read_events(run_dir, "score") if isinstance(e, ScoreEvent)]
    n = iteration if iteration is not None else (scored[-1] if scored else None)
    if n is None or n not in scored:
        fail(f"{run_dir}: iteration {n} has no score (scored iterations: {scored[:20]}...)")
    events = _events(run_dir, n)
    logged = next(e.score for e in events if isinstance(e, ScoreEvent)).model_dump(mode="json")
    out: dict[str, Any] = {"iteration": n, "score": logged}
    if not json:
        show_transcript(events)
    if rescore_:
        out["rescore"] = rescore(run_dir, n, logged)
        if not json:
            err.print(f"rescored: {jsonlib.dumps(out['rescore']['difference'])}")
    if redrive_:
        start = next(e.start_ref for e in reversed(events) if isinstance(e, IterationStart))
        out["redrive"] = redrive(run_dir, n, start, sandbox)
        if not json:
            r = out["redrive"]
            err.print(f"redrive: submitted tree {'identical' if r['identical'] else 'DIFFERENT'} "
                      f"({r['recorded_tree'][:12]} vs {r['redriven_tree'][:12]})")
    if json:
        emit_json(out)
    if redrive_ and not out["redrive"]["identical"]:
        raise typer.Exit(1)
