"""Run the real operator (``idmsync run``) as a subprocess against the test control plane."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.harness import processes
from tests.harness.net import free_port

IDMSYNC = str(Path(sys.executable).with_name("idmsync"))


class OperatorProcess:
    """One ``idmsync run`` process; its log goes to a file the tests can scan."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        namespaces: str,
        settings: Mapping[str, str] | None = None,
        command: Callable[[Mapping[str, str]], Sequence[str]] | None = None,
        verbose: bool = True,
    ) -> None:
        """``command``, given the operator's environment, returns the argv that starts it
        (default: this checkout's ``idmsync run``, ``--verbose`` unless ``verbose=False``)."""
        self.kubeconfig = kubeconfig
        self.verbose = verbose
        self.log_path = log_path
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("IDM", "KUBE"))}
        self.env |= {
            "KUBECONFIG": str(kubeconfig),
            "IDMSYNC_NAMESPACES": namespaces,
            "IDMSYNC_PEERING": "",
            "IDMSYNC_METRICS_PORT": str(self.metrics_port),
            "IDMSYNC_HEALTH_PORT": str(self.health_port),
            "IDMSYNC_RETRY_BACKOFF": "0.5",
            "IDMSYNC_RETRY_LIMIT": "3",
            # outside a cluster a Service's DNS name does not resolve: reach it on loopback
            "IDMSYNC_SERVICE_URL_TEMPLATE": "{scheme}://127.0.0.1:{port}",
            **(settings or {}),
        }
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        #: time.time() just before the process was spawned
        self.started_at = 0.0

    def start(self, *, wait: bool = True) -> OperatorProcess:
        """Spawn it; unless ``wait=False``, wait until this process (not an earlier one
        sharing the log) is up."""
        offset = len(self.log())
        log = self.log_path.open("ab")
        default = [IDMSYNC, "run", *(["--verbose"] if self.verbose else [])]
        argv = list(self.command(self.env)) if self.command else default
        self.started_at = time.time()
        self.process = subprocess.Popen(
            argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_started(offset)
        return self

    def wait_started(self, offset: int = 0, timeout: float = 60) -> None:
        """Until the log past ``offset`` says the operator started."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited {self.process.returncode}:\n{self.log()}")
            if "idmsync operator started" in self.log()[offset:]:
                return
            time.sleep(0.1)
        self.kill()  # a half-started operator must not outlive the test that wanted it
        raise RuntimeError(f"operator did not start:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_kib(self) -> int:
        """Resident memory of the operator process, KiB (0 once it has exited)."""
        return processes.rss_kib(self.pid)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last patch, exactly as a node failure."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, as Kubernetes stops a pod; SIGKILL after 20 s."""
        if self.process is not None:
            processes.stop(self.process, timeout=20)
