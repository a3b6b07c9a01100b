"""The agent's sandbox: the Protocol and its types (cheap to import), the Docker backend and the
image builder (imported on first use, since they pull in the Docker SDK)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.sandbox.base import (
    ExecResult,
    FileTooLarge,
    Sandbox,
    SandboxConfig,
    SandboxDied,
    SandboxError,
)

if TYPE_CHECKING:
    from harness.sandbox.docker_backend import DockerSandbox, claim_workspace
    from harness.sandbox.image import ImageBuild, build_image, ensure_image, find_image
    from harness.sandbox.vendor import VendoredCrate

_LAZY = {
    "DockerSandbox": "harness.sandbox.docker_backend",
    "claim_workspace": "harness.sandbox.docker_backend",
    "ImageBuild": "harness.sandbox.image",
    "build_image": "harness.sandbox.image",
    "ensure_image": "harness.sandbox.image",
    "find_image": "harness.sandbox.image",
    "VendoredCrate": "harness.sandbox.vendor",
}

__all__ = [
    "DockerSandbox",
    "ExecResult",
    "FileTooLarge",
    "ImageBuild",
    "Sandbox",
    "SandboxConfig",
    "SandboxDied",
    "SandboxError",
    "VendoredCrate",
    "build_image",
    "claim_workspace",
    "ensure_image",
    "find_image",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness.sandbox' has no attribute {name!r}")
