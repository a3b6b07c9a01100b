"""The sweep file: which run configs, which overrides (a matrix), which seeds, how many runs at once.

```yaml
name: demo-sweep
runs:                          # one entry per base config (paths relative to this file)
  - config: demo.yaml
    name: demo                 # the group's name (default: the file's stem)
    set: [budget.max_iterations=4]
matrix:                        # every combination is a group; applied to every entry of runs
  scorer.passes: [2, 3]
seeds: [0, 1, 2]               # every group runs once per seed (the run's top-level `seed`)
set: [scorer.max_queries=500]  # applied to every run
concurrency: null              # runs at once (null: as many as the machine's CPUs allow)
```

Planning resolves every run's config (file + ``set`` + matrix + seed) before anything starts, so a
wrong key fails at once, naming the sweep file, the entry and the field.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from harness.config import ConfigError, RunConfig, Strict, apply_overrides, load_config, load_yaml, validate_model

SWEEP_SET_PREFIX = "sweep."  # `--set sweep.seeds=[0,1]` changes the sweep file; other keys every run


class RunEntry(Strict):
    config: Path = Field(description="a run config, relative to the sweep file")
    name: str | None = Field(None, description="the group's name (default: the config file's stem)")
    set: list[str] = Field(default_factory=list, description="overrides for this entry's runs")


class RayOptions(Strict):
    address: str | None = Field(None, description="HOST:PORT of the cluster's head; None: start one here")
    # Each node keeps its runs in <node_dir>/staircase-node-<node id> (no shared filesystem needed);
    # None: under the node's temporary directory.
    node_dir: Path | None = None
    # The custom resource a node offers per run it may hold at once: give it to the nodes with Docker
    # (`ray start --resources '{"staircase_runs": 1}'`); each run's task takes one.
    resource: str = "staircase_runs"
    check_image: bool = Field(True, description="each node has the head's sandbox image tag (built offline)")
    check_dataset: bool = Field(True, description="each node's dataset matches the head's manifest sha256")
    max_moves: int = Field(2, ge=0, description="how often one run whose node died is resumed on another")


class SweepSpec(Strict):
    name: str = "sweep"
    runs: list[RunEntry] = Field(min_length=1)
    matrix: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    set: list[str] = Field(default_factory=list)
    concurrency: int | None = Field(None, gt=0)
    executor: Literal["local", "ray"] = "local"
    # The command that runs one run: `CMD run CONFIG --run-dir DIR --json` and `CMD resume DIR --json`
    # (None: this Python's `staircase`). Tests put a stand-in here.
    run_command: list[str] | None = None
    ray: RayOptions = Field(default_factory=RayOptions)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError(f"seeds must be distinct and >= 0, not {v}")
        return v

    @field_validator("matrix")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"matrix.{key}: at least one value")
        return v


class PlannedRun(BaseModel):
    """One run of the sweep: its id (its folder under runs/), its group (configuration) and seed."""

    run_id: str
    group: str
    seed: int
    sets: list[str]


def default_concurrency(cpus: int | None = None, scorer_cpus: int = 2, cpus_per_run: int = 2) -> int:
    """Runs at once on this machine: the CPUs left after the scorer's reserved ones, one run per
    ``cpus_per_run`` of them, at least 1 (on 2 cores: 1)."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, (cpus - scorer_cpus) // cpus_per_run)


def load_sweep(path: Path, overrides: list[str] | None = None) -> tuple[SweepSpec, list[str]]:
    """The sweep file with ``--set sweep.KEY=...`` applied, and the other overrides (for every run)."""
    data = load_yaml(Path(path))
    sweep_sets = [o.removeprefix(SWEEP_SET_PREFIX) for o in overrides or [] if o.startswith(SWEEP_SET_PREFIX)]
    run_sets = [o for o in overrides or [] if not o.startswith(SWEEP_SET_PREFIX)]
    source = str(path) + (" with --set " + " ".join(sweep_sets) if sweep_sets else "")
    spec = validate_model(SweepSpec, apply_overrides(data, sweep_sets), source)
    base = Path(path).parent
    entries = [e.model_copy(update={"config": _under(base, e.config)}) for e in spec.runs]
    spec = spec.model_copy(update={"runs": entries})
    return spec, run_sets


def _under(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else base / p


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")[:80] or "run"


def plan(spec: SweepSpec, run_sets: list[str] | None = None) -> list[tuple[PlannedRun, RunConfig]]:
    """Every run of the sweep with its resolved config (seed and name set), groups in file order,
    seeds within each group."""
    keys = list(spec.matrix)
    out: list[tuple[PlannedRun, RunConfig]] = []
    groups: dict[str, int] = {}
    for i, entry in enumerate(spec.runs):
        for combo in itertools.product(*(spec.matrix[k] for k in keys)):
            matrix_sets = [f"{k}={_yaml_value(v)}" for k, v in zip(keys, combo, strict=True)]
            label = ",".join(f"{k.split('.')[-1]}={_yaml_value(v)}" for k, v in zip(keys, combo, strict=True))
            group = slug((entry.name or entry.config.stem) + (f"+{label}" if label else ""))
            if group in groups:
                raise ConfigError(f"runs[{i}]: group {group!r} is also runs[{groups[group]}]'s: give the entries "
                                  f"distinct names")
            groups[group] = i
            for seed in spec.seeds:
                run_id = f"{group}-s{seed}"
                sets = [*spec.set, *entry.set, *matrix_sets, *(run_sets or []), f"seed={seed}", f"name={run_id}"]
                try:
                    cfg = load_config(entry.config, sets)
                except ConfigError as e:
                    raise ConfigError(f"sweep runs[{i}] ({group}, seed {seed}): {e}") from None
                out.append((PlannedRun(run_id=run_id, group=group, seed=seed, sets=sets), cfg))
    return out


def _yaml_value(v: Any) -> str:
    import json

    return v if isinstance(v, str) else json.dumps(v)
