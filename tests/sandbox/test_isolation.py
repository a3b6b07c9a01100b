"""The sandbox's walls, tested against the real Docker engine: no network, pids and memory limits,
no host environment, non-root without capabilities, read-only dev data, timeouts that kill the
whole process group, bounded output, and recovery from a killed container."""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.sandbox import DockerSandbox, SandboxConfig, SandboxDied

# One run of the whole suite under heavy load saw a fast `docker exec` return its exit code but no
# output (not reproduced since, idle or loaded: see issue 4's note). Until its cause is pinned down,
# an exec test that fails is run once more; a real regression fails twice.
pytestmark = [pytest.mark.docker, pytest.mark.flaky(reruns=1)]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    (path / "hello.txt").write_text("hello from the host\n")
    return path


@pytest.fixture
def start(sandbox_image: str, workspace: Path) -> Iterator:
    """Start sandboxes on the test's workspace; all are removed at the end."""
    started: list[DockerSandbox] = []

    def _start(**overrides: object) -> DockerSandbox:
        dev_data = overrides.pop("dev_data", None)
        log_dir = overrides.pop("log_dir", None)
        config = SandboxConfig(image=sandbox_image, **overrides)  # type: ignore[arg-type]
        sandbox = DockerSandbox.start(workspace, config, dev_data=dev_data, log_dir=log_dir)  # type: ignore[arg-type]
        started.append(sandbox)
        return sandbox

    yield _start
    for sandbox in started:
        sandbox.stop()


def _bridge_gateway(docker_client) -> str:  # type: ignore[no-untyped-def]
    """The host's address on Docker's default bridge (where a container with a network would
    reach the host)."""
    config = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    return config.get("Gateway") or str(ipaddress.ip_network(config["Subnet"])[1])


def test_no_network(start, docker_client) -> None:  # type: ignore[no-untyped-def]
    sb = start()
    # Only loopback exists inside.
    interfaces = sb.exec("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").stdout.split()
    assert interfaces == ["lo"]
    # An outside-looking address: refused at once, no route, no packet sent.
    r = sb.exec("exec 3<>/dev/tcp/10.255.255.1/80", timeout_s=10)
    assert r.exit_code != 0 and "Network is unreachable" in r.stderr
    # A server on the host's Docker bridge: reachable from the host, not from the sandbox.
    gateway = _bridge_gateway(docker_client)
    server = socket.create_server((gateway, 0))
    port = server.getsockname()[1]
    accepted: list[object] = []
    server.settimeout(5)
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:
        r = sb.exec(f"exec 3<>/dev/tcp/{gateway}/{port} && echo CONNECTED", timeout_s=10)
        assert r.exit_code != 0 and "CONNECTED" not in r.stdout
        assert "Network is unreachable" in r.stderr
        socket.create_connection((gateway, port), timeout=5).close()  # the host can: the test could fail
        time.sleep(0.2)
        assert len(accepted) == 1
    finally:
        server.close()


