"""The reference trajectory: base stages (folders) and tuning variants (data), in submission order.

A base stage is a folder ``reference/stageNN-<slug>`` holding the files it lays over the skeleton.
A variant ``stageNN<letter>-<slug>`` is an entry of ``reference/variants.yaml``: a base stage, knobs
(new values of ``const`` lines in ``src/db.rs``, or exact whole-line replacements in a named file)
and its submission message. Sorted by name, base stages and variants interleave into the trajectory
(stage03, stage03b, stage03c, stage04, ...). ``materialize`` writes any of them into a folder; a
knob that does not match exactly one line of its base fails, naming the variant and the knob.

``python -m harness.reference list`` prints the trajectory; ``python -m harness.reference
materialize NAME DEST`` writes a stage's files into ``DEST`` (e.g. to ``staircase score`` a variant).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.paths import REFERENCE

VARIANTS_FILE = "variants.yaml"
KNOB_FILE = "src/db.rs"  # where `consts` knobs live: the top of db.rs, by the stages' convention
NOT_STAGE_FILES = frozenset({"MESSAGE", "README.md"})
BASE_NAME = re.compile(r"stage\d+-[\w.-]+")
VARIANT_NAME = re.compile(r"stage(\d+)[a-z]-[\w.-]+")


class ReferenceError(ValueError):
    """variants.yaml is malformed, a stage is unknown, or a knob does not match exactly one line."""


@dataclass(frozen=True)
class LineKnob:
    """Replace the one line of ``file`` that is exactly ``old`` by ``new``."""

    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Stage:
    """One submission of the reference trajectory. ``base`` is None for a base stage (a folder)."""

    name: str
    message: str
    base: str | None = None
    consts: Mapping[str, str] = field(default_factory=dict)  # const name -> new value, in KNOB_FILE
    lines: tuple[LineKnob, ...] = ()

    @property
    def is_variant(self) -> bool:
        return self.base is not None

    @property
    def family(self) -> str:
        """The base stage whose code this is (itself for a base stage)."""
        return self.base or self.name


def base_message(folder: Path) -> str:
    """A base stage's MESSAGE file, else the first doc-comment line of its db.rs, else its name."""
    if (folder / "MESSAGE").is_file():
        return (folder / "MESSAGE").read_text().strip()
    db = folder / KNOB_FILE
    if db.is_file():
        for line in db.read_text().splitlines():
            if line.startswith("//!"):
                return line.removeprefix("//!").strip()
    return folder.name


def _variant(name: str, entry: Any, bases: set[str]) -> Stage:
    where = f"{VARIANTS_FILE}: {name}"
    number = VARIANT_NAME.fullmatch(name)
    if not number:
        raise ReferenceError(f"{where}: a variant is named stageNN<letter>-<slug>")
    if not isinstance(entry, dict) or set(entry) - {"base", "message", "consts", "replace"}:
        raise ReferenceError(f"{where}: expected keys base, message, consts, replace")
    base, message = entry.get("base"), entry.get("message")
    if base not in bases:
        raise ReferenceError(f"{where}: base {base!r} is not a stage folder (have {', '.join(sorted(bases))})")
    if not base.startswith(f"stage{number[1]}-"):
        # So that, sorted by name, a variant comes after its base: the tuning step starts from it.
        raise ReferenceError(f"{where}: a variant of {base} is named stage{base[5:].split('-')[0]}<letter>-<slug>")
    if not isinstance(message, str) or not message.strip():
        raise ReferenceError(f"{where}: a message (the submission's) is required")
    consts = entry.get("consts") or {}
    if not isinstance(consts, dict):
        raise ReferenceError(f"{where}: consts is a mapping NAME: VALUE")
    for const, value in consts.items():
        # A float read by YAML would lose its spelling (1.80 -> 1.8): values are written as strings.
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ReferenceError(f"{where}: const {const}: write the value as a string, e.g. \"{value}\"")
    lines = []
    for knob in entry.get("replace") or []:
        if not (isinstance(knob, dict) and set(knob) == {"file", "old", "new"}
                and all(isinstance(v, str) and "\n" not in v for v in knob.values())):
            raise ReferenceError(f"{where}: a replacement is {{file, old, new}}, one line each")
        lines.append(LineKnob(knob["file"], knob["old"], knob["new"]))
    if not consts and not lines:
        raise ReferenceError(f"{where}: no knobs (consts or replace)")
    return Stage(name=name, message=message.strip(), base=base, consts={k: str(v) for k, v in consts.items()},
                 lines=tuple(lines))


def reference_stages(root: Path = REFERENCE) -> list[Stage]:
    """Every stage of the trajectory, in submission order: base stages and variants sorted by name."""
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and p.name.startswith("stage")}
    for name in folders:
        if not BASE_NAME.fullmatch(name) or VARIANT_NAME.fullmatch(name):
            raise ReferenceError(f"{root / name}: a stage folder is stageNN-<slug>; variants live in {VARIANTS_FILE}")
    stages = {name: Stage(name=name, message=base_message(folder)) for name, folder in folders.items()}
    spec = root / VARIANTS_FILE
    data = yaml.safe_load(spec.read_text()) if spec.is_file() else None
    if not isinstance(data or {}, dict):
        raise ReferenceError(f"{spec}: a mapping of variant name -> base, message, knobs")
    for name, entry in (data or {}).items():
        if name in stages:
            raise ReferenceError(f"{VARIANTS_FILE}: {name} is also a stage folder")
        stages[name] = _variant(name, entry, set(folders))
    return [stages[name] for name in sorted(stages)]


