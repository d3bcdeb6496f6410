"""The fault matrix, one table for two backends: the IDM stub (tests/unit/test_fault_matrix.py)
and a real OpenIDM 6.1.0 (tests/e2e/test_fault_matrix_openidm.py).

Every cell is one reset (pauseSchedules on) of one stage, through
tests/harness/fault_proxy.py, which injects the fault between idmsync and the server, so the
same cell runs against a server with no fault knobs of its own. Each cell states:

* the documented outcome: the stage's result, or the error's reason;
* how many changes (DELETE, or PUT for ``action: Set``) *reached the server*: never more than
  the cell allows, whatever was lost on the way;
* the audit record: ``previousRev``/``previousToken`` as the stage was just before the change
  that was carried out (``initial``: as the cell prepared it; ``relived``: after the liveSync
  the cell sneaked in);
* where the stage ends: at the source's latest token (liveSync ran after the reset), or
  unchanged (the reset failed before any change);
* whether the scheduler may be left paused (only when resuming it is what failed).

A backend prepares the stage before each cell as ``rev "1"``, token one behind the source's
latest (``prepare``), so a lost answer to a DELETE followed by a liveSync recreating the stage
at rev "1" is told apart by its token, as the workflow must.

TLS cells put the proxy behind HTTPS with certificates made here; token endpoint cells (stub
only: our OpenIDM build has no OAuth) authenticate with client credentials against
tests/stub/token_endpoint.py.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from idmsync.auth import AdminCredentials, ClientCredentialsFlow, Credentials, Secret
from idmsync.engine import (
    Action,
    Event,
    Flavour,
    IdmClient,
    ResetOptions,
    RetryPolicy,
    StageProgress,
    StageRef,
    TlsOptions,
    make_http_client,
    run_reset,
)
from idmsync.errors import IdmSyncError
from tests.harness.controlplane import CertificateAuthority
from tests.harness.fault_proxy import FaultProxy
from tests.harness.net import free_port
from tests.stub.idm_stub import IdmStub
from tests.stub.token_endpoint import TokenEndpoint

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
STAGE_ID = "SYSTEMLDAPACCOUNT"
SOURCE = "system/ldap/account"
STAGE = "/openidm/repo/synchronisation/pooledSyncStage/" + STAGE_ID
TRIGGER = "/openidm/" + SOURCE
CLIENT_ID = "idmsync-matrix"
CLIENT_SECRET = "client-Secret-Fm7-never-print-me"


class Backend(Protocol):
    """What a cell needs from the server besides the requests idmsync makes."""

    name: str
    host: str
    port: int
    #: a client timeout every healthy answer beats, and a delay that always outlasts it
    short_timeout: float
    long_delay: float
    verify_timeout: float
    verify_interval: float
    secrets: tuple[str, ...]  # never in an error message
    admin_user: str
    admin_password: str

    def prepare(self) -> tuple[str, Any]: ...  # the stage every cell starts from: rev, token

    def livesync(self) -> None: ...  # a scheduled liveSync runs now

    def delete_stage(self) -> None: ...  # someone else deletes the stage now

    def stage(self) -> dict[str, Any] | None: ...

    def latest_token(self) -> Any: ...  # where liveSync leaves the stage

    def set_token(self) -> Any: ...  # what an action Set writes (behind the latest)

    def scheduler_paused(self, proxy: FaultProxy) -> bool: ...

    def changes_seen(self, method: str) -> int | None: ...  # the server's own count, if kept

    def resume_scheduler(self) -> None: ...  # clean up after a cell that leaves it paused


class StubBackend:
    name = "stub"
    short_timeout = 0.3
    long_delay = 1.0
    verify_timeout = 5.0
    verify_interval = 0.05

    def __init__(self, stub: IdmStub) -> None:
        self.stub = stub
        self.host, self.port = "127.0.0.1", stub.port
        self.admin_user, self.admin_password = stub.username, stub.password
        self.secrets = (stub.password, CLIENT_SECRET)

    def prepare(self) -> tuple[str, Any]:
        with self.stub.lock:
            self.stub.stages.pop(STAGE_ID, None)
            self.stub.sources[SOURCE].latest = 105
        self.stub.put_stage(STAGE_ID, 104)
        return "1", 104

    def livesync(self) -> None:
        self.stub.livesync(SOURCE)

    def delete_stage(self) -> None:
        with self.stub.lock:
            self.stub.stages.pop(STAGE_ID, None)

    def stage(self) -> dict[str, Any] | None:
        return self.stub.stage(STAGE_ID)

    def latest_token(self) -> Any:
        return 105

    def set_token(self) -> Any:
        return 103

    def scheduler_paused(self, proxy: FaultProxy) -> bool:
        actions = proxy.scheduler_actions()
        seen_by_proxy = bool(actions) and actions[-1] == "pauseJobs"
        assert seen_by_proxy is self.stub.scheduler_paused, "proxy and server agree"
        return self.stub.scheduler_paused

    def changes_seen(self, method: str) -> int | None:
        return len(self.stub.requests_to(STAGE, method))

    def resume_scheduler(self) -> None:
        self.stub.scheduler_paused = False


@dataclass
class Setup:
    """What a cell's arrangement may touch."""

    proxy: FaultProxy
    backend: Backend
    am: TokenEndpoint | None = None
    token_url: str | None = None  # where the OAuth flow asks (default: the endpoint)
    token_deadline: float | None = None  # the flow's answer deadline (default: its own)


