"""The staircase report of a run: a PNG (matplotlib) and a self-contained HTML page in the run directory.

The HTML page draws the same plotly figure as ``staircase view`` (:mod:`harness.analysis.charts`), with
plotly.js inlined so the file opens anywhere, offline, for sharing a finished run."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from harness.analysis.charts import staircase_figure  # noqa: E402
from harness.analysis.staircase import Point, Staircase, best_curve  # noqa: E402

AXIS_LABEL = {"iterations": "iteration", "tool_calls": "tool calls", "tokens": "tokens", "dollars": "US dollars",
              "hours": "hours (active)"}


def plot_staircase(sc: Staircase, axis: str, path: Path, recall_floor: float = 0.95) -> Path:
    fig, (ax, rax) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    valid = [p for p in sc.points if p.valid and p.qps]
    invalid = [p for p in sc.points if not p.valid]
    ax.scatter([p.at[axis] for p in valid], [p.qps for p in valid], s=28, color="#2a9d4b", zorder=3,
               label="valid submission")
    ax.scatter([p.at[axis] for p in invalid], [p.qps or 0.0 for p in invalid], marker="x", s=40, color="#d62728",
               zorder=3, label="invalid (recall below floor or failed)")
    xs, ys = best_curve(sc.points, axis)
    if xs:
        ax.step(xs, ys, where="post", color="#1f4e9c", linewidth=2, label="best valid so far")
    # New bests rematched against the best before them in paired rounds: confirmed (filled) or
    # within the measurement's noise (hollow), as in the HTML report's chart.
    for verdict, face, label in (("confirmed", "#1f4e9c", "new best: confirmed step"),
                                 ("within_noise", "none", "new best: within noise")):
        pts = [p for p in valid if p.verdict == verdict]
        if pts:
            ax.scatter([p.at[axis] for p in pts], [p.qps for p in pts], marker="D", s=70, facecolors=face,
                       edgecolors="#1f4e9c", linewidths=1.6, zorder=4, label=label)
    for t in sc.transitions:
        p = next(p for p in sc.points if p.iteration == t.iteration)
        label = t.message.strip().splitlines()[0][:48] if t.message.strip() else f"iteration {t.iteration}"
        ax.annotate(f"#{t.iteration} {label}", (p.at[axis], t.to_qps), textcoords="offset points", xytext=(4, 8),
                    fontsize=7.5, color="#1f4e9c", rotation=12)
    ax.set_ylabel("QPS")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    best = sc.best()
    title = f"{sc.name} ({sc.model}): best {best.qps or 0:,.0f} QPS" if best else f"{sc.name}: no valid submission"
    v = sc.verified
    rel = next((e.relative for e in v.entries if e.label == v.best), None) if v else None
    if v is not None and rel is not None:
        title += (f"; verified best #{v.best_iteration}: {rel.ratio:.3f}x the anchor [{rel.low:.3f}, {rel.high:.3f}]"
                  + ("" if v.told_apart or v.best_vs_next is None else ", not told apart from the runner-up"))
    ax.set_title(title, fontsize=11)
    rx = [p.at[axis] for p in sc.points if p.recall is not None]
    ry = [p.recall for p in sc.points if p.recall is not None]
    rax.scatter(rx, ry, s=14, color=["#2a9d4b" if (r or 0) >= recall_floor else "#d62728" for r in ry])
    rax.axhline(recall_floor, color="#d62728", linestyle="--", linewidth=1, label=f"floor {recall_floor}")
    rax.set_ylabel("recall@10")
    rax.set_xlabel(AXIS_LABEL.get(axis, axis))
    if axis in ("iterations", "tool_calls"):
        rax.xaxis.set_major_locator(MaxNLocator(integer=True))
    rax.set_ylim(min([0.9, *ry]) - 0.01 if ry else 0.9, 1.005)
    rax.grid(alpha=0.3)
    rax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(sc: Staircase, axis: str, out_dir: Path, recall_floor: float = 0.95) -> tuple[Path, Path]:
    png = plot_staircase(sc, axis, out_dir / f"staircase-{axis}.png", recall_floor)
    page = out_dir / "report.html"
    page.write_text(_html(sc, axis, recall_floor))
    return png, page


def relative(p: Point) -> str:
    """A point's QPS relative to the anchor with its 95% interval, or "-" (not scored in pairs)."""
    if p.relative_qps is None:
        return "-"
    if p.relative_low is None or p.relative_high is None:
        return f"{p.relative_qps:.3f}x"
    return f"{p.relative_qps:.3f}x [{p.relative_low:.3f}, {p.relative_high:.3f}]"


