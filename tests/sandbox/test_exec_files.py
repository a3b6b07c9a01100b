"""Commands and files through DockerSandbox (real engine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.sandbox import DockerSandbox, FileTooLarge, Sandbox, SandboxConfig, SandboxError

# One run of the whole suite under heavy load saw a fast `docker exec` return its exit code but no
# output (not reproduced since, idle or loaded: see issue 4's note). Until its cause is pinned down,
# an exec test that fails is run once more; a real regression fails twice.
pytestmark = [pytest.mark.docker, pytest.mark.flaky(reruns=1)]


@pytest.fixture(scope="module")
def sandbox(sandbox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerSandbox]:
    workspace = tmp_path_factory.mktemp("workspace")
    config = SandboxConfig(image=sandbox_image, file_cap_bytes=1024 * 1024)
    with DockerSandbox.start(workspace, config) as sb:
        yield sb


def test_fits_the_protocol(sandbox: DockerSandbox) -> None:
    assert isinstance(sandbox, Sandbox)


def test_exit_code_streams_and_workdir(sandbox: DockerSandbox) -> None:
    sandbox.exec("mkdir -p sub")
    r = sandbox.exec("pwd; echo oops >&2; exit 7", workdir="/workspace/sub")
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (7, "/workspace/sub\n", "oops\n", False)
    assert sandbox.exec("pwd").stdout == "/workspace\n"


def test_login_shell_has_the_toolchain_on_path(sandbox: DockerSandbox) -> None:
    r = sandbox.exec("cargo --version && rustc --version && gcc --version | head -1")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("cargo 1.") and "rustc 1." in r.stdout


def test_file_roundtrip_with_unicode_and_nested_dirs(sandbox: DockerSandbox) -> None:
    text = 'fn main() { println!("héllo ✓"); }\n' * 100
    sandbox.write_file("src/deep/dir/main.rs", text)
    assert sandbox.read_file("src/deep/dir/main.rs") == text
    assert sandbox.read_file("/workspace/src/deep/dir/main.rs") == text
    assert sandbox.exec("stat -c %U src/deep/dir/main.rs").stdout.strip() == "agent"


def test_file_size_caps(sandbox: DockerSandbox) -> None:
    with pytest.raises(FileTooLarge):
        sandbox.write_file("big.txt", "x" * (1024 * 1024 + 1))
    sandbox.exec("head -c 2000000 /dev/zero > big.bin")
    with pytest.raises(FileTooLarge):
        sandbox.read_file("big.bin")
    with pytest.raises(SandboxError):
        sandbox.read_file("missing.txt")
    with pytest.raises(SandboxError):
        sandbox.write_file("/etc/passwd", "nope")


def test_background_server_started_with_nohup_survives(sandbox: DockerSandbox) -> None:
    r = sandbox.exec("nohup sleep 1239 > /tmp/bg.log 2>&1 & echo started", timeout_s=10)
    assert r.exit_code == 0 and r.duration_s < 2
    assert sandbox.exec("pgrep -fc 'sleep 123[9]'").stdout.strip() == "1"
    sandbox.exec("pkill -f 'sleep 123[9]'")


def _refused() -> Exception:
    import requests

    return requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused"))


def _aborted() -> Exception:
    import requests
    import urllib3

    return requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted."))


def test_a_start_the_engine_never_got_is_made_anew_and_runs_once(sandbox: DockerSandbox,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    api = sandbox._client.api
    real, calls = api.exec_start, []

    def flaky_start(exec_id, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(exec_id)
        if len(calls) == 1:
            raise _refused()  # the engine went away between the create and the start
        return real(exec_id, *a, **kw)

    monkeypatch.setattr(api, "exec_start", flaky_start)
    sandbox.exec("rm -f /tmp/once")
    calls.clear()
    r = sandbox.exec("echo ran >> /tmp/once; cat /tmp/once")
    assert r.exit_code == 0 and r.stdout == "ran\n"  # run exactly once
    assert len(calls) == 2 and calls[0] != calls[1]  # a fresh exec, not the first one started late


def test_a_start_that_may_have_reached_the_engine_is_not_sent_again(sandbox: DockerSandbox,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    api = sandbox._client.api
    calls = []

    def aborted_start(exec_id, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(exec_id)
        raise _aborted()

    monkeypatch.setattr(api, "exec_start", aborted_start)
    with pytest.raises(requests.exceptions.ConnectionError):
        sandbox.exec("echo never")
    assert len(calls) == 1