def seeded_trajectory(seed: int, root: Path = REFERENCE) -> list[Stage]:
    """The stages a scripted run with this seed submits, in order. Seed 0 is the reference trajectory
    itself. Any other seed draws another path through the same stages: each base stage after the
    first is skipped with probability 1/4 (never the last), each variant tried with probability 1/2,
    and a family's variants tried in a shuffled order after their base (or, its base skipped, on
    their own: the episode then writes the base's files first). File sets only grow along the base
    stages, so every path is a series of well-formed submissions. Deterministic in ``seed``."""
    stages = reference_stages(root)
    if seed == 0:
        return stages
    import random

    rng = random.Random(seed)
    bases = [s for s in stages if not s.is_variant]
    out: list[Stage] = []
    for i, base in enumerate(bases):
        if i == 0 or i == len(bases) - 1 or rng.random() >= 0.25:
            out.append(base)
        variants = [s for s in stages if s.base == base.name and rng.random() < 0.5]
        rng.shuffle(variants)
        out += variants
    return out


def get_stage(name: str, root: Path = REFERENCE) -> Stage:
    for stage in reference_stages(root):
        if stage.name == name:
            return stage
    raise ReferenceError(f"no reference stage {name!r} under {root}")


def folder_files(folder: Path) -> dict[str, str]:
    """A base stage's files (relative path -> text), as laid over the skeleton."""
    return {p.relative_to(folder).as_posix(): p.read_bytes().decode()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in NOT_STAGE_FILES}


def _replace_once(stage: str, knob: str, file: str, text: str, matches: Any, new_line: Any) -> str:
    """Replace the one line of ``text`` for which ``matches(line)``; fail unless there is exactly one."""
    lines = text.split("\n")
    hits = [i for i, line in enumerate(lines) if matches(line)]
    if len(hits) != 1:
        raise ReferenceError(f"variant {stage}: knob {knob} matches {len(hits)} lines of {file}, not exactly one")
    i = hits[0]
    new = new_line(lines[i])
    if new == lines[i]:
        raise ReferenceError(f"variant {stage}: knob {knob} changes nothing in {file} ({lines[i]!r})")
    lines[i] = new
    return "\n".join(lines)


def const_pattern(name: str) -> re.Pattern[str]:
    """``const NAME: TYPE = VALUE;`` on one line, at any depth (so a second definition of the name is
    ambiguous, not ignored), optionally ``pub``, a trailing comment kept: groups head, value, tail."""
    return re.compile(rf"(?P<head>\s*(?:pub(?:\([^)]*\))?\s+)?const\s+{re.escape(name)}\s*:[^=]+=\s*)"
                      rf"(?P<value>[^;]+?)(?P<tail>\s*;.*)")


def apply_knobs(stage: Stage, files: dict[str, str]) -> dict[str, str]:
    """The base's ``files`` with ``stage``'s knobs applied, each to exactly one line."""
    out = dict(files)
    for const, value in stage.consts.items():
        if KNOB_FILE not in out:
            raise ReferenceError(f"variant {stage.name}: const {const}: its base has no {KNOB_FILE}")
        pattern = const_pattern(const)
        out[KNOB_FILE] = _replace_once(
            stage.name, f"const {const}", KNOB_FILE, out[KNOB_FILE], lambda line, p=pattern: p.fullmatch(line),
            lambda line, p=pattern, v=value: p.sub(lambda m: m["head"] + v + m["tail"], line, count=1))
    for knob in stage.lines:
        if knob.file not in out:
            raise ReferenceError(f"variant {stage.name}: replacement in {knob.file}: its base has no such file")
        out[knob.file] = _replace_once(stage.name, f"line {knob.old!r}", knob.file, out[knob.file],
                                       lambda line, k=knob: line == k.old, lambda _line, k=knob: k.new)
    return out


def stage_files(stage: Stage | str, root: Path = REFERENCE) -> dict[str, str]:
    """What ``stage`` lays over the skeleton (relative path -> text): its folder, or its base with knobs."""
    if isinstance(stage, str):
        stage = get_stage(stage, root)
    files = folder_files(root / stage.family)
    return apply_knobs(stage, files) if stage.is_variant else files


def materialize(stage: Stage | str, dest: Path, root: Path = REFERENCE) -> Path:
    """Write ``stage``'s files into ``dest`` (over what is there; a file already right is left untouched,
    so its mtime stays and cargo does not rebuild it). Returns ``dest``."""
    for rel, text in stage_files(stage, root).items():
        target = dest / rel
        data = text.encode()
        if target.is_file() and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def named_stage(path: Path, root: Path = REFERENCE) -> Stage | None:
    """The reference stage ``path`` names when it is no folder: a bare stage name or ``reference/NAME``."""
    path = Path(path)
    if path.is_dir() or not (len(path.parts) == 1 or path.parent.resolve() == root.resolve()):
        return None
    return next((s for s in reference_stages(root) if s.name == path.name), None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.reference", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the stages in trajectory order")
    mat = sub.add_parser("materialize", help="write a stage's files into a folder")
    mat.add_argument("name")
    mat.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for s in reference_stages():
                print(f"{s.name}\t{'variant of ' + s.base if s.base else 'stage folder'}\t{s.message}")
        else:
            print(materialize(args.name, args.dest))
    except ReferenceError as e:
        parser.exit(1, f"error: {e}\n")


if __name__ == "__main__":
    main()
