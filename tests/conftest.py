"""Shared fixtures for the whole test suite.

Docker: tests marked ``docker`` are skipped when no engine answers (``docker_available``). The
session-scoped ``sandbox_image`` fixture builds the sandbox image once per test session (a lookup
when it is already built); ``STAIRCASE_SANDBOX_IMAGE`` names an existing image to use instead,
``STAIRCASE_SANDBOX_BASE=pull`` builds on rust:1.95-slim-bookworm.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _own_scorer_slot(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The session's scorings take turns among themselves (and their subprocesses), not with other
    processes on the machine: a test session is not held up by a long scoring elsewhere."""
    os.environ.setdefault("STAIRCASE_SLOT_DIR", str(tmp_path_factory.mktemp("slots")))


@functools.cache
def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers a ping, else why not."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception as e:  # no SDK, no socket, no permission, engine down: all mean "skip"
        return f"no Docker engine reachable ({type(e).__name__}: {e})"[:200]
    return None


def docker_available() -> bool:
    return docker_unavailable_reason() is None


def require_docker() -> None:
    """Skip the calling test when no engine is reachable."""
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    docker_items = [item for item in items if item.get_closest_marker("docker")]
    if docker_items and (reason := docker_unavailable_reason()):
        for item in docker_items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    require_docker()
    import docker

    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    """Tag of the sandbox image, built at most once per session."""
    require_docker()
    if image := os.environ.get("STAIRCASE_SANDBOX_IMAGE"):
        return image
    from harness.sandbox.image import ensure_image

    base = os.environ.get("STAIRCASE_SANDBOX_BASE", "offline")
    assert base in ("offline", "pull"), base
    return ensure_image(REPO_ROOT, base=base).tag  # type: ignore[arg-type]
