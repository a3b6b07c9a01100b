"""The web app of ``staircase view`` (Starlette): pages rendered with Jinja2, charts drawn in the
browser by plotly.js (served from the installed ``plotly`` package: no CDN), live by light polling.

Nothing here builds a file path from a request: a run is looked up by its id in the
:class:`~harness.view.index.Registry`, an iteration by its number in that run; anything else is 404.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import plotly
import yaml
from jinja2 import Environment, PackageLoader, select_autoescape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from harness.analysis.charts import overlay_figure, staircase_figure
from harness.analysis.compare import compare
from harness.analysis.staircase import AXES
from harness.events import ModelCall, ToolCallEvent
from harness.view.index import Registry, RunIndex

PAGE_EVENTS = 60  # events per page of a transcript
SHOWN_OUTPUT = 20_000  # characters of a tool output shown inline; the rest is one click away
DIFF_LIMIT = 2 << 20
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
STATIC = Path(__file__).parent / "static"
_env = Environment(loader=PackageLoader("harness.view", "templates"), autoescape=select_autoescape())
_env.filters["num"] = lambda v, f="{:,.0f}": "-" if v is None else f.format(v)
_DIFF_CSS = HtmlFormatter(style="default").get_style_defs(".diff")


def _page(name: str, **ctx: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**ctx))


def _figure_json(fig: Any) -> Any:
    return json.loads(fig.to_json())


def _budget(run: RunIndex) -> dict[str, float | None]:
    """The run's budget limits from its config.yaml (read-only), by axis."""
    try:
        cfg = yaml.safe_load((run.run_dir / "config.yaml").read_text()) or {}
        b = cfg.get("budget") or {}
    except (OSError, yaml.YAMLError):
        b = {}
    return {"iterations": b.get("max_iterations"), "tool_calls": b.get("max_tool_calls"),
            "tokens": b.get("max_tokens"), "dollars": b.get("max_dollars"), "hours": b.get("max_hours")}


def _used(run: RunIndex) -> dict[str, float]:
    u = run.state.usage
    return {"iterations": u.iterations, "tool_calls": u.tool_calls, "tokens": u.tokens, "dollars": u.dollars,
            "hours": u.hours}


def summary(rid: str, run: RunIndex) -> dict[str, Any]:
    """One row of the runs page."""
    start = run.state.start
    best = run.state.best()
    return {"id": rid, "name": start.name if start else run.run_dir.name, "dir": str(run.run_dir),
            "group": rid.rsplit("/", 1)[0] if "/" in rid else "", "status": run.status(),
            "model": start.model if start else "?", "preset": start.preset if start else "",
            "used": _used(run), "budget": _budget(run), "best_valid_qps": best.qps if best else None,
            "spark": [p.best_so_far or 0.0 for p in run.points][-200:], "version": run.version}


