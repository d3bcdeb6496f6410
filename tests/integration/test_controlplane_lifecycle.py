"""The harness leaves nothing behind: no server process, no temp directory, however it ends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.harness.controlplane import REPO_ROOT, Binaries

# a self-test of the harness (`make harness-check`), not of idmsync
pytestmark = [pytest.mark.controlplane, pytest.mark.harness]


@pytest.fixture
def _binaries_built() -> None:
    # These tests start their own control planes in child processes; fail like the fixture does.
    Binaries.locate().require_servers()


def _run_pytest(test_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A separate pytest session with only the control-plane plugin, from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.harness.k8s_fixtures",
         "-p", "no:cacheprovider", "--rootdir", str(test_file.parent), str(test_file)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
    )  # fmt: skip


def _processes_mentioning(path: Path) -> list[int]:
    """PIDs whose command line contains path (the servers get their data/cert dirs in it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def _start_harness_process() -> tuple[subprocess.Popen[str], Path]:
    """`python -m tests.harness.controlplane` (what `make controlplane` runs), once ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.controlplane"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("KUBECONFIG="):
            kubeconfig = Path(line.strip().partition("=")[2])
            assert kubeconfig.is_absolute()
            assert kubeconfig.is_file()
            return process, kubeconfig.parent
    process.wait(10)
    pytest.fail(f"harness exited with {process.returncode} before printing KUBECONFIG=")


def _wait_gone(workdir: Path, timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _processes_mentioning(workdir):
        time.sleep(0.1)
    return _processes_mentioning(workdir)


@pytest.mark.usefixtures("_binaries_built")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_harness_stops_servers_and_removes_its_directory(signum: int) -> None:
    process, workdir = _start_harness_process()
    servers = _processes_mentioning(workdir)
    assert len(servers) >= 2  # etcd and kube-apiserver (each possibly behind setpriv)

    process.send_signal(signum)

    assert process.wait(30) == 0
    assert _processes_mentioning(workdir) == []
    assert not workdir.exists()


@pytest.mark.usefixtures("_binaries_built")
def test_killed_harness_takes_its_servers_along() -> None:
    process, workdir = _start_harness_process()

    process.kill()  # no atexit, no handler: only PR_SET_PDEATHSIG can stop the servers
    process.wait(10)

    try:
        assert _wait_gone(workdir) == []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.usefixtures("_binaries_built")
def test_failing_test_session_cleans_up(tmp_path: Path) -> None:
    record = tmp_path / "workdir.txt"
    test_file = tmp_path / "test_fails.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            def test_fails(control_plane):
                open({str(record)!r}, "w").write(str(control_plane.workdir))
                assert False, "deliberate"
            """
        )
    )

    result = _run_pytest(test_file)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "deliberate" in result.stdout
    workdir = Path(record.read_text())
    assert _processes_mentioning(workdir) == []
    assert not workdir.exists()


def test_missing_binaries_fail_the_test_and_name_make_tools(tmp_path: Path) -> None:
    test_file = tmp_path / "test_needs_cluster.py"
    test_file.write_text("def test_needs_cluster(control_plane):\n    pass\n")

    result = _run_pytest(test_file, IDMSYNC_KUBE_APISERVER=str(tmp_path / "no-such-binary"))

    assert result.returncode == 1, result.stdout + result.stderr
    assert "make tools" in result.stdout
    assert "1 error" in result.stdout
    assert "skipped" not in result.stdout