def _html(sc: Staircase, axis: str, recall_floor: float) -> str:
    chart = staircase_figure(sc, axis, recall_floor).to_html(include_plotlyjs=True, full_html=False,
                                                             div_id="staircase", config={"responsive": True})
    e = html.escape

    def num(v: float | None, f: str = "{:,.0f}") -> str:
        return "-" if v is None else f.format(v)

    rows = "".join(
        f"<tr class='{'ok' if p.valid else 'bad'}'><td>{p.iteration}</td><td>{e(p.status)}</td><td>{num(p.qps)}</td>"
        f"<td>{num(p.recall, '{:.4f}')}</td><td>{e(relative(p))}</td><td>{e(p.verdict or '')}</td>"
        f"<td>{num(p.best_so_far)}</td><td>+{p.lines_added}/-{p.lines_removed}</td>"
        f"<td>{e(p.message[:300])}</td></tr>" for p in sc.points)
    trans = "".join(
        f"<tr><td>{t.iteration}</td><td>{num(t.from_qps)}</td><td>{num(t.to_qps)}</td><td>{num(t.ratio, '{:.2f}x')}"
        f"</td><td>{t.plateau_iterations}</td><td>{t.lines_changed}</td><td>{e(t.message[:300])}</td></tr>"
        for t in sc.transitions)
    usage = "".join(f"<tr><td>{e(k)}</td><td>{num(v, '{:,.4g}')}</td></tr>" for k, v in sc.usage.items())
    verified = _verified_html(sc)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>staircase: {e(sc.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;
margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}tr.bad td{{color:#b00}}
</style></head><body>
<h1>{e(sc.name)}</h1><p>model <b>{e(sc.model)}</b>; run directory <code>{e(sc.run_dir)}</code>; ended:
{e(sc.end_reason or 'still running or interrupted')}; recall floor {recall_floor}; measured noise
{sc.noise:.1%} (median QPS max/min over passes); transition threshold {sc.threshold:.0%}.</p>
{chart}
{verified}
<h2>Transitions</h2><table><tr><th>iteration</th><th>from QPS</th><th>to QPS</th><th>jump</th>
<th>plateau (iterations)</th><th>lines changed</th><th>message</th></tr>{trans}</table>
<h2>Submissions</h2><table><tr><th>iteration</th><th>status</th><th>QPS</th><th>recall@10</th><th>vs anchor [95%]</th>
<th>step</th><th>best so far</th>
<th>diff</th><th>message</th></tr>{rows}</table>
<h2>Budget used</h2><table>{usage}</table></body></html>"""


def _verified_html(sc: Staircase) -> str:
    """The verification of the run's top submissions (paired rounds at its end), if any."""
    v = sc.verified
    if v is None:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(x.label)}{' (verified best)' if x.label == v.best else ''}</td>"
        f"<td>{'-' if x.qps is None else f'{x.qps:,.0f}'}</td>"
        f"<td>{'-' if x.relative is None else f'{x.relative.ratio:.3f}x [{x.relative.low:.3f}, {x.relative.high:.3f}]'}"
        f"</td><td>{e('; '.join(x.problems))}</td></tr>" for x in v.entries)
    b = v.best_vs_next
    vs = (f"<p>{e(v.best or '')} against {e(b.against)}: {b.ratio:.3f}x [{b.low:.3f}, {b.high:.3f}]: "
          f"{'told apart' if v.told_apart else 'cannot be told apart with these rounds'}.</p>") if b else ""
    return (f"<h2>Verified best</h2><p>The top {len(v.entries)} valid submissions rescored in {v.rounds} paired "
            f"rounds against each other and the anchor ({v.seconds:.0f} s).</p><table><tr><th>submission</th>"
            f"<th>QPS (rounds)</th><th>vs anchor [95%]</th><th>problems</th></tr>{rows}</table>{vs}")
