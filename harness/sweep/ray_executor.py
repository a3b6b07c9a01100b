"""The Ray executor: each run a Ray task (``max_retries=0``: the sweep, not Ray, decides to resume)
on a node that offers the ``staircase_runs`` custom resource (give it to the nodes with Docker; its
amount is how many runs the node holds at once). No shared filesystem is needed:

- A node keeps its runs in its own folder (``<ray.node_dir>/staircase-node-<node id>``, by default
  under the node's temporary directory) and runs each as ``staircase run`` / ``resume`` there, like the local executor.
- The task is a generator: at every iteration's end (and at the run's exit) it sends the head a
  compressed copy of the run directory (the ledger first, then the workspace history, scores,
  iterations), which the sweep writes over ``SWEEP/runs/<run>`` on the head. So the head always
  holds a current, self-consistent copy of every run.
- When a node dies, its task's generator fails on the head: the run is recorded ``lost`` and
  launched again, as ``resume``, from the head's copy, on whichever node has room (at most
  ``ray.max_moves`` times per sweep invocation). The iteration the node was in is redone; nothing
  the head had is lost or done twice.
- Before a run starts on a node, the node proves it has the same sandbox image (``ensure_image``
  builds it there offline by the same command; its content-hash tag must equal the head's) and the
  same dataset (its manifest's sha256 of every file must equal the head's; a generated set missing
  there is generated from the same parameters).
- Fair timing: each node's scorings take turns on that node's scorer slot, a machine-wide lock
  (:mod:`harness.scorer.slot`); the cluster's resource only bounds how many runs a node holds.
"""

from __future__ import annotations

import io
import logging
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from harness.events import IterationEnd, RunEnd, Stopped
from harness.ledger import EVENTS, LOCK, EventTail
from harness.paths import REPO_ROOT
from harness.sweep.local import default_run_command, launch, run_argv
from harness.sweep.record import RunCopy, RunLaunch
from harness.sweep.spec import SweepSpec
from harness.sweep.sweep import Job, Sweep

# -- copies of a run directory ----------------------------------------------------------------------


def pack_run(run_dir: Path) -> bytes:
    """A gzipped tar of a run directory, its ledger first (so that everything the ledger names is
    in the copy: the workspace history and the files are written before their events), its lock
    and temporary files left out."""
    buf = io.BytesIO()
    run_dir = Path(run_dir)
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=3) as tar:
        if (run_dir / EVENTS).is_file():
            tar.add(run_dir / EVENTS, arcname=EVENTS)
        for p in sorted(run_dir.rglob("*")):
            rel = p.relative_to(run_dir)
            if rel.as_posix() in (EVENTS, LOCK) or p.name.endswith(".tmp") or p.is_dir() and not p.is_symlink():
                continue
            try:
                tar.add(p, arcname=rel.as_posix(), recursive=False)
            except FileNotFoundError:  # removed while we packed (a temporary file)
                continue
    return buf.getvalue()