Arrange = Callable[[Setup], object]


def _nothing(setup: Setup) -> None:
    return None


@dataclass(frozen=True)
class Cell:
    id: str
    fault: str  # what a reader of the table sees
    arrange: Arrange
    outcome: str = "Deleted"  # the stage's result, or the error's reason
    changes: int = 1  # DELETEs (PUTs for Set) that reached the server
    action: str = "Delete"
    audit: str | None = "initial"  # initial | relived | None (no result to check)
    final: str = "latest"  # latest | unchanged: where the stage ends
    timed: bool = False  # the client runs with the backend's short timeout
    paused_after: bool = False  # only where the failure says the scheduler may be paused
    unreachable: bool = False  # nothing listens where the client connects
    tls: str | None = None  # trusted | wrong-ca | wrong-name
    auth: str = "admin"  # admin | oauth (client credentials against the token endpoint)
    message: str = ""  # a part of the error's message, where it matters
    stub_only: bool = False  # meaningless against a real server (no server involved)


def _delay(kind: str, method: str, path: str | None = None) -> Arrange:
    def arrange(setup: Setup) -> None:
        setup.proxy.add(kind, 1, method=method, path=path, seconds=setup.backend.long_delay)

    return arrange


def _slow_token_endpoint(setup: Setup) -> None:
    assert setup.am is not None
    setup.am.delay = setup.backend.long_delay


def _token_endpoint_down(setup: Setup) -> None:
    setup.token_url = f"http://127.0.0.1:{free_port()}/am/oauth2/access_token"


def _token_drip(setup: Setup) -> None:
    assert setup.am is not None
    setup.am.hostile_body_next(99, "drip")
    setup.token_deadline = 0.5


def _token_huge(setup: Setup) -> None:
    assert setup.am is not None
    setup.am.hostile_body_next(99, "huge")


def _token_refused_then_endpoint_down(setup: Setup) -> None:
    """Just before our DELETE arrives IDM stops accepting the token, and the token endpoint
    goes down: the DELETE is refused (401), a new token cannot be had."""
    am = setup.am
    assert am is not None

    def outage() -> None:
        am.fail_next(99, 503)
        am.expire_all()

    setup.proxy.add("pass", 1, method="DELETE", before=outage)


def _proxy(action: str, count: int, **rule: Any) -> Arrange:
    return lambda setup: setup.proxy.add(action, count, **rule)


def _failing(id: str, fault: str, arrange: Arrange, outcome: str, **more: Any) -> Cell:
    """A reset that fails before any change: nothing reached the server, no audit to check,
    the stage as it was."""
    return Cell(id, fault, arrange, outcome, 0, audit=None, final="unchanged", **more)


def _oauth(failing: bool, *args: Any, **more: Any) -> Cell:
    """A cell against the token endpoint (stub only: our OpenIDM build has no OAuth)."""
    return (_failing if failing else Cell)(*args, auth="oauth", stub_only=True, **more)


