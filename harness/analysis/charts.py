"""The plotly figures of a run and of a comparison: one source for ``staircase view`` (drawn live in
the browser) and the static HTML report (drawn once, self-contained, for sharing).

Every trace has a fixed ``name`` (the legend's text) and, where a point is an iteration, the
iteration number in ``customdata``: the view opens an iteration when its point is clicked, and the
tests find the traces by name.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.analysis.staircase import Point, Staircase, best_curve

AXIS_LABEL = {"iterations": "iteration", "tool_calls": "tool calls", "tokens": "tokens", "dollars": "US dollars",
              "hours": "hours (active)"}
VALID, INVALID, BEST = "valid", "invalid (recall below floor or failed)", "best valid so far"
CONFIRMED, WITHIN_NOISE = "new best: confirmed step", "new best: within noise"
RECALL, FLOOR, ANCHOR = "recall@10", "recall floor", "anchor QPS (the machine's drift)"
MAX_LABELS = 12  # transitions labelled on the chart
GREEN, RED, BLUE, GREY = "#2a9d4b", "#d62728", "#1f4e9c", "#888888"


def _hover(p: Point) -> str:
    qps = "-" if p.qps is None else f"{p.qps:,.0f}"
    rel = ""
    if p.relative_qps is not None:
        rel = f"<br>{p.relative_qps:.3f}x anchor"
        if p.relative_low is not None and p.relative_high is not None:
            rel += f" [{p.relative_low:.3f}, {p.relative_high:.3f}]"
    verdict = f"<br>step: {p.verdict}" if p.verdict else ""
    msg = (p.message.strip().splitlines() or [""])[0][:80]
    return f"#{p.iteration} {p.status}<br>{qps} QPS, recall {p.recall}{rel}{verdict}<br>{msg}"


def _plain(fig: go.Figure) -> None:
    """A white look set by hand: a named template (plotly_white) adds a large dict to every figure,
    which the browser takes hundreds of milliseconds to apply on a 1,000-point run."""
    fig.update_layout(template="none", plot_bgcolor="white", paper_bgcolor="white",
                      font={"family": "system-ui, sans-serif", "size": 12})
    fig.update_xaxes(gridcolor="#ececec", zeroline=False, linecolor="#bbb", showline=True)
    fig.update_yaxes(gridcolor="#ececec", zeroline=False, linecolor="#bbb", showline=True)


def _first_line(text: str, n: int = 48) -> str:
    lines = text.strip().splitlines()
    return lines[0][:n] if lines else ""


def staircase_figure(sc: Staircase, axis: str = "iterations", recall_floor: float = 0.95) -> go.Figure:
    """The staircase: valid dots, red crosses for invalid submissions, the best-so-far steps, claimed
    new bests marked by their verdict (confirmed: filled diamond; within noise: hollow), transitions
    annotated; a recall panel with the floor; and, when the run was scored in pairs, the anchor's QPS."""
    anchored = any(p.anchor_qps is not None for p in sc.points)
    rows = 3 if anchored else 2
    heights = [0.62, 0.2, 0.18] if anchored else [0.75, 0.25]
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.05, row_heights=heights)
    valid = [p for p in sc.points if p.valid and p.qps]
    invalid = [p for p in sc.points if not p.valid]

    def scatter(points: list[Point], name: str, y: list[float], **kw: object) -> go.Scatter:
        return go.Scatter(x=[p.at[axis] for p in points], y=y, name=name, mode="markers",
                          customdata=[p.iteration for p in points], text=[_hover(p) for p in points],
                          hovertemplate="%{text}<extra></extra>", _validate=False, **kw)

    fig.add_trace(scatter(valid, VALID, [p.qps or 0.0 for p in valid], marker={"color": GREEN, "size": 7}), 1, 1)
    fig.add_trace(scatter(invalid, INVALID, [p.qps or 0.0 for p in invalid],
                          marker={"color": RED, "size": 9, "symbol": "x"}), 1, 1)
    xs, ys = best_curve(sc.points, axis)
    fig.add_trace(go.Scatter(x=xs, y=ys, name=BEST, mode="lines", line={"shape": "hv", "color": BLUE, "width": 2},
                             hoverinfo="skip"), 1, 1)
    confirmed = [p for p in valid if p.verdict == "confirmed"]
    noise = [p for p in valid if p.verdict == "within_noise"]
    if confirmed:
        fig.add_trace(scatter(confirmed, CONFIRMED, [p.qps or 0.0 for p in confirmed],
                              marker={"color": BLUE, "size": 13, "symbol": "diamond"}), 1, 1)
    if noise:
        fig.add_trace(scatter(noise, WITHIN_NOISE, [p.qps or 0.0 for p in noise],
                              marker={"color": BLUE, "size": 13, "symbol": "diamond-open",
                                      "line": {"width": 2}}), 1, 1)
    by_iteration = {p.iteration: p for p in sc.points}
    # A long run can have dozens of transitions: the largest jumps are labelled (the table lists all).
    shown = sorted(sc.transitions, key=lambda t: -(t.ratio or float("inf")))[:MAX_LABELS]
    for i, t in enumerate(sorted(shown, key=lambda t: t.iteration)):
        p = by_iteration.get(t.iteration)
        if p is None:
            continue
        label = _first_line(t.message) or f"iteration {t.iteration}"
        fig.add_annotation(x=p.at[axis], y=t.to_qps, text=f"#{t.iteration} {label}", showarrow=True, arrowhead=0,
                           ax=20, ay=-24 - 18 * (i % 2), font={"size": 10, "color": BLUE}, row=1, col=1)
    recalled = [p for p in sc.points if p.recall is not None]
    fig.add_trace(scatter(recalled, RECALL, [p.recall or 0.0 for p in recalled],
                          marker={"size": 5, "color": [GREEN if (p.recall or 0) >= recall_floor else RED
                                                       for p in recalled]}, showlegend=False), 2, 1)
    fig.add_hline(y=recall_floor, line={"color": RED, "dash": "dash", "width": 1}, row=2, col=1,
                  annotation_text=f"floor {recall_floor}", annotation_position="bottom right")
    if anchored:
        anchor = [p for p in sc.points if p.anchor_qps is not None]
        fig.add_trace(go.Scatter(x=[p.at[axis] for p in anchor], y=[p.anchor_qps for p in anchor], name=ANCHOR,
                                 mode="lines", marker={"size": 4, "color": GREY},
                                 line={"color": GREY, "width": 1}, customdata=[p.iteration for p in anchor]),
                      3, 1)
        fig.update_yaxes(title_text="anchor QPS", row=3, col=1)
    best = sc.best()
    title = (f"{sc.name} ({sc.model}): best {best.qps or 0:,.0f} QPS at iteration {best.iteration}" if best
             else f"{sc.name} ({sc.model}): no valid submission yet")
    fig.update_yaxes(title_text="QPS", rangemode="tozero", row=1, col=1)
    lows = [p.recall for p in recalled if p.recall is not None]
    fig.update_yaxes(title_text="recall@10", range=[min([recall_floor - 0.05, *lows]) - 0.01, 1.005], row=2, col=1)
    fig.update_xaxes(title_text=AXIS_LABEL.get(axis, axis), row=rows, col=1)
    span = max((p.at[axis] for p in sc.points), default=0.0)
    if axis in ("iterations", "tool_calls") and span <= 12:
        fig.update_xaxes(dtick=1)  # whole iterations: no tick at 2.5
    _plain(fig)
    fig.update_layout(title={"text": title, "font": {"size": 15}}, height=640 if anchored else 560,
                      margin={"l": 60, "r": 20, "t": 50, "b": 45}, hovermode="closest",
                      legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right"})
    return fig


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def overlay_figure(staircases: list[Staircase], axis: str = "iterations", budget: float | None = None,
                   groups: list[str] | None = None) -> go.Figure:
    """Several runs' best-so-far staircases on one axis, cut at ``budget`` (what ``compare`` measures).
    With ``groups`` (one label per run, e.g. a sweep's group), the runs of a group share a colour and a
    legend entry."""
    fig = go.Figure()
    order = list(dict.fromkeys(groups or []))
    for i, sc in enumerate(staircases):
        pts = [p for p in sc.points if budget is None or p.at[axis] <= budget]
        xs, ys = best_curve(pts, axis)
        name = f"{Path(sc.run_dir).name} ({sc.model})"
        line: dict[str, object] = {"shape": "hv", "width": 2}
        extra: dict[str, object] = {}
        if groups:
            g = groups[i]
            line["color"] = PALETTE[order.index(g) % len(PALETTE)]
            extra = {"legendgroup": g, "legendgrouptitle_text": g}
            name = f"{g}: {name}"
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, line=line, **extra))
    if budget is not None:
        fig.add_vline(x=budget, line={"color": GREY, "dash": "dot"}, annotation_text=f"budget {budget:g}")
    _plain(fig)
    fig.update_layout(xaxis_title=AXIS_LABEL.get(axis, axis), yaxis_title="best valid QPS",
                      height=460, margin={"l": 60, "r": 20, "t": 30, "b": 45}, hovermode="x unified",
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"})
    fig.update_yaxes(rangemode="tozero")
    return fig
