"""The fault matrix: one reset (pauseSchedules on) per cell, a fault injected between
idmsync and the server by tests/harness/fault_proxy.py, and for each cell the outcome
(the stage's result, or the error reason), the number of DELETEs that *reached the server*,
and the scheduler left running.

The faults live in the proxy, not in the server, so the same table can run against a
real OpenIDM: give it a Backend whose hooks act on that server over HTTP (liveSync,
delete a stage, read a stage, is the scheduler paused) and parametrize over both. Only
the stub backend exists today; the real-OpenIDM backend belongs with the OpenIDM-in-CI
work (tests/harness/openidm.py).

The table as it ran is printed at the end of the module (``-rA`` not needed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from idmsync.auth import AdminCredentials, Secret
from idmsync.engine import (
    Flavour,
    IdmClient,
    ResetOptions,
    RetryPolicy,
    StageRef,
    make_http_client,
    run_reset,
)
from idmsync.errors import IdmSyncError
from tests.harness.fault_proxy import FaultProxy
from tests.harness.net import free_port
from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER, LDAP_SOURCE, LDAP_STAGE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
LDAP = StageRef(LDAP_STAGE, LDAP_SOURCE)
STAGE = "/openidm/" + STAGE_PATH
SOURCE = "/openidm/" + LDAP_SOURCE
SCHEDULER = "/openidm/scheduler/job"


class Backend(Protocol):
    """What a cell needs from the server besides the requests idmsync makes."""

    url: str

    def livesync(self) -> None: ...  # a scheduled liveSync runs now

    def delete_stage(self) -> None: ...  # someone else deletes the stage now

    def stage(self) -> dict[str, Any] | None: ...

    def scheduler_paused(self) -> bool: ...


class StubBackend:
    def __init__(self, stub: IdmStub) -> None:
        self.stub = stub
        self.url = stub.url

    def livesync(self) -> None:
        self.stub.livesync(LDAP_SOURCE)

    def delete_stage(self) -> None:
        with self.stub.lock:
            self.stub.stages.pop(LDAP_STAGE, None)

    def stage(self) -> dict[str, Any] | None:
        return self.stub.stage(LDAP_STAGE)

    def scheduler_paused(self) -> bool:
        return self.stub.scheduler_paused


Arrange = Callable[[FaultProxy, Backend], object]


@dataclass(frozen=True)
class Cell:
    id: str
    fault: str  # what a reader of the table sees
    arrange: Arrange
    outcome: str  # the stage's result, or the error's reason
    deletes: int  # DELETEs that reached the server
    timeout: float = 2.0
    paused_after: bool = False  # only where the failure says the scheduler may be paused
    unreachable: bool = False


def _nothing(proxy: FaultProxy, backend: Backend) -> None:
    return None


CELLS = [
    Cell("baseline", "none", _nothing, "Deleted", 1),
    Cell(
        "5xx-burst-reads",
        "503 x2 on the stage read",
        lambda p, b: p.add("status", 2, method="GET", path=STAGE),
        "Deleted",
        1,
    ),
    Cell(
        "5xx-burst-delete",
        "503 x2 on DELETE (gateway)",
        lambda p, b: p.add("status", 2, method="DELETE"),
        "Deleted",
        1,
    ),
    Cell(
        "5xx-persistent-delete",
        "503 on every DELETE",
        lambda p, b: p.add("status", 99, method="DELETE"),
        "ServerError",
        0,
    ),
    Cell(
        "5xx-livesync",
        "500 x1 on the liveSync trigger",
        lambda p, b: p.add("status", 1, method="POST", path=SOURCE, status=500),
        "Deleted",
        1,
    ),
    Cell(
        "5xx-burst-pause",
        "503 x2 on pauseJobs",
        lambda p, b: p.add("status", 2, method="POST", path="pauseJobs"),
        "Deleted",
        1,
    ),
    Cell(
        "refused",
        "nothing listening",
        _nothing,
        "ServerUnreachable",
        0,
        unreachable=True,
    ),
    Cell(
        "reset-before-delete-arrives",
        "connection reset, DELETE not forwarded",
        lambda p, b: p.add("reset", 1, method="DELETE"),
        "Deleted",
        1,
    ),
    Cell(
        "timeout-before-delete-arrives",
        "1 s before forwarding, client timeout 0.3 s",
        lambda p, b: p.add("delay_before", 1, method="DELETE", seconds=1.0),
        "Deleted",
        1,
        timeout=0.3,
    ),
    Cell(
        "lost-answer-delete",
        "DELETE carried out, connection cut",
        lambda p, b: p.add("drop_after", 1, method="DELETE"),
        "Deleted",
        1,
    ),
    Cell(
        "lost-answer-delete-recreated",
        "DELETE carried out, liveSync recreates (rev 1), connection cut",
        lambda p, b: p.add("drop_after", 1, method="DELETE", after=b.livesync),
        "Deleted",
        1,
    ),
    Cell(
        "timeout-after-delete-acted",
        "DELETE carried out, answer 1 s late, client timeout 0.3 s",
        lambda p, b: p.add("delay_after", 1, method="DELETE", seconds=1.0),
        "Deleted",
        1,
        timeout=0.3,
    ),
    Cell(
        "lost-answer-livesync",
        "liveSync ran, connection cut",
        lambda p, b: p.add("drop_after", 1, method="POST", path=SOURCE),
        "Deleted",
        1,
    ),
    Cell(
        "lost-answer-pause",
        "pauseJobs carried out, connection cut",
        lambda p, b: p.add("drop_after", 1, method="POST", path="pauseJobs"),
        "Deleted",
        1,
    ),
    Cell(
        "resume-fails",
        "503 on every resumeJobs",
        lambda p, b: p.add("status", 99, method="POST", path="resumeJobs"),
        "ServerError",
        1,
        paused_after=True,
    ),
    Cell(
        "412-race",
        "liveSync runs just before our DELETE arrives",
        lambda p, b: p.add("pass", 1, method="DELETE", before=b.livesync),
        "Deleted",
        2,
    ),
    Cell(
        "404-race",
        "the stage is deleted just before our DELETE arrives",
        lambda p, b: p.add("pass", 1, method="DELETE", before=b.delete_stage),
        "AlreadyAbsent",
        1,
    ),
    Cell(
        "malformed-read",
        "the stage read answers truncated JSON",
        lambda p, b: p.add("garble", 1, method="GET", path=STAGE),
        "ProtocolError",
        0,
    ),
    Cell(
        "malformed-delete-answer",
        "DELETE carried out, 200 with truncated JSON",
        lambda p, b: p.add("garble", 1, method="DELETE"),
        "Deleted",
        1,
    ),
    Cell(
        "latency",
        "every answer 50 ms late",
        lambda p, b: p.add("delay_after", 99, seconds=0.05),
        "Deleted",
        1,
    ),
]

RESULTS: list[tuple[str, str, str, int, int, bool]] = []


@pytest.fixture(scope="module", autouse=True)
def _print_the_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not RESULTS:
        return
    with capture.global_and_fixture_disabled():
        _write_table(reporter)


def _write_table(reporter: Any) -> None:
    reporter.write_line("")
    reporter.write_line("fault matrix (backend: stub)")
    reporter.write_line(
        f"{'cell':<32} {'outcome':<18} {'DELETEs sent':>12} {'reached':>8} {'resumed':>8}"
    )
    for cell, _fault, outcome, sent, reached, resumed in RESULTS:
        reporter.write_line(f"{cell:<32} {outcome:<18} {sent:>12} {reached:>8} {resumed!s:>8}")


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
async def test_fault_matrix(stub: IdmStub, cell: Cell) -> None:
    backend = StubBackend(stub)
    with FaultProxy("127.0.0.1", stub.port) as proxy:
        cell.arrange(proxy, backend)
        url = f"http://127.0.0.1:{free_port()}" if cell.unreachable else proxy.url
        async with make_http_client(timeout=cell.timeout) as http:
            credentials = AdminCredentials(ADMIN_USER, Secret(ADMIN_PASSWORD))
            client = IdmClient(url, credentials, http, flavour=Flavour.IDM7, retry=FAST)
            options = ResetOptions(pause_schedules=True, verify_interval=0.05, verify_timeout=5)
            error: IdmSyncError | None = None
            try:
                outcome = await run_reset(client, [LDAP], options)
                result = str(outcome.stages[0].result)
            except IdmSyncError as exc:
                error, result = exc, exc.reason
        reached = proxy.reached("DELETE", STAGE)
        RESULTS.append(
            (
                cell.id,
                cell.fault,
                result,
                proxy.sent("DELETE", STAGE),
                reached,
                not backend.scheduler_paused(),
            )
        )
        assert result == cell.outcome, error
        assert reached == cell.deletes
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == reached, "proxy and server agree"
        assert backend.scheduler_paused() is cell.paused_after
        if cell.paused_after:
            assert error is not None
            assert "may still be paused" in error.message
        if result == "Deleted":
            stage = backend.stage()
            assert stage is not None, "liveSync recreated it"
            assert stage["connectorData"]["syncToken"] == 105
