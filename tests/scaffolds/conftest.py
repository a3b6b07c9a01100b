"""Fixtures of the scaffold tests: the scaffold image (built once per session on the sandbox image,
a lookup when its tag exists) and a fake OpenAI-compatible provider."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.gateway.fakes import FakeOpenAI


@pytest.fixture(scope="session")
def scaffold_image(sandbox_image: str) -> str:
    if image := os.environ.get("STAIRCASE_SCAFFOLD_IMAGE"):
        return image
    from harness.agent.scaffolds.image import ensure_scaffold_image
    from harness.config import ScaffoldConfig

    return ensure_scaffold_image(sandbox_image, mini_swe_agent=ScaffoldConfig().mini_swe_agent).tag


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()