def create_app(roots: list[Path]) -> Starlette:
    registry = Registry(roots)
    cache = _Recent(8)  # the run data last sent, by (run, axis, version, status): a revisit costs nothing

    def run_or_404(request: Request) -> tuple[str, RunIndex]:
        rid = request.path_params["rid"]
        run = registry.get(rid)
        if run is None:
            raise _NotFound(f"no run {rid!r} under the directories this view serves")
        return rid, run

    def runs_page(request: Request) -> Response:
        return _page("runs.html", roots=[str(r) for r in registry.roots])

    def api_runs(request: Request) -> Response:
        out = []
        for rid, run in sorted(registry.scan().items()):
            run.refresh()
            out.append(summary(rid, run))
        return JSONResponse(out)

    def run_page(request: Request) -> Response:
        rid, run = run_or_404(request)
        return _page("run.html", rid=rid, run=summary(rid, run), axes=AXES)

    def api_run(request: Request) -> Response:
        rid, run = run_or_404(request)
        since = request.query_params.get("since")
        if since is not None and since == str(run.version):
            return JSONResponse({"version": run.version})
        axis = request.query_params.get("axis", "iterations")
        if axis not in AXES:
            return JSONResponse({"error": f"axis must be one of {', '.join(AXES)}"}, status_code=400)
        status = run.status()
        key = (rid, axis, run.version, status)
        body = cache.get(key)
        if body is None:
            sc = run.staircase()
            rows = [r.json() for r in sorted(run.rows.values(), key=lambda r: r.iteration)]
            for r in rows:
                if r["status"] == "running" and status != "running":
                    r["status"] = "not finished"
            body = bytes(JSONResponse({
                "version": run.version, "summary": summary(rid, run),
                "figure": _figure_json(staircase_figure(sc, axis)), "rows": rows,
                "transitions": [t.model_dump() for t in sc.transitions],
                "points": [{"iteration": p.iteration, "valid": p.valid, "qps": p.qps, "x": p.at[axis]}
                           for p in sc.points]}).body)
            cache.put(key, body)
        return Response(body, media_type="application/json")

    def iteration_page(request: Request) -> Response:
        rid, run = run_or_404(request)
        n = request.path_params["n"]
        if n not in run.iterations():
            raise _NotFound(f"run {rid!r} has no iteration {n}")
        page = max(0, int(request.query_params.get("page", "0") or 0))
        events, total = run.events_of(n, page * PAGE_EVENTS, PAGE_EVENTS)
        score = run.scores.get(n)
        items = [_item(e, page * PAGE_EVENTS + i) for i, e in enumerate(events)]
        diff = _diff(run.run_dir / "iterations" / f"{n:04d}" / "diff.patch")
        prompts = _prompts(run.run_dir / "iterations" / f"{n:04d}")
        iters = run.iterations()
        i = iters.index(n)
        return _page("iteration.html", rid=rid, n=n, run=summary(rid, run), items=items, score=score,
                     page=page, pages=max(1, -(-total // PAGE_EVENTS)), total=total, diff=diff, prompts=prompts,
                     diff_css=_DIFF_CSS, prev=iters[i - 1] if i > 0 else None,
                     next=iters[i + 1] if i + 1 < len(iters) else None)

    def event_output(request: Request) -> Response:
        rid, run = run_or_404(request)
        n, k = request.path_params["n"], request.path_params["k"]
        events, total = run.events_of(n, k, 1)
        if not events or not isinstance(events[0], ToolCallEvent):
            raise _NotFound(f"iteration {n} of {rid!r} has no tool call #{k}")
        e = events[0]
        return PlainTextResponse(e.full_output if e.full_output is not None else e.output)

    def compare_page(request: Request) -> Response:
        runs = registry.scan()
        groups = _groups(sorted(runs))
        chosen_groups = [g for g in request.query_params.getlist("group") if g in groups]
        chosen: list[str] = []
        labels: list[str] = []
        for g in chosen_groups:  # a sweep's group: all its runs, labelled with it
            for rid in groups[g]:
                if rid not in chosen:
                    chosen.append(rid)
                    labels.append(g)
        for rid in request.query_params.getlist("run"):
            if rid in runs and rid not in chosen:
                chosen.append(rid)
                labels.append(rid)
        axis = request.query_params.get("axis", "iterations")
        axis = axis if axis in AXES else "iterations"
        raw_budget = request.query_params.get("budget", "")
        try:
            budget = float(raw_budget) if raw_budget.strip() else None
        except ValueError:
            budget = None
        staircases = []
        for rid in chosen:
            run = runs[rid]
            run.refresh()
            staircases.append(run.staircase())
        result = compare(staircases, axis, budget, None) if staircases else None
        figure = (_figure_json(overlay_figure(staircases, axis, budget, labels if chosen_groups else None))
                  if staircases else None)
        by_group = []
        if result and chosen_groups:
            for g in dict.fromkeys(labels):
                rs = [r for r, lab in zip(result.runs, labels, strict=True) if lab == g]
                bests = [r.best_valid_qps for r in rs if r.best_valid_qps is not None]
                by_group.append({"group": g, "runs": len(rs), "best_mean": sum(bests) / len(bests) if bests else None,
                                 "best_min": min(bests, default=None), "best_max": max(bests, default=None),
                                 "area_mean": sum(r.area for r in rs) / len(rs)})
        return _page("compare.html", runs=sorted(runs), groups=sorted(groups), chosen=chosen,
                     chosen_groups=chosen_groups, labels=labels, axis=axis, axes=AXES, budget=raw_budget,
                     result=result, figure=figure, by_group=by_group)

    def plotly_js(request: Request) -> Response:
        return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(str(getattr(exc, "detail", "") or exc) or "not found", status_code=404)

    routes = [
        Route("/", runs_page),
        Route("/api/runs", api_runs),
        Route("/api/run/{rid:path}", api_run),
        Route("/runs/{rid:path}/iterations/{n:int}/output/{k:int}", event_output),
        Route("/runs/{rid:path}/iterations/{n:int}", iteration_page),
        Route("/runs/{rid:path}", run_page),
        Route("/compare", compare_page),
        Route("/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Index every run once in the background, so a first visit to a large run finds it read.
        threading.Thread(target=lambda: [r.refresh() for r in registry.scan(force=True).values()],
                         name="view-warmup", daemon=True).start()
        yield

    app = Starlette(routes=routes, exception_handlers={404: not_found, _NotFound: not_found}, lifespan=lifespan)
    app.state.registry = registry
    return app


class _NotFound(Exception):
    pass


class _Recent:
    """The last ``size`` bodies computed (bounded memory: a few runs' data, not every run's)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[Any, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            return None

    def put(self, key: Any, body: bytes) -> None:
        with self.lock:
            self.items[key] = body
            while len(self.items) > self.size:
                self.items.popitem(last=False)


def _groups(rids: list[str]) -> dict[str, list[str]]:
    """Folders holding runs (a sweep, a sweep's group), by their id prefix."""
    out: dict[str, list[str]] = {}
    for rid in rids:
        parts = rid.split("/")
        for i in range(1, len(parts)):
            out.setdefault("/".join(parts[:i]), []).append(rid)
    return out


def _item(e: Any, k: int) -> dict[str, Any]:
    """One entry of a transcript as the template shows it."""
    d: dict[str, Any] = {"type": e.type, "k": k, "e": e}
    if isinstance(e, ModelCall):
        d["calls"] = [{"name": c.name, "arguments": _pretty(c.arguments)} for c in e.message.tool_calls]
    elif isinstance(e, ToolCallEvent):
        d["arguments"] = _pretty(e.arguments)
        d["shown"] = e.output[:SHOWN_OUTPUT]
        d["cut_here"] = max(0, len(e.output) - SHOWN_OUTPUT)
        d["model_saw_cut"] = e.full_output is not None and len(e.full_output) > len(e.output)
        d["full_len"] = len(e.full_output) if e.full_output is not None else len(e.output)
    return d


def _pretty(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), indent=2)[:SHOWN_OUTPUT]
    except ValueError:
        return arguments[:SHOWN_OUTPUT]


def _diff(path: Path) -> list[dict[str, str]]:
    """The submission's diff against the previous one, one highlighted block per file."""
    try:
        with path.open("rb") as f:
            text = f.read(DIFF_LIMIT).decode(errors="replace")
    except OSError:
        return []
    parts = re.split(r"(?m)^(?=diff --git )", text)
    out = []
    for part in parts:
        if not part.strip():
            continue
        m = re.match(r"diff --git a/(\S+) b/(\S+)", part)
        name = m.group(2) if m else "(diff)"
        added = sum(1 for ln in part.splitlines() if ln.startswith("+") and not ln.startswith("+++"))
        removed = sum(1 for ln in part.splitlines() if ln.startswith("-") and not ln.startswith("---"))
        out.append({"file": name, "added": str(added), "removed": str(removed),
                    "html": highlight(part, DiffLexer(), HtmlFormatter(cssclass="diff"))})
    return out


def _prompts(folder: Path) -> list[dict[str, str]]:
    """What the model was told in each attempt of an iteration (``prompts-K.json``, written by the
    run before the episode; runs made before it was recorded have none)."""
    out = []
    for f in sorted(folder.glob("prompts-*.json"), key=lambda f: f.stem):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.append({"attempt": f.stem.split("-", 1)[1], **{k: str(data.get(k, "")) for k in
                                                                ("system", "task", "iteration")}})
    return out
