"""The Ray executor on a real two-node cluster on loopback (a head and a worker, each with its own
Ray processes, its own folder for its runs and one `staircase_runs`): a sweep of 2 configs x 2 seeds
goes across both nodes; the worker is killed (SIGKILL, no grace) while it is in the middle of a run;
that run is resumed on the head from the head's copy and finishes. Every run ends exactly once, no
iteration is lost or redone, the scorings never overlap on the machine's slot, and no process of
the killed node's runs is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.sweep.record import SweepState
from tests.sweep.support import REPO_ROOT, assert_no_overlap, check_runs_whole, slot_intervals, write_sweep

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]
ITERATIONS = {"short": 3, "long": 4}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """One cluster per session: a head and a worker node on this machine (the nodes' processes
    inherit this environment: the session's scorer slot, the stub scoring's length)."""
    from ray.cluster_utils import Cluster

    os.environ["SWEEP_STUB_SCORE_S"] = "0.4"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"staircase_runs": 1}, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1, resources={"staircase_runs": 1})
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        cluster.shutdown()
        os.environ.pop("SWEEP_STUB_SCORE_S", None)


def _processes_mentioning(text: str) -> list[str]:
    out = []
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if p.name.isdigit() and text in cmd:
            out.append(f"{p.name}: {cmd[:200]}")
    return out


def test_sweep_across_two_nodes_and_a_worker_killed_mid_run(tmp_path: Path, ray_cluster: tuple[Any, Any]) -> None:
    cluster, worker = ray_cluster
    sweep_file = write_sweep(tmp_path, seeds=[1, 2], iterations=ITERATIONS, executor="ray",
                             extra={"ray": {"check_image": False, "node_dir": str(tmp_path / "nodes")}})
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(sweep_file), "--sweep-dir", str(out),
                             "--address", cluster.address, "--json"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker_id = worker.node_id
    try:
        # Kill the worker once it has finished one run and is in the middle of its next (the head holds
        # a copy of that run with at least one iteration in it).
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker never got into a second run"
            state = SweepState.read(out)
            done_there = [r for r in state.runs.values() if any(x.node == worker_id and x.status == "ended"
                                                                for x in r.exits)]
            mid_run = [r for r in state.runs.values() if r.launches and r.launches[-1].node == worker_id
                       and not r.exits and r.last_copy and r.last_copy.iterations >= 1]
            if done_there and mid_run:
                break
            time.sleep(0.1)
        victim = mid_run[0].planned.run_id
        cluster.remove_node(worker, allow_graceful=False)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads(stdout)["status"] == "ended"

    state = SweepState.read(out)
    head = {x.node for r in state.runs.values() for x in r.launches} - {worker_id}
    print("\nrun        node (launch, action)                         exits")
    for run_id, rec in state.runs.items():
        where = ", ".join(f"{'worker' if x.node == worker_id else 'head'} {x.node[:8]} {x.action}"
                          + (f" (moved from {x.moved_from[:8]})" if x.moved_from else "") for x in rec.launches)
        print(f"{run_id:10} {where:45} {[x.status for x in rec.exits]}  copies: {rec.copies}")
    assert len(head) == 1, "the other runs went to the head"
    assert any(r.launches[0].node == worker_id for r in state.runs.values())
    moved = state.runs[victim]
    assert [(x.action, x.node == worker_id) for x in moved.launches] == [("start", True), ("resume", False)]
    assert moved.launches[1].moved_from == worker_id
    assert [x.status for x in moved.exits] == ["lost", "ended"]
    scores = check_runs_whole(out, ITERATIONS)
    assert_no_overlap(slot_intervals(scores))
    # Nothing of the dead node's run is still going (its process died with the node's Ray worker).
    deadline = time.monotonic() + 20
    while _processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_mentioning(str(tmp_path))
