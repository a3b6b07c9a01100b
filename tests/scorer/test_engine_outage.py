"""The scorer with the Docker engine going away, in real containers: the engine is reached through
a proxy that tests can cut (``tests.faults.docker_proxy``). An engine down before a scoring is
waited for; one that goes away while the containers run voids the scoring, which is done again; one
that stays away past the limit is raised, never scored, and nothing is left behind once it is back."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from harness.docker_util import EngineUnavailable
from harness.scorer.docker_runner import SCORER_LABEL, DockerRunner
from harness.scorer.record import Status
from harness.scorer.scorer import BenchmarkScorer
from tests.faults.docker_proxy import DockerProxy
from tests.scorer.conftest import quick_scorer_config
from tests.scorer.submissions import write_stage1

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def proxy(monkeypatch, docker_client):
    with DockerProxy() as p:
        monkeypatch.setenv("DOCKER_HOST", p.url)
        yield p


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    return write_stage1(tmp_path_factory.mktemp("sub") / "stage1")


def scorer_for(small_dataset, sandbox_image, engine_wait_s: float) -> tuple[BenchmarkScorer, list[str], str]:
    run = f"test-{uuid.uuid4().hex[:10]}"
    told: list[str] = []
    cfg = quick_scorer_config(image=sandbox_image, engine_wait_s=engine_wait_s)
    runner = DockerRunner(cfg, build_cache="tests-misbehaving", labels={"staircase.run": run}, log=told.append)
    return BenchmarkScorer(cfg, small_dataset, runner, log=told.append), told, run


def left_behind(docker_client, run: str) -> list[Any]:
    return docker_client.containers.list(all=True, filters={"label": [f"{SCORER_LABEL}=1", f"staircase.run={run}"]})


def test_an_engine_down_before_the_scoring_is_waited_for(proxy, small_dataset, sandbox_image, stage1,
                                                         docker_client):
    scorer, told, run = scorer_for(small_dataset, sandbox_image, engine_wait_s=60)
    proxy.cut()
    threading.Timer(3.0, proxy.restore).start()
    try:
        s = scorer.score(stage1, use_cache=False)
    finally:
        scorer.close()
    assert s.status == Status.VALID, s.reason
    assert any(m.startswith("waiting for the Docker engine") for m in told), told
    assert left_behind(docker_client, run) == []


def test_an_outage_while_the_containers_run_is_scored_again(proxy, small_dataset, sandbox_image, stage1,
                                                            docker_client):
    scorer, told, run = scorer_for(small_dataset, sandbox_image, engine_wait_s=60)
    runner = scorer.runner
    assert isinstance(runner, DockerRunner)
    netns_run = runner._netns_run
    armed = [True]

    def cut_during_the_queries(role: str, server: Any, argv: list[str], *args: Any, **kw: Any) -> Any:
        if role == "loadgen" and "query" in argv and armed[0]:
            armed[0] = False
            threading.Timer(0.3, proxy.cut).start()
            threading.Timer(2.5, proxy.restore).start()
        return netns_run(role, server, argv, *args, **kw)

    runner._netns_run = cut_during_the_queries  # type: ignore[method-assign]
    try:
        s = scorer.score(stage1, use_cache=False)
    finally:
        scorer.close()
    assert s.status == Status.VALID, s.reason
    assert any("scoring again" in m for m in told), told
    assert left_behind(docker_client, run) == []


def test_an_engine_away_past_the_limit_is_raised_and_nothing_is_left(proxy, small_dataset, sandbox_image, stage1,
                                                                     docker_client):
    scorer, told, run = scorer_for(small_dataset, sandbox_image, engine_wait_s=3)
    runner = scorer.runner
    assert isinstance(runner, DockerRunner)
    start = runner.start

    def cut_after_start(build: Any) -> Any:
        server = start(build)
        proxy.cut()
        return server

    runner.start = cut_after_start  # type: ignore[method-assign]
    with pytest.raises(EngineUnavailable) as e:
        scorer.score(stage1, use_cache=False)
    assert "unreachable for 3 s" in str(e.value)
    proxy.restore()
    assert len(left_behind(docker_client, run)) == 1  # the server: the engine was away when it was removed
    scorer.close()  # removes what the runner could not
    assert left_behind(docker_client, run) == []
