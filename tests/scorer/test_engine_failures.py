"""What the scorer does when its machinery fails rather than the submission: an unreachable Docker
engine is raised (never a score), an interrupt leaves no server behind. A fake runner: no Docker,
no cargo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.docker_util import EngineUnavailable
from harness.scorer.record import Hardware, Status
from harness.scorer.runner import BuildOutcome, LoadgenRun, MeasurementVoid
from harness.scorer.scorer import BenchmarkScorer
from tests.scorer.conftest import quick_scorer_config
from tests.scorer.simulated import SimulatedServer
from tests.scorer.submissions import write_stage1


class Interrupted(Exception):
    """What a signal handler of the run loop raises in the middle of a scoring."""


class FakeServer(SimulatedServer):
    """A server that counts its stops."""

    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1


class FakeRunner:
    """Builds and starts at once; ``fail_in`` names the phase that raises ``error`` (the first
    ``times`` times it runs)."""

    name = "fake"

    def __init__(self, fail_in: str, error: BaseException, times: int = 1_000) -> None:
        self.fail_in, self.error, self.times = fail_in, error, times
        self.servers: list[FakeServer] = []
        self.closed = False

    def hardware(self) -> Hardware:
        return Hardware(cpu_model="fake", host_cpus=2, server_cpus="0", loadgen_cpus="1", memory_limit="1g",
                        runner=self.name)

    def build(self, src: Path, timeout_s: float) -> BuildOutcome:
        if self.fail_in == "build":
            self._fail()
        return BuildOutcome(ok=True, timed_out=False, seconds=0.0, log_tail="", binary=src / "server-bin")

    def start(self, build: BuildOutcome) -> FakeServer:
        self.servers.append(FakeServer())
        return self.servers[-1]

    def wait_accepting(self, server: Any, timeout_s: float) -> bool:
        return True

    def loadgen(self, server: Any, args: list[str], inputs: dict[str, Path], out_dir: Path,
                timeout_s: float) -> LoadgenRun:
        if self.fail_in == args[0]:  # "load" or "query"
            self._fail()
        if args[0] == "load" and self.fail_in == "query":
            (out_dir / "stats.json").write_text('{"ok": true}')
        return LoadgenRun(exit_code=0, timed_out=False, output="")

    def close(self) -> None:
        self.closed = True

    def _fail(self) -> None:
        if self.times > 0:
            self.times -= 1
            raise self.error


@pytest.fixture(scope="module")
def submission(tmp_path_factory):
    return write_stage1(tmp_path_factory.mktemp("sub") / "stage1")


@pytest.mark.parametrize("phase", ["build", "load", "query"])
def test_an_unavailable_engine_is_raised_not_scored(phase, submission, small_dataset, tmp_path):
    runner = FakeRunner(phase, EngineUnavailable("the Docker engine was unreachable for 600 s"))
    scorer = BenchmarkScorer(quick_scorer_config(), small_dataset, runner, cache_dir=tmp_path)
    with pytest.raises(EngineUnavailable):
        scorer.score(submission)
    assert all(s.stopped == 1 for s in runner.servers)
    assert list(tmp_path.iterdir()) == []  # nothing cached
    scorer.close()
    assert runner.closed


@pytest.mark.parametrize("error", [Interrupted("SIGTERM"), KeyboardInterrupt()])
def test_an_interrupt_mid_scoring_stops_the_server(error, submission, small_dataset):
    runner = FakeRunner("query", error)
    with pytest.raises(type(error)):
        BenchmarkScorer(quick_scorer_config(), small_dataset, runner).score(submission)
    assert len(runner.servers) == 1 and runner.servers[0].stopped == 1


def test_a_verdict_stops_the_server_once(submission, small_dataset):
    runner = FakeRunner("none", RuntimeError())
    s = BenchmarkScorer(quick_scorer_config(), small_dataset, runner).score(submission)
    assert s.status == Status.LOAD_FAILED and runner.servers[0].stopped == 1


def test_the_engine_wait_is_no_setting_of_the_measurement(small_dataset):
    a = BenchmarkScorer(quick_scorer_config(engine_wait_s=5), small_dataset, FakeRunner("none", RuntimeError()))
    b = BenchmarkScorer(quick_scorer_config(engine_wait_s=900), small_dataset, FakeRunner("none", RuntimeError()))
    c = BenchmarkScorer(quick_scorer_config(passes=4), small_dataset, FakeRunner("none", RuntimeError()))
    assert a.settings_hash == b.settings_hash != c.settings_hash


def test_a_voided_scoring_is_done_again(submission, small_dataset, tmp_path):
    runner = FakeRunner("query", MeasurementVoid("the engine went away"), times=1)
    s = BenchmarkScorer(quick_scorer_config(), small_dataset, runner, cache_dir=tmp_path).score(submission)
    assert s.status == Status.ERROR and "wrote no statistics" in s.reason  # the second attempt's verdict
    assert [srv.stopped for srv in runner.servers] == [1, 1]


def test_a_scoring_voided_every_time_is_raised(submission, small_dataset):
    runner = FakeRunner("query", MeasurementVoid("the engine went away"))
    with pytest.raises(MeasurementVoid):
        BenchmarkScorer(quick_scorer_config(), small_dataset, runner).score(submission)
    assert [srv.stopped for srv in runner.servers] == [1, 1, 1]
