"""Crash recovery: the operator SIGKILLed at every step boundary of a reset, then restarted.

One reset per run (pauseSchedules on, its own stage on the IDM stub), seen through the fault
proxy, which kills the operator at a chosen point of the reset's request sequence
(pauseJobs, read, DELETE, liveSync, verify read, resumeJobs):

* ``arrives``: as the request arrives, which is then lost (never carried out);
* ``acted``: as the request arrives, which the server then carries out (its answer lost);
* ``answered``: a random 0-80 ms after its answer was delivered, so the kill lands
  before or after the status patch that records it;

plus ``created``: a random 0-1.5 s after the resource was created (before the first request,
or anywhere, under load). A new operator is started each time. Every run must end
Succeeded with exactly one DELETE reaching the server, the audit record right (rev and
token as they were, the new token), and the scheduler resumed.

``make test`` kills at ten of these points (each step's boundary once, random delays);
``make soak`` sets ``IDMSYNC_CRASH_RUNS`` (120): every one of the 19 points once, then points
drawn at random. ``IDMSYNC_CRASH_SEED`` replays a draw. The table as it ran is printed.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.fault_proxy import FaultProxy
from tests.harness.operator_process import OperatorProcess
from tests.harness.report import write_lines
from tests.integration.conftest import Resets, admin_secret, reset_manifest, service_manifest
from tests.stub.fixtures import ADMIN_PASSWORD
from tests.stub.idm_stub import IdmStub

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(3600)]

#: the requests of one reset, in order, with what tells them apart
SEQUENCE = [
    ("pauseJobs", "POST", "pauseJobs"),
    ("read", "GET", "{stage}"),
    ("DELETE", "DELETE", "{stage}"),
    ("liveSync", "POST", "{source}"),
    ("verify", "GET", "{stage}"),
    ("resumeJobs", "POST", "resumeJobs"),
]
MODES = ("arrives", "acted", "answered")
#: the points ``make test`` kills at: every boundary between two steps once
SHORT = [
    "created",
    "pauseJobs acted",
    "read answered",
    "DELETE arrives",
    "DELETE acted",
    "DELETE answered",
    "liveSync acted",
    "verify arrives",
    "resumeJobs arrives",
    "resumeJobs answered",
]
ANSWERED_DELAY = 0.08


@dataclass(frozen=True)
class KillPoint:
    request: int  # index into SEQUENCE; -1: after the resource was created
    mode: str  # arrives | acted | answered | created
    delay: float  # seconds after the answer (answered) or the creation (created)

    @property
    def name(self) -> str:
        return "created" if self.request < 0 else f"{SEQUENCE[self.request][0]} {self.mode}"

    def __str__(self) -> str:
        if self.request < 0:
            return f"created +{self.delay * 1000:.0f}ms"
        name = SEQUENCE[self.request][0]
        extra = f" +{self.delay * 1000:.0f}ms" if self.mode == "answered" else ""
        return f"{name} {self.mode}{extra}"


def sweep(rng: random.Random) -> list[KillPoint]:
    """Every point once, with random delays."""
    points = [KillPoint(-1, "created", rng.uniform(0, 1.5))]
    for index in range(len(SEQUENCE)):
        for mode in MODES:
            points.append(KillPoint(index, mode, rng.uniform(0, ANSWERED_DELAY)))
    return points


def draw(rng: random.Random, runs: int) -> list[KillPoint]:
    """Every point once, then points at random, ``runs`` in all."""
    everything = sweep(rng)
    extra = [
        KillPoint(p.request, p.mode, rng.uniform(0, 1.5 if p.request < 0 else ANSWERED_DELAY))
        for p in (rng.choice(everything) for _ in range(runs - len(everything)))
    ]
    return everything + extra


@dataclass
class Run:
    number: int
    point: KillPoint
    stage: str
    step_at_kill: str = "-"
    deletes: int = 0
    attempts: int = 0
    result: str = "-"
    found: str = ""


RUNS: list[Run] = []
SEED: list[int] = []


class Crashes:
    """A namespace with the stub behind the fault proxy, and one operator at a time."""

    def __init__(self, control_plane: ControlPlane, stub: IdmStub, log: Path) -> None:
        self.control_plane = control_plane
        self.kubectl = control_plane.kubectl
        self.stub = stub
        self.proxy = FaultProxy("127.0.0.1", stub.port).start()
        self.namespace = f"crash-{secrets.token_hex(4)}"
        self.kubectl("create", "namespace", self.namespace)
        self.kubectl.apply(service_manifest("idm", self.namespace, self.proxy.port))
        self.kubectl.apply(admin_secret(self.namespace))
        self.resets = Resets(control_plane.kubeconfig, self.namespace)
        self.log = log
        self.operator: OperatorProcess | None = None
        self.killed = threading.Event()

    def start_operator(self) -> None:
        self.operator = OperatorProcess(
            self.control_plane.kubeconfig, self.log, namespaces=self.namespace
        ).start()
        self.killed.clear()

    def kill(self) -> None:
        if self.operator is not None and not self.killed.is_set():
            self.operator.kill()
            self.killed.set()

    def kill_later(self, seconds: float) -> Callable[[], None]:
        def schedule() -> None:
            threading.Timer(seconds, self.kill).start()

        return schedule

    def arm(self, point: KillPoint, stage: str, source: str) -> None:
        """Rules that let the first requests of the run through and kill at the point."""
        with self.proxy.lock:
            self.proxy.rules.clear()
        if point.request < 0:
            return
        if point.request > 0:
            self.proxy.add("pass", point.request)
        _name, method, marker = SEQUENCE[point.request]
        path = marker.format(stage=stage, source=source)
        if point.mode == "arrives":
            self.proxy.add("reset", 1, method=method, path=path, before=self.kill)
        elif point.mode == "acted":
            self.proxy.add("pass", 1, method=method, path=path, before=self.kill)
        else:
            self.proxy.add("pass", 1, method=method, path=path, after=self.kill_later(point.delay))

    def close(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        self.proxy.stop()


@pytest.fixture
def crashes(
    control_plane: ControlPlane, crd: None, stub: IdmStub, tmp_path: Path
) -> Iterator[Crashes]:
    harness = Crashes(control_plane, stub, tmp_path / "operator.log")
    harness.start_operator()
    yield harness
    harness.close()
    assert ADMIN_PASSWORD not in harness.log.read_text(errors="replace")


@pytest.fixture(scope="module", autouse=True)
def _print_the_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not RUNS:
        return
    write_lines(
        request,
        (
            "",
            f"crash recovery: {len(RUNS)} runs, operator SIGKILLed once in each "
            f"(IDMSYNC_CRASH_SEED={SEED[0] if SEED else '?'})",
            f"{'run':>4} {'killed at':<26} {'step at kill':<13} {'DELETEs':>7} {'tries':>5} "
            f"{'result':<8} what the restarted operator found",
            *(
                f"{run.number:>4} {run.point!s:<26} {run.step_at_kill:<13} {run.deletes:>7} "
                f"{run.attempts:>5} {run.result:<8} {run.found}"
                for run in RUNS
            ),
        ),
    )


def _points() -> tuple[list[KillPoint], int]:
    seed = int(os.environ.get("IDMSYNC_CRASH_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    runs = os.environ.get("IDMSYNC_CRASH_RUNS")
    if runs:
        return draw(rng, int(runs)), seed
    return [p for p in sweep(rng) if p.name in SHORT], seed


def _found(stage: dict[str, Any]) -> str:
    note = stage.get("message") or ""
    if "earlier run" in note:
        return "the DELETE had happened: read back, not repeated"
    if "answer was lost" in note:
        return "a lost answer: read back, not repeated"
    return "resumed and finished" if note == "" else note[:60]


def test_sigkill_at_every_step_boundary_repeats_no_delete(crashes: Crashes, stub: IdmStub) -> None:
    points, seed = _points()
    SEED.append(seed)
    failures: list[str] = []
    for number, point in enumerate(points, 1):
        source = f"system/crash/r{number:03d}"
        stage = source.replace("/", "").upper()
        stub.add_source(source, latest=105)
        stub.put_stage(stage, 100)
        run = Run(number, point, stage)
        RUNS.append(run)
        crashes.arm(point, stage, source)
        name = f"run-{number:03d}"
        spec = {
            "target": {"service": {"name": "idm", "port": "http"}},
            "auth": {"adminSecretRef": {"name": "idm-admin"}},
            "api": "IDM7",
            "pauseSchedules": True,
            "stages": {"sources": [source]},
        }
        crashes.kubectl.apply(reset_manifest(name, crashes.namespace, spec))
        if point.request < 0:
            time.sleep(point.delay)
            crashes.kill()
        elif not crashes.killed.wait(120):
            failures.append(f"run {number} ({point}): the kill point was never reached")
        body = crashes.resets.get(name)
        stages = body.get("status", {}).get("stages") or []
        run.step_at_kill = stages[0]["step"] if stages else "(none)"
        crashes.start_operator()

        body = crashes.resets.wait_phase(name, timeout=180)
        status = body["status"]
        (recorded,) = status["stages"]
        run.deletes = len(stub.requests_to(f"pooledSyncStage/{stage}", "DELETE"))
        run.attempts = status.get("attempts", 0)
        run.result = recorded.get("result") or "-"
        run.found = _found(recorded)
        expected = {
            "phase": "Succeeded",
            "deletes": 1,
            "audit": ("1", 100, "Deleted", "Done", 105),
            "scheduler paused": False,
        }
        seen = {
            "phase": status["phase"],
            "deletes": run.deletes,
            "audit": (
                recorded.get("previousRev"),
                recorded.get("previousToken"),
                recorded.get("result"),
                recorded.get("step"),
                (recorded.get("liveSync") or {}).get("newToken"),
            ),
            "scheduler paused": stub.scheduler_paused,
        }
        if seen != expected:
            failures.append(f"run {number} ({point}): {seen} != {expected}")
    assert not failures, "\n".join(failures)