def unpack_run(data: bytes, run_dir: Path) -> None:
    """Replace ``run_dir`` by the packed copy: unpacked beside it, then swapped in by renames."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    incoming = run_dir.with_name(f".{run_dir.name}.incoming")
    old = run_dir.with_name(f".{run_dir.name}.old")
    for d in (incoming, old):
        shutil.rmtree(d, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(incoming, filter="data")
    if run_dir.exists():
        run_dir.rename(old)
    incoming.rename(run_dir)
    shutil.rmtree(old, ignore_errors=True)


# -- what a node checks before it takes a run -----------------------------------------------------------


def requirements(cfg_text: str, spec: SweepSpec) -> dict[str, Any]:
    """What every node must have for this run, as the head sees it: the image tag and the dataset's
    manifest checksums."""
    import yaml

    from harness.config import RunConfig
    from harness.datasets.store import DatasetStore

    cfg = RunConfig.model_validate(yaml.safe_load(cfg_text))
    req: dict[str, Any] = {"dataset": None, "image": None}
    if spec.ray.check_dataset:
        ds = DatasetStore(cfg.dataset.data_dir).get(cfg.dataset.name)
        req["dataset"] = {"name": ds.manifest.name, "data_dir": str(cfg.dataset.data_dir or ""),
                          "kind": ds.manifest.kind, "source": ds.manifest.source,
                          "sha256": {role: f.sha256 for role, f in ds.manifest.files.items()}}
    if spec.ray.check_image:
        if cfg.sandbox.image:
            req["image"] = cfg.sandbox.image
        else:
            from harness.sandbox.image import image_tag

            req["image"] = image_tag(REPO_ROOT)
    return req


def check_node(req: dict[str, Any]) -> list[str]:
    """What this node lacks of ``req`` (empty: it can take the run). A generated dataset missing here
    is generated from the head's parameters; the sandbox image is built offline when missing."""
    problems = []
    if ds := req.get("dataset"):
        from harness.datasets.sources import generate_dataset
        from harness.datasets.store import DatasetStore

        store = DatasetStore(Path(ds["data_dir"]) if ds["data_dir"] else None)
        if not store.exists(ds["name"]) and ds["kind"] == "generated":
            src = ds["source"]
            generate_dataset(store, ds["name"], n=src["n"], queries=src["queries"], dev_queries=src["dev_queries"],
                             dim=src["dim"], seed=src["seed"])
        if not store.exists(ds["name"]):
            problems.append(f"dataset {ds['name']} is missing on this node (copy it there or fetch it)")
        else:
            mine = {role: f.sha256 for role, f in store.get(ds["name"]).manifest.files.items()}
            if mine != ds["sha256"]:
                problems.append(f"dataset {ds['name']} differs from the head's (manifest sha256 of "
                                f"{sorted(k for k in ds['sha256'] if mine.get(k) != ds['sha256'][k])})")
    if image := req.get("image"):
        from harness.sandbox.image import ensure_image

        tag = ensure_image(REPO_ROOT).tag
        if tag != image:
            problems.append(f"this node builds sandbox image {tag}, the head {image}: the repositories differ")
    return problems


# -- the task ------------------------------------------------------------------------------------------


def node_root(node_id: str, node_dir: str | None) -> Path:
    """A node's own folder: one per node even where two nodes share a disk (a loopback cluster)."""
    return Path(node_dir or tempfile.gettempdir()) / f"staircase-node-{node_id[:12]}"