CELLS = [
    Cell("baseline", "none", _nothing),
    Cell(
        "5xx-burst-reads", "503 x2 on the stage read", _proxy("status", 2, method="GET", path=STAGE)
    ),
    Cell("5xx-burst-delete", "503 x2 on DELETE (gateway)", _proxy("status", 2, method="DELETE")),
    Cell(
        "5xx-persistent-delete",
        "503 on every DELETE",
        _proxy("status", 99, method="DELETE"),
        "ServerError",
        0,
        final="unchanged",
    ),
    Cell(
        "5xx-livesync",
        "500 x1 on the liveSync trigger",
        _proxy("status", 1, method="POST", path=TRIGGER, status=500),
    ),
    Cell(
        "5xx-burst-pause",
        "503 x2 on pauseJobs",
        _proxy("status", 2, method="POST", path="pauseJobs"),
    ),
    _failing(
        "refused",
        "nothing listening",
        _nothing,
        "ServerUnreachable",
        unreachable=True,
        stub_only=True,
    ),
    Cell(
        "reset-before-delete-arrives",
        "connection reset, DELETE not forwarded",
        _proxy("reset", 1, method="DELETE"),
    ),
    Cell(
        "timeout-before-delete-arrives",
        "delayed past the client's timeout before forwarding",
        _delay("delay_before", "DELETE"),
        timed=True,
    ),
    Cell(
        "lost-answer-delete",
        "DELETE carried out, connection cut",
        _proxy("drop_after", 1, method="DELETE"),
    ),
    Cell(
        "lost-answer-delete-recreated",
        "DELETE carried out, liveSync recreates (rev 1), connection cut",
        lambda s: s.proxy.add("drop_after", 1, method="DELETE", after=s.backend.livesync),
    ),
    Cell(
        "timeout-after-delete-acted",
        "DELETE carried out, answer later than the client's timeout",
        _delay("delay_after", "DELETE"),
        timed=True,
    ),
    Cell(
        "lost-answer-livesync",
        "liveSync ran, connection cut",
        _proxy("drop_after", 1, method="POST", path=TRIGGER),
    ),
    Cell(
        "lost-answer-pause",
        "pauseJobs carried out, connection cut",
        _proxy("drop_after", 1, method="POST", path="pauseJobs"),
    ),
    Cell(
        "resume-fails",
        "503 on every resumeJobs",
        _proxy("status", 99, method="POST", path="resumeJobs"),
        "ServerError",
        paused_after=True,
        message="may still be paused",
    ),
    Cell(
        "412-race",
        "liveSync runs just before our DELETE arrives",
        lambda s: s.proxy.add("pass", 1, method="DELETE", before=s.backend.livesync),
        changes=2,
        audit="relived",
    ),
    Cell(
        "404-race",
        "the stage is deleted just before our DELETE arrives",
        lambda s: s.proxy.add("pass", 1, method="DELETE", before=s.backend.delete_stage),
        "AlreadyAbsent",
    ),
    _failing(
        "malformed-read",
        "the stage read answers truncated JSON",
        _proxy("garble", 1, method="GET", path=STAGE),
        "ProtocolError",
    ),
    Cell(
        "malformed-delete-answer",
        "DELETE carried out, 200 with truncated JSON",
        _proxy("garble", 1, method="DELETE"),
    ),
    Cell("latency", "every answer 50 ms late", _proxy("delay_after", 999, seconds=0.05)),
    # --- action Set: the PUT is the change ---------------------------------------------
    Cell("set-baseline", "none (action Set)", _nothing, "Set", action="Set"),
    Cell(
        "lost-answer-put",
        "PUT carried out, connection cut",
        _proxy("drop_after", 1, method="PUT"),
        "Set",
        action="Set",
    ),
    Cell(
        "5xx-burst-put",
        "503 x2 on PUT (gateway)",
        _proxy("status", 2, method="PUT"),
        "Set",
        action="Set",
    ),
    Cell(
        "timeout-after-put-acted",
        "PUT carried out, answer later than the client's timeout",
        _delay("delay_after", "PUT"),
        "Set",
        action="Set",
        timed=True,
    ),
    Cell(
        "412-race-put",
        "liveSync runs just before our PUT arrives",
        lambda s: s.proxy.add("pass", 1, method="PUT", before=s.backend.livesync),
        "Set",
        2,
        action="Set",
        audit="relived",
    ),
    # --- TLS: refused before any request leaves -----------------------------------------
    Cell("tls-trusted", "https, certificate from the CA given", _nothing, tls="trusted"),
    _failing(
        "tls-wrong-ca",
        "https, certificate from another CA",
        _nothing,
        "ServerUnreachable",
        tls="wrong-ca",
        message="CERTIFICATE_VERIFY_FAILED",
    ),
    _failing(
        "tls-wrong-name",
        "https, certificate for another host name",
        _nothing,
        "ServerUnreachable",
        tls="wrong-name",
        message="Hostname mismatch",
    ),
    # --- the OAuth token endpoint -------------------------------------------------------
    _oauth(False, "token-baseline", "client credentials, no fault", _nothing),
    _oauth(
        True,
        "token-endpoint-down",
        "nothing listening at the token URL",
        _token_endpoint_down,
        "ServerUnreachable",
        message="token endpoint",
    ),
    _oauth(
        False,
        "token-endpoint-5xx-burst",
        "token endpoint 503 x2",
        lambda s: s.am.fail_next(2, 503) if s.am else None,
    ),
    _oauth(
        True,
        "token-endpoint-5xx-persistent",
        "token endpoint 503 on every request",
        lambda s: s.am.fail_next(99, 503) if s.am else None,
        "ServerError",
        message="token endpoint",
    ),
    _oauth(
        True,
        "token-endpoint-slow",
        "token endpoint answers later than the client's timeout",
        _slow_token_endpoint,
        "ServerUnreachable",
        timed=True,
        message="timed out",
    ),
    _oauth(
        True,
        "token-endpoint-drip",
        "token endpoint drips its answer (deadline 0.5 s)",
        _token_drip,
        "ServerUnreachable",
        message="no complete answer within 0.5s",
    ),
    _oauth(
        True,
        "token-endpoint-huge",
        "token endpoint answers 64 MiB",
        _token_huge,
        "ProtocolError",
        message="larger than",
    ),
    _oauth(
        False,
        "token-refused-endpoint-down",
        "IDM refuses the token at the DELETE, the token endpoint is down",
        _token_refused_then_endpoint_down,
        "ServerError",
        1,  # it arrived, and was refused (401): not carried out
        final="unchanged",
        paused_after=True,  # resuming needs a token too
        message="may still be paused",
    ),
]


