"""``staircase sandbox``: build and inspect the sandbox image."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from harness.cli_options import Json
from harness.console import emit_json, fail, log
from harness.paths import REPO_ROOT

app = typer.Typer(help="The Docker sandbox image (built offline).", no_args_is_help=True)

Base = Annotated[
    str,
    typer.Option(
        "--base",
        help="offline: Debian rootfs (mmdebstrap) + the host's Rust toolchain, no registry needed. "
        "pull: FROM rust:1.95-slim-bookworm.",
    ),
]


def _base(value: str) -> Literal["offline", "pull"]:
    if value not in ("offline", "pull"):
        fail(f"--base must be offline or pull, not {value!r}")
    return value  # type: ignore[return-value]


def _summary(build: object, verb: str) -> None:
    from harness.sandbox.image import ImageBuild

    assert isinstance(build, ImageBuild)
    direct = sorted(c.name for c in build.vendored_crates if c.direct)
    log(
        f"{verb} {build.tag} ({build.image_id[7:19]}) on {build.base_image}: "
        f"{build.size_bytes / 1e9:.2f} GB, {build.seconds:.1f} s, "
        f"{len(build.vendored_crates)} vendored crates ({len(direct)} direct)"
    )


@app.command("build")
def build(
    base: Base = "offline",
    force: Annotated[
        bool, typer.Option(help="Rebuild the base and all layers (the rootfs tarball stays cached).")
    ] = False,
    json: Json = False,
) -> None:
    """Build the sandbox image (a lookup when its inputs are unchanged)."""
    from harness.sandbox.image import build_image

    try:
        result = build_image(REPO_ROOT, base=_base(base), force=force, progress=log)
    except Exception as e:  # every build failure is reported the same way, without a traceback
        fail(f"{type(e).__name__}: {e}")
    _summary(result, "found" if result.cached else "built")
    if json:
        emit_json(result)


@app.command("info")
def info(base: Base = "offline", json: Json = False) -> None:
    """Show the image the current inputs map to, and whether it is built."""
    from harness.sandbox.image import find_image, image_tag

    try:
        tag = image_tag(REPO_ROOT, _base(base))
        result = find_image(REPO_ROOT, _base(base))
    except Exception as e:
        fail(f"{type(e).__name__}: {e}")
    if result is None:
        if json:
            emit_json({"tag": tag, "built": False})
        else:
            log(f"{tag} is not built: run `staircase sandbox build`")
        return
    if json:
        emit_json({**result.model_dump(mode="json"), "built": True})
    else:
        _summary(result, "built:")
        typer.echo(" ".join(f"{c.name}@{'/'.join(c.versions)}" for c in result.vendored_crates if c.direct))


if __name__ == "__main__":
    app()