def test_host_secrets_do_not_enter(start, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    canary = f"canary-{os.getpid()}-{time.time_ns()}"
    monkeypatch.setenv("STAIRCASE_CANARY_SECRET", canary)
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary)
    sb = start()
    r = sb.exec("env; cat /proc/1/environ /proc/self/environ | tr '\\0' '\\n'")
    assert r.exit_code == 0 and "STAIRCASE_WORKSPACE=/workspace" in r.stdout
    for needle in (canary, "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "STAIRCASE_CANARY_SECRET"):
        assert needle not in r.stdout
    r = sb.exec(f"grep -rs {canary} /proc/*/environ /etc /home /tmp; echo done")
    assert r.stdout.strip() == "done"


def test_non_root_without_capabilities_or_docker_socket(start) -> None:  # type: ignore[no-untyped-def]
    sb = start()
    r = sb.exec(
        "id -u; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; "
        "ls /var/run/docker.sock /run/docker.sock 2>&1; touch /etc/x 2>&1"
    )
    lines = r.stdout.splitlines()
    assert lines[0] == "1000"
    assert "CapEff:\t0000000000000000" in lines and "CapBnd:\t0000000000000000" in lines
    assert "NoNewPrivs:\t1" in lines
    assert r.stdout.count("No such file or directory") == 2
    assert "Permission denied" in r.stdout


def test_workspace_writable_dev_data_read_only(start, workspace: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "dev"
    data.mkdir()
    (data / "queries.fvecs").write_bytes(b"\x01\x02")
    sb = start(dev_data={"dev": data})
    assert sb.read_file("hello.txt") == "hello from the host\n"
    assert sb.exec("wc -c < /data/dev/queries.fvecs").stdout.strip() == "2"
    r = sb.exec("echo x > /data/dev/queries.fvecs; touch /data/dev/new; rm /data/dev/queries.fvecs")
    assert r.stderr.count("Read-only file system") == 3
    assert (data / "queries.fvecs").read_bytes() == b"\x01\x02"
    r = sb.exec("echo written > from-sandbox.txt && mkdir -p src && echo fn > src/x.rs")
    assert r.exit_code == 0, r.stderr
    assert (workspace / "from-sandbox.txt").read_text() == "written\n"
    # The only writable mounts are the workspace and the tmpfs.
    mounts = sb.exec("awk '$4 ~ /^rw/ {print $2}' /proc/mounts").stdout.split()
    assert "/workspace" in mounts and "/data/dev" not in mounts
    assert not any(m.startswith("/data") or m in ("/var/run/docker.sock",) for m in mounts)


def test_workspace_of_a_normal_user_keeps_its_owner(start, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    os.chown(workspace, 4321, 4321)
    os.chown(workspace / "hello.txt", 4321, 4321)
    sb = start()
    assert sb.user == "4321:4321"
    assert sb.exec("id -u && echo new > made-inside.txt").stdout.strip() == "4321"
    assert (workspace / "made-inside.txt").stat().st_uid == 4321


def test_pids_limit_holds_against_a_fork_bomb(start) -> None:  # type: ignore[no-untyped-def]
    sb = start(pids_limit=64, kill_grace_s=1)
    # The command outlives its time limit, so the timeout's group kill and the marker sweep run
    # (with "sleep 5" it sometimes ended in time and left the bomb running: see the note below).
    r = sb.exec("bomb() { bomb | bomb & }; bomb; sleep 60", timeout_s=8)
    assert r.timed_out and r.duration_s < 30
    assert sb.alive()
    # The sweep after the timeout leaves no bomb process behind: within a few seconds (reaping) the
    # sandbox works normally again. (Before the sweep forked nothing and retried, survivors of the
    # group kill could hold the pids limit for 20 s and more.)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        count = sb.exec("ps -e --no-headers | wc -l")
        if count.exit_code == 0 and int(count.stdout) < 10:
            break
        time.sleep(0.5)
    assert int(count.stdout) < 10, count
    events = sb.exec(
        "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids/pids.events 2>/dev/null || "
        "cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids.events"
    ).stdout.split()
    assert events[0] == "64"
    assert int(events[events.index("max") + 1]) > 0  # the limit was actually hit


def test_memory_limit_kills(start) -> None:  # type: ignore[no-untyped-def]
    sb = start(memory="256m")
    r = sb.exec(
        'python3 -c \'b = bytearray(1024 * 1024 * 1024); b[::4096] = b"x" * (len(b) // 4096); print("survived")\'',
        timeout_s=60,
    )
    assert r.exit_code == 137 and "survived" not in r.stdout
    assert sb.alive() and sb.exec("echo still here").stdout == "still here\n"
    small = sb.exec('python3 -c \'b = bytearray(64 * 1024 * 1024); b[::4096] = b"x" * (len(b) // 4096); print("ok")\'')
    assert small.stdout == "ok\n"


def test_timeout_kills_the_whole_process_group(start) -> None:  # type: ignore[no-untyped-def]
    sb = start(kill_grace_s=1)
    started = time.monotonic()
    r = sb.exec("sleep 1234 & sleep 1235 & echo begun; sleep 1236", timeout_s=2)
    assert r.timed_out and r.exit_code == 124 and r.stdout == "begun\n"
    assert 2 <= time.monotonic() - started < 8
    assert sb.exec("pgrep -fc 'sleep 123[456]'").stdout.strip() == "0"


def test_timeout_kills_a_child_that_left_the_group(start) -> None:  # type: ignore[no-untyped-def]
    sb = start(kill_grace_s=1)
    r = sb.exec("setsid sleep 1237 & trap '' TERM; sleep 1238", timeout_s=2)
    assert r.timed_out
    assert sb.exec("pgrep -fc 'sleep 123[78]'").stdout.strip() == "0"


def test_huge_output_is_capped_in_memory_and_on_disk(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cap = 4 * 1024 * 1024
    sb = start(full_output_cap_bytes=cap, output_head_bytes=1000, output_tail_bytes=1000, log_dir=tmp_path / "logs")
    tracemalloc.start()
    try:
        r = sb.exec("head -c 200000000 /dev/zero | tr '\\0' x; echo; echo THE-END", timeout_s=120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.exit_code == 0
    assert peak < 8 * 1024 * 1024, peak  # 200 MB went through; a few MB at most were held
    assert r.stdout_truncated and r.stdout.endswith("THE-END\n") and r.stdout.startswith("x" * 1000)
    assert "[... 199998009 bytes cut ...]" in r.stdout
    assert len(r.stdout) < 2100
    assert r.full_output_path is not None
    size = Path(r.full_output_path).stat().st_size
    assert cap <= size < cap + 200


def test_full_output_is_not_written_for_short_commands(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sb = start(log_dir=tmp_path / "logs")
    r = sb.exec("echo short; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr, r.full_output_path) == (3, "short\n", "err\n", None)
    assert not (tmp_path / "logs").exists()


def test_killed_container_is_detected_and_recovered(start, docker_client, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    sb = start()
    sb.write_file("notes.md", "remember me\n")
    old_id = sb.container_id
    docker_client.containers.get(old_id).kill()
    assert not sb.alive()
    with pytest.raises(SandboxDied):
        sb.exec("true")
    sb.restart()
    assert sb.alive() and sb.container_id != old_id
    assert sb.read_file("notes.md") == "remember me\n"
    assert (workspace / "notes.md").exists()


def test_container_dying_during_a_command_raises(start, docker_client) -> None:  # type: ignore[no-untyped-def]
    sb = start()
    threading.Timer(1.0, lambda: docker_client.containers.get(sb.container_id).kill()).start()
    with pytest.raises(SandboxDied):
        sb.exec("sleep 30", timeout_s=60)