@dataclass
class Row:
    """One line of the table as it ran."""

    cell: str
    outcome: str
    sent: int
    reached: int
    resumed: bool
    audit: str
    failures: list[str] = field(default_factory=list)


TABLE_HEADER = (
    f"{'cell':<30} {'outcome':<18} {'changes sent':>12} {'reached':>8} {'resumed':>8}  audit"
)


def table_line(row: Row) -> str:
    """One row of the printed fault-matrix table."""
    return (
        f"{row.cell:<30} {row.outcome:<18} {row.sent:>12} {row.reached:>8} "
        f"{row.resumed!s:>8}  {row.audit}"
    )


# --- TLS material, made here ---------------------------------------------------------------


def _tls(kind: str | None) -> tuple[ssl.SSLContext | None, str | None]:
    """(the proxy's server context, the CA the client trusts) for a TLS cell."""
    if kind is None:
        return None, None
    ours = CertificateAuthority("idmsync-matrix-ca")
    signer = CertificateAuthority("somebody-elses-ca") if kind == "wrong-ca" else ours
    if kind == "wrong-name":
        pair = signer.issue("idm.elsewhere.test", server_dns=["idm.elsewhere.test"])
    else:
        assert kind in ("trusted", "wrong-ca"), kind
        pair = signer.issue("localhost", server_dns=["localhost"], server_ips=["127.0.0.1"])
    return pair.server_context(), ours.cert_pem.decode()


# --- one cell ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _token_endpoint(backend: Backend, cell: Cell) -> Iterator[TokenEndpoint | None]:
    if cell.auth != "oauth":
        yield None
        return
    stub = getattr(backend, "stub", None)
    assert isinstance(stub, IdmStub), "OAuth cells run against the stub"
    with TokenEndpoint(idm=stub) as am:
        am.add_client(CLIENT_ID, CLIENT_SECRET)
        yield am


