"""An interrupted scoring in real containers: a signal handler raises in the middle of a container
wait, and nothing labelled with the scoring's run is left behind."""

from __future__ import annotations

import signal
import uuid
from typing import Any

import pytest

from harness.scorer.docker_runner import SCORER_LABEL, DockerRunner
from harness.scorer.scorer import BenchmarkScorer
from tests.scorer.conftest import quick_scorer_config
from tests.scorer.submissions import write_variant

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class Interrupted(Exception):
    """What the run loop's SIGTERM handler raises."""


def test_an_interrupt_mid_scoring_leaves_no_container(small_dataset, sandbox_image, docker_client, tmp_path):
    run = f"test-{uuid.uuid4().hex[:10]}"
    label = [f"{SCORER_LABEL}=1", f"staircase.run={run}"]
    cfg = quick_scorer_config(image=sandbox_image)
    runner = DockerRunner(cfg, build_cache="tests-misbehaving", labels={"staircase.run": run})
    scorer = BenchmarkScorer(cfg, small_dataset, runner)
    seen: list[list[Any]] = []
    netns_run = runner._netns_run

    def probe_then_interrupt(role: str, *args: Any, **kw: Any) -> Any:
        if role == "probe":  # the server never accepts: the probe waits its full limit
            signal.setitimer(signal.ITIMER_REAL, 1.5)
        return netns_run(role, *args, **kw)

    def on_alarm(signum: int, frame: Any) -> None:
        seen.append(docker_client.containers.list(all=True, filters={"label": label}))
        raise Interrupted("SIGTERM")

    runner._netns_run = probe_then_interrupt  # type: ignore[method-assign]
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        with pytest.raises(Interrupted):
            scorer.score(write_variant("never_accepts", tmp_path / "na"), use_cache=False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        scorer.close()
    # At the interrupt the server and the probe ran, labelled; afterwards nothing is left.
    assert len(seen) == 1 and len(seen[0]) == 2, seen
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