def run_on_node(run_id: str, action: str, cfg_text: str, snapshot: bytes | None, prefix: list[str] | None,
                node_dir: str | None, req: dict[str, Any], poll_s: float = 0.5) -> Iterator[dict[str, Any]]:
    """The body of a run's Ray task (a generator): where it was placed, the copies, how it ended."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    yield {"kind": "placed", "node": node, "host": platform.node(), "pid": os.getpid()}
    problems = check_node(req)
    if problems:
        yield {"kind": "exit", "code": None, "detail": "; ".join(problems)}
        return
    root = node_root(node, node_dir)
    run_dir, cfg_path = root / "runs" / run_id, root / "configs" / f"{run_id}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(cfg_text)
    if snapshot is not None:
        unpack_run(snapshot, run_dir)
    elif run_dir.exists():  # a start: whatever an earlier attempt left here is not the run
        shutil.rmtree(run_dir)
    job = Job(run=None, action=action, config_path=cfg_path, run_dir=run_dir,  # type: ignore[arg-type]
              log_path=root / "logs" / f"{run_id}.log")
    proc = launch(run_argv(prefix or default_run_command(), job), job.log_path, cwd=REPO_ROOT)
    tail, iterations = EventTail(run_dir), 0
    try:
        while proc.poll() is None:
            time.sleep(poll_s)
            events = tail.read()
            iterations += sum(isinstance(e, IterationEnd) for e in events)
            if any(isinstance(e, IterationEnd | RunEnd | Stopped) for e in events):
                yield {"kind": "copy", "data": pack_run(run_dir), "iterations": iterations}
    finally:
        if proc.poll() is None:  # cancelled: the run stops resumably
            proc.terminate()
            proc.wait()
    iterations += sum(isinstance(e, IterationEnd) for e in tail.read())
    yield {"kind": "copy", "data": pack_run(run_dir), "iterations": iterations}
    log = job.log_path.read_bytes()[-1500:].decode(errors="replace") if job.log_path.is_file() else ""
    yield {"kind": "exit", "code": proc.returncode, "detail": log}


# -- the head's side -------------------------------------------------------------------------------------


class RayExecutor:
    name: Literal["ray"] = "ray"

    def __init__(self, spec: SweepSpec, address: str | None = None) -> None:
        self.spec, self.address = spec, address
        self.stopping = threading.Event()  # set: a lost run is not moved again

    def run(self, jobs: list[Job], sweep: Sweep) -> None:
        # Ray's own messages (a node's death, its workers' logs) go to the process's stdout: while
        # Ray is up, stdout is stderr, so that `--json` still prints one JSON value there.
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            self._run(jobs, sweep)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)

    def _run(self, jobs: list[Job], sweep: Sweep) -> None:
        import ray

        if self.address:
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        else:  # a one-machine cluster here
            ray.init(resources={self.spec.ray.resource: self.spec.concurrency or 1}, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False)
        task = ray.remote(run_on_node)
        try:
            with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), self.spec.concurrency or len(jobs)))) as pool:
                for f in [pool.submit(self._one, task, job, sweep) for job in jobs]:
                    f.result()
        finally:
            ray.shutdown()

    def _one(self, task: Any, job: Job, sweep: Sweep) -> None:
        """Launch one run, follow it, and resume it elsewhere while its node dies under it."""
        import ray

        action, moved_from, moves = job.action, None, 0
        cfg_text = job.config_path.read_text()
        req = requirements(cfg_text, self.spec)
        while True:
            snapshot = _pack_head_copy(job.run_dir) if action == "resume" else None
            if snapshot is None:
                action = "start"  # the head has no copy of it yet: it starts afresh wherever it goes
            gen = task.options(num_cpus=0, resources={self.spec.ray.resource: 1}, max_retries=0).remote(
                job.run.run_id, action, cfg_text, snapshot, self.spec.run_command,
                str(self.spec.ray.node_dir) if self.spec.ray.node_dir else None, req)
            node = ""
            try:
                for ref in gen:
                    item = ray.get(ref)
                    if item["kind"] == "placed":
                        node = item["node"]
                        sweep.add(RunLaunch(run_id=job.run.run_id, action=action, executor="ray",  # type: ignore[arg-type]
                                            node=node, host=item["host"], pid=item["pid"], moved_from=moved_from))
                    elif item["kind"] == "copy":
                        unpack_run(item["data"], job.run_dir)
                        sweep.add(RunCopy(run_id=job.run.run_id, node=node, iterations=item["iterations"],
                                          bytes=len(item["data"])))
                    elif item["kind"] == "exit":
                        if item["code"] is None:
                            job.log_path.parent.mkdir(parents=True, exist_ok=True)
                            with job.log_path.open("a") as f:
                                f.write(f"node {node}: {item['detail']}\n")
                        else:
                            with job.log_path.open("a") as f:
                                f.write(item["detail"])
                        sweep.exited(job, node, item["code"])
                return
            except ray.exceptions.RayError as e:
                exit_ = sweep.exited(job, node, None, lost=f"{type(e).__name__}: {str(e)[:300]}")
                if exit_.status != "lost" or moves >= self.spec.ray.max_moves or self.stopping.is_set():
                    return
                action, moves, moved_from = "resume", moves + 1, node


def _pack_head_copy(run_dir: Path) -> bytes | None:
    return pack_run(run_dir) if (Path(run_dir) / EVENTS).is_file() else None