def _credentials(backend: Backend, setup: Setup) -> Credentials:
    if setup.am is None:
        return AdminCredentials(backend.admin_user, Secret(backend.admin_password))
    flow = ClientCredentialsFlow(
        setup.token_url or setup.am.token_url(), CLIENT_ID, Secret(CLIENT_SECRET)
    )
    if setup.token_deadline is not None:
        flow.answer_deadline = setup.token_deadline
    return flow


async def run_cell(backend: Backend, cell: Cell) -> Row:
    """Run one cell; the Row says what happened and which expectations failed."""
    before = backend.prepare()
    server_tls, trusted_ca = _tls(cell.tls)
    method = "PUT" if cell.action == "Set" else "DELETE"
    error: IdmSyncError | None = None
    with (
        FaultProxy(backend.host, backend.port, tls=server_tls) as proxy,
        _token_endpoint(backend, cell) as am,
    ):
        setup = Setup(proxy, backend, am)
        cell.arrange(setup)
        if cell.unreachable:
            url = f"http://127.0.0.1:{free_port()}"
        elif cell.tls:
            url = f"https://localhost:{proxy.port}"
        else:
            url = proxy.url
        timeout = backend.short_timeout if cell.timed else 30.0
        async with make_http_client(TlsOptions(ca_pem=trusted_ca), timeout=timeout) as http:
            client = IdmClient(
                url, _credentials(backend, setup), http, flavour=Flavour.IDM7, retry=FAST
            )
            options = ResetOptions(
                action=Action(cell.action),
                token=backend.set_token() if cell.action == "Set" else None,
                pause_schedules=True,
                verify_interval=backend.verify_interval,
                verify_timeout=backend.verify_timeout,
            )
            recorded: list[StageProgress] = []

            async def observe(event: Event) -> None:  # what the operator would persist
                if event.stage is not None:
                    recorded.append(event.stage)

            try:
                outcome = await run_reset(
                    client, [StageRef(STAGE_ID, SOURCE)], options, observer=observe
                )
                result = str(outcome.stages[0].result)
            except IdmSyncError as exc:
                error, result = exc, exc.reason
            progress = recorded[-1] if recorded else None
        reached = proxy.reached(method, STAGE)
        paused = backend.scheduler_paused(proxy)
        row = Row(cell.id, result, proxy.sent(method, STAGE), reached, not paused, "n/a")
        seen = backend.changes_seen(method)

    failures = row.failures
    if result != cell.outcome:
        failures.append(f"outcome {result} ({error}), expected {cell.outcome}")
    if reached != cell.changes:
        failures.append(f"{reached} {method}s reached the server, expected {cell.changes}")
    if seen is not None and seen != reached:
        failures.append(f"the server saw {seen} {method}s, the proxy forwarded {reached}")
    if paused is not cell.paused_after:
        failures.append(f"scheduler paused after the reset: {paused}")
    if error is not None:
        text = str(error)
        if cell.message and cell.message not in text:
            failures.append(f"message {text!r} lacks {cell.message!r}")
        if any(secret and secret in text for secret in backend.secrets):
            failures.append("a secret value in the error message")
    if cell.audit is not None:
        expected = (
            before if cell.audit == "initial" else (str(int(before[0]) + 1), backend.latest_token())
        )
        recorded = (progress.previous_rev, progress.previous_token) if progress else None
        row.audit = "right" if recorded == expected else f"WRONG: {recorded} (expected {expected})"
        if recorded != expected:
            failures.append(f"audit {recorded}, expected {expected}")
    stage = backend.stage()
    now = (stage["_rev"], stage["connectorData"]["syncToken"]) if stage else None
    if cell.final == "latest" and (now is None or now[1] != backend.latest_token()):
        failures.append(f"the stage ends {now}, not at the latest token")
    if cell.final == "unchanged" and now != before:
        failures.append(f"the stage ends {now}, was {before}: changed by a failed reset")
    if cell.paused_after:
        backend.resume_scheduler()
    return row
