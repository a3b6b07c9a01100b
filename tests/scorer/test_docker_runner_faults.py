"""The container runner on a fake Docker engine: every container hardened and labelled, removed
whatever ends its phase (an interrupt included), an unreachable engine waited for and then raised,
an outage while containers ran voiding the scoring. No Docker needed."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
import requests.exceptions
import urllib3.exceptions

from harness.docker_util import EngineUnavailable, call_docker
from harness.scorer.docker_runner import SCORER_LABEL, DockerRunner, EngineInterrupted
from harness.scorer.runner import BuildOutcome
from tests.scorer.conftest import quick_scorer_config


class Interrupted(Exception):
    """What a signal handler of the run loop raises in the middle of a scoring."""


def engine_gone() -> Exception:
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", FileNotFoundError(2, "No such file or directory")))


class FakeContainer:
    def __init__(self, engine: FakeEngine, name: str, kwargs: dict[str, Any]) -> None:
        self.engine, self.name, self.kwargs = engine, name, kwargs
        self.id = f"id-{name}"
        self.attrs: dict[str, Any] = {"State": {"Status": "created"}}

    def start(self) -> None:
        self.engine.act("start")
        self.attrs["State"] = {"Status": "running"}

    def wait(self, timeout: float) -> dict[str, int]:
        self.engine.act("wait")
        return {"StatusCode": 0}

    def logs(self, **_: Any) -> bytes:
        self.engine.act("logs")
        return b"log"

    def kill(self) -> None:
        pass

    def reload(self) -> None:
        self.engine.act("reload")

    def remove(self, force: bool = False) -> None:
        self.engine.act("remove")
        self.engine.containers.live.pop(self.name, None)


class FakeContainers:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.live: dict[str, FakeContainer] = {}

    def create(self, image: str, command: list[str], name: str, **kwargs: Any) -> FakeContainer:
        self.engine.act("create")
        self.live[name] = FakeContainer(self.engine, name, kwargs)
        self.engine.act("created")  # a failure after the engine created it
        return self.live[name]


class FakeImage:
    id = "sha256:fake"


class FakeImages:
    def get(self, tag: str) -> FakeImage:
        return FakeImage()


class FakeApi:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def remove_container(self, name: str, force: bool = False) -> None:
        if self.engine.containers.live.pop(name, None) is None:
            raise docker.errors.NotFound("no such container", response=_response(404))


class FakeEngine:
    """A Docker client whose calls can fail: ``script[action]`` is a list of exceptions raised by
    the next calls of that action."""

    def __init__(self) -> None:
        self.containers = FakeContainers(self)
        self.images = FakeImages()
        self.api = FakeApi(self)
        self.script: dict[str, list[BaseException]] = {}
        self.closed = False

    def act(self, action: str) -> None:
        failures = self.script.get(action)
        if failures:
            raise failures.pop(0)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def engine(monkeypatch):
    fake = FakeEngine()
    monkeypatch.setattr(docker, "from_env", lambda **_: fake)
    no_sleep = functools.partial(call_docker, sleep=lambda _s: None)
    monkeypatch.setattr("harness.scorer.docker_runner.call_docker", no_sleep)
    return fake


def make_runner(engine_wait_s: float = 60.0, **kw: Any) -> DockerRunner:
    return DockerRunner(quick_scorer_config(image="fake", engine_wait_s=engine_wait_s), **kw)


def build_outcome(tmp_path: Path) -> BuildOutcome:
    return BuildOutcome(ok=True, timed_out=False, seconds=0.0, log_tail="", binary=tmp_path / "server-bin")


def test_containers_are_hardened_and_labelled(engine, tmp_path):
    runner = make_runner(labels={"staircase.run": "r1"})
    server = runner.start(build_outcome(tmp_path))
    kw = engine.containers.live[server.container.name].kwargs
    assert kw["labels"] == {SCORER_LABEL: "1", "staircase.run": "r1"}
    assert kw["cap_drop"] == ["ALL"] and kw["security_opt"] == ["no-new-privileges"]
    assert kw["network_mode"] == "none" and kw["log_config"]["type"] == "json-file"
    run = runner.loadgen(server, ["query"], {}, tmp_path, 10)
    assert run.exit_code == 0
    assert list(engine.containers.live) == [server.container.name]  # the generator's container is gone
    runner.close()
    assert engine.containers.live == {} and engine.closed


def test_an_interrupt_while_waiting_removes_the_container(engine, tmp_path):
    runner = make_runner()
    server = runner.start(build_outcome(tmp_path))
    engine.script["wait"] = [Interrupted("SIGTERM")]
    with pytest.raises(Interrupted):
        runner.loadgen(server, ["query"], {}, tmp_path, 10)
    assert list(engine.containers.live) == [server.container.name]
    server.stop()
    assert engine.containers.live == {}


def test_a_start_that_fails_leaves_no_container(engine, tmp_path):
    runner = make_runner()
    engine.script["start"] = [docker.errors.APIError("bad", response=_response(400))]
    with pytest.raises(docker.errors.APIError):
        runner.start(build_outcome(tmp_path))
    assert engine.containers.live == {}


def test_an_engine_down_past_the_limit_raises(engine, tmp_path):
    runner = make_runner(engine_wait_s=5)
    engine.script["create"] = [engine_gone()] * 50
    told: list[str] = []
    runner.on_wait = told.append
    with pytest.raises(EngineUnavailable) as e:
        runner.start(build_outcome(tmp_path))
    assert not isinstance(e.value, EngineInterrupted) and told
    assert told[0].startswith("waiting for the Docker engine (attempt 1,")


def test_an_engine_that_comes_back_before_anything_ran_is_waited_for(engine, tmp_path):
    runner = make_runner()
    engine.script["create"] = [engine_gone(), engine_gone()]
    server = runner.start(build_outcome(tmp_path))
    assert server.alive()


def test_an_outage_while_containers_ran_voids_the_scoring(engine, tmp_path):
    runner = make_runner()
    server = runner.start(build_outcome(tmp_path))
    engine.script["wait"] = [engine_gone()]
    with pytest.raises(EngineInterrupted):
        runner.loadgen(server, ["query"], {}, tmp_path, 10)
    assert list(engine.containers.live) == [server.container.name]  # the generator's is removed
    runner.close()
    assert engine.containers.live == {}


def _response(status: int) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.url = "http+docker://localhost/containers"
    return r


def test_a_create_interrupted_after_the_engine_made_it_leaves_no_container(engine, tmp_path):
    runner = make_runner()
    engine.script["created"] = [Interrupted("SIGTERM")]
    with pytest.raises(Interrupted):
        runner.start(build_outcome(tmp_path))
    assert engine.containers.live == {}
