"""``staircase view`` in a real headless Chromium (Debian's, driven by playwright)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from harness.analysis.charts import ANCHOR, CONFIRMED, INVALID, VALID, WITHIN_NOISE
from harness.analysis.staircase import load_staircase
from tests.view.conftest import shot

pytestmark = pytest.mark.browser
# The chart and the tables of the last data the page received are drawn (tables follow the chart).
DRAWN = "window.__view && window.__view.updates > 0 && window.__view.tablesVersion === window.__view.version"


def _traces(page: Any) -> dict[str, dict[str, list[float]]]:
    return page.evaluate("""() => Object.fromEntries(document.getElementById('staircase').data
        .map(t => [t.name, {x: Array.from(t.x || []), y: Array.from(t.y || []),
                            it: Array.from(t.customdata || [])}]))""")


def test_runs_page_lists_every_run_with_status_and_filters(page: Any, server: str, view_root: dict[str, Any],
                                                          artifacts: Path) -> None:
    page.goto(server + "/")
    page.wait_for_selector("#runs tbody tr")
    rows = {r.get_attribute("data-run"): r.get_attribute("data-status")
            for r in page.query_selector_all("#runs tbody tr")}
    assert rows == {"finished": "ended", "live": "running", "sweep-1/group-a/seed-0": "ended",
                    "sweep-1/group-a/seed-1": "ended", "sweep-1/group-b/seed-0": "ended"}
    assert page.inner_text("#runs tr[data-run=finished] .best") != "-"
    assert page.query_selector("#runs tr[data-run=live] svg.spark") is not None
    shot(page, "runs", artifacts)
    live = view_root["live"]  # a run that goes on updates by itself on this page too
    n = live.add(300.0, False)
    page.wait_for_function(f"document.querySelector('#runs tr[data-run=live] td:nth-child(6)').innerText"
                           f".startsWith('{n} ')", timeout=5000)
    page.select_option("#f-status", "running")
    assert [r.get_attribute("data-run") for r in page.query_selector_all("#runs tbody tr")] == ["live"]
    page.select_option("#f-status", "")
    page.select_option("#f-model", "live-model")
    assert [r.get_attribute("data-run") for r in page.query_selector_all("#runs tbody tr")] == ["live"]


def test_run_page_draws_the_ledgers_points_and_crosses(page: Any, server: str, view_root: dict[str, Any],
                                                       artifacts: Path) -> None:
    sc = load_staircase(view_root["finished"])
    page.goto(server + "/runs/finished")
    page.wait_for_function(DRAWN)
    t = _traces(page)
    valid = [p for p in sc.points if p.valid and p.qps]
    invalid = [p for p in sc.points if not p.valid]
    assert invalid, "the scripted run should have an invalid submission for this test to mean something"
    assert t[VALID]["x"] == [p.at["iterations"] for p in valid] and t[VALID]["y"] == [p.qps for p in valid]
    assert t[INVALID]["x"] == [p.at["iterations"] for p in invalid]
    # the crosses are drawn: one marker per invalid point in the SVG
    assert page.locator(".scatterlayer .trace").nth(1).locator("path.point").count() == len(invalid)
    assert page.locator("#iterations tbody tr").count() >= len(sc.points)
    shot(page, "run", artifacts)
    page.check("input[value=tool_calls]")
    page.wait_for_function("document.getElementById('staircase').layout.xaxis2.title.text === 'tool calls'")
    assert _traces(page)[VALID]["x"] == [p.at["tool_calls"] for p in valid]


def test_a_new_event_appears_without_reload(page: Any, server: str, view_root: dict[str, Any],
                                            artifacts: Path) -> None:
    live = view_root["live"]
    page.goto(server + "/runs/live")
    page.wait_for_function(DRAWN)
    before = len(_traces(page)[VALID]["x"])
    page.evaluate("window.__notReloaded = true")
    t0 = time.monotonic()
    n = live.add(1234.0, True, "confirmed")
    page.wait_for_function(f"window.__view.points.some(p => p.iteration === {n})", timeout=2000)
    latency = time.monotonic() - t0
    page.wait_for_function(DRAWN)
    assert page.evaluate("window.__notReloaded") is True
    t = _traces(page)
    assert len(t[VALID]["x"]) == before + 1 and 1234.0 in t[VALID]["y"]
    print(f"live update latency {latency:.3f} s")
    assert latency < 2.0
    names = set(t)
    assert {CONFIRMED, WITHIN_NOISE, ANCHOR} <= names  # paired scoring drawn: verdicts and the anchor panel
    assert "1,234" in page.inner_text(f"#iterations tr[data-iteration='{n}']")
    shot(page, "run-live", artifacts)


def test_clicking_a_point_opens_its_iteration(page: Any, server: str, view_root: dict[str, Any],
                                              artifacts: Path) -> None:
    page.goto(server + "/runs/finished")
    page.wait_for_function(DRAWN)
    point = page.locator(".scatterlayer .trace").nth(0).locator("path.point").nth(2)
    box = point.bounding_box()
    n = _traces(page)[VALID]["it"][2]
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url(f"**/runs/finished/iterations/{n}")
    assert f"Iteration {n}" in page.inner_text("h1")
    transcript = page.inner_text("#transcript")
    assert "write_file" in transcript and f"version {n}" in transcript  # the tool call and its submission
    assert "src/distance.rs" in page.inner_text("#diff")
    assert page.locator("#diff .diff .gi").count() > 0  # highlighted added lines
    assert "valid" in page.inner_text("#score")
    shot(page, "iteration", artifacts)
    page.locator("#transcript").scroll_into_view_if_needed()
    page.evaluate("document.getElementById('transcript').scrollIntoView()")
    shot(page, "iteration-transcript", artifacts)


def test_compare_page_draws_two_runs(page: Any, server: str, artifacts: Path) -> None:
    page.goto(server + "/compare?run=finished&run=live&axis=iterations&budget=")
    page.wait_for_selector("#overlay .scatterlayer .trace")
    names = page.evaluate("document.getElementById('overlay').data.map(t => t.name)")
    assert len(names) == 2 and names[0].startswith("finished") and names[1].startswith("live")
    assert page.locator("#overlay .scatterlayer .trace").count() == 2
    assert page.locator("#compare-runs tbody tr").count() == 2
    shot(page, "compare", artifacts)


def test_compare_page_overlays_a_sweeps_groups(page: Any, server: str) -> None:
    page.goto(server + "/compare?group=sweep-1/group-a&group=sweep-1/group-b")
    page.wait_for_selector("#overlay .scatterlayer .trace")
    groups = page.evaluate("document.getElementById('overlay').data.map(t => t.legendgroup)")
    assert groups == ["sweep-1/group-a", "sweep-1/group-a", "sweep-1/group-b"]
    rows = [r.inner_text().split("\t") for r in page.query_selector_all("#compare-groups tbody tr")]
    assert [(r[0], r[1], r[2]) for r in rows] == [("sweep-1/group-a", "2", "625"), ("sweep-1/group-b", "1", "900")]


def test_the_browser_gets_no_file_outside_the_runs(page: Any, server: str) -> None:
    for path in ["/runs/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/static/..%2F..%2Fapp.py", "/api/run/..%2F..%2Fetc"]:
        response = page.goto(server + path)
        assert response is not None and response.status == 404, path
        assert "root:" not in page.content()
