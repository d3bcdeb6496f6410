"""Hostile input: each case is refused or bounded before any credential leaves.

Where a forbidden place can listen (loopback ports standing in for a host the operator
must not reach, a redirect's destination), a Tripwire socket listens there and the test
proves that no connection, and so no credential, arrived. Addresses a test cannot bind
(link-local, cloud metadata) are checked by the refusal alone: it happens before any
connection is attempted. The table as it ran is printed at the end of the module.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from idmsync.auth import AdminCredentials, Secret
from idmsync.controller.context import OperatorContext
from idmsync.controller.reconcile import reconcile
from idmsync.controller.settings import OperatorSettings
from idmsync.engine import (
    Flavour,
    IdmClient,
    ResetOptions,
    RetryPolicy,
    StageRef,
    make_http_client,
    policy,
    run_reset,
)
from idmsync.errors import IdmSyncError
from tests.harness.fake_kube import FakeKube
from tests.harness.net import Tripwire
from tests.harness.report import table_at_end
from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER, LDAP_SOURCE, LDAP_STAGE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
LDAP = StageRef(LDAP_STAGE, LDAP_SOURCE)
NAMESPACE = "identity"
ROWS: list[tuple[str, str, str]] = []


_print_the_table = table_at_end(
    "hostile input",
    f"{'case':<46} {'outcome':<20} arrived at the forbidden place",
    ROWS,
    lambda case, outcome, arrived: f"{case:<46} {outcome:<20} {arrived}",
)


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    yield wire
    wire.close()


# --- answers: bounded in size and time --------------------------------------------------


async def _reset(stub: IdmStub, **client: Any) -> str:
    async with make_http_client(timeout=2.0) as http:
        idm = IdmClient(
            stub.url,
            AdminCredentials(ADMIN_USER, Secret(ADMIN_PASSWORD)),
            http,
            flavour=Flavour.IDM7,
            retry=FAST,
            **client,
        )
        try:
            outcome = await run_reset(idm, [LDAP], ResetOptions(verify=False))
        except IdmSyncError as exc:
            return f"{exc.reason}: {exc.message}"
        return str(outcome.stages[0].result)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("huge", "ProtocolError: GET .* answer larger than 4194304 bytes"),
        ("endless", "ProtocolError: GET .* answer larger than 4194304 bytes"),
        ("drip", "ServerUnreachable: GET .* no complete answer within 0.5s"),
    ],
)
async def test_a_hostile_answer_body_is_bounded(stub: IdmStub, body: str, expected: str) -> None:
    stub.hostile_body_next(99, body, method="GET", path=STAGE_PATH)
    outcome = await _reset(stub, answer_deadline=0.5)
    ROWS.append((f"{body} body on the stage read", outcome.split(":")[0], "n/a"))
    assert re.match(expected, outcome), outcome
    assert stub.requests_to(STAGE_PATH, "DELETE") == []


async def test_a_huge_answer_to_a_delete_is_not_read(stub: IdmStub) -> None:
    stub.hostile_body_next(1, "huge", method="DELETE")
    outcome = await _reset(stub)
    ROWS.append(("huge body on the DELETE answer", outcome, "n/a"))
    assert outcome == "Deleted"
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1


async def test_a_redirect_elsewhere_is_not_followed(stub: IdmStub, tripwire: Tripwire) -> None:
    stub.redirect_next(1, f"http://127.0.0.1:{tripwire.port}/openidm/{STAGE_PATH}")
    outcome = await _reset(stub)
    ROWS.append(("redirect to another host", outcome.split(":")[0], str(tripwire.connections)))
    assert outcome.startswith("ProtocolError")
    assert "never follows redirects" in outcome
    assert tripwire.connections == 0


# --- targets: refused before any connection ---------------------------------------------


class Operator:
    def __init__(self, stub: IdmStub) -> None:
        self.kube = FakeKube()
        self.kube.add_secret(
            NAMESPACE, "idm-admin", {"username": ADMIN_USER, "password": ADMIN_PASSWORD}
        )
        self.kube.add_secret(NAMESPACE, "oauth", {"clientId": "c", "clientSecret": ADMIN_PASSWORD})
        settings = OperatorSettings(
            # the numeric hosts: an allow-list that names them still never reaches them
            allowed_targets="https://*.allowed.example,https://2852039166,https://0xa9fea9fe",
            retry_limit=0,
            service_url_template="{scheme}://127.0.0.1:{port}",
        )
        self.context = OperatorContext(settings=settings, kube=self.kube)

    async def run(self, spec: dict[str, Any]) -> tuple[str, str]:
        self.kube.add_reset(NAMESPACE, "hostile", spec)
        await reconcile(self.context, NAMESPACE, "hostile", lambda *_: None)
        status = self.kube.status(NAMESPACE, "hostile")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        return ready["reason"], ready["message"]


@pytest.fixture
async def operator(stub: IdmStub) -> AsyncIterator[Operator]:
    harness = Operator(stub)
    yield harness
    await harness.context.close()


def _spec(target: dict[str, Any], auth: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "target": target,
        "auth": auth or {"adminSecretRef": {"name": "idm-admin"}},
        "api": "IDM7",
        "stages": {"sources": [LDAP_SOURCE]},
    }


@dataclass(frozen=True)
class Target:
    id: str
    spec: Callable[[int], dict[str, Any]]  # given the tripwire's port
    reason: str
    message: str
    listens: bool = True  # the tripwire stands in for the forbidden place


TARGETS = [
    Target(
        "url to loopback (not allowed in a cluster)",
        lambda port: _spec({"url": f"http://127.0.0.1:{port}"}),
        "TargetNotAllowed",
        "not in the operator's allow-list",
    ),
    Target(
        "url to localhost",
        lambda port: _spec({"url": f"http://localhost:{port}"}),
        "TargetNotAllowed",
        "not in the operator's allow-list",
    ),
    Target(
        "ExternalName Service to loopback",
        lambda port: _spec({"service": {"name": "outside", "port": port}}),
        "TargetNotAllowed",
        "not in the operator's allow-list",
    ),
    Target(
        "OAuth tokenUrl to loopback",
        lambda port: _spec(
            {"url": "https://idm.allowed.example"},
            {
                "clientCredentials": {
                    "tokenUrl": f"http://127.0.0.1:{port}/token",
                    "secretRef": {"name": "oauth"},
                }
            },
        ),
        "TargetNotAllowed",
        "not in the operator's allow-list",
    ),
    Target(
        "cloud metadata address",
        lambda port: _spec({"url": "http://169.254.169.254"}),
        "TargetNotAllowed",
        "link-local or cloud-metadata",
        listens=False,
    ),
    Target(
        "metadata host name",
        lambda port: _spec({"url": "https://metadata.google.internal"}),
        "TargetNotAllowed",
        "link-local or cloud-metadata",
        listens=False,
    ),
    Target(
        "IPv6 link-local",
        lambda port: _spec({"url": "https://[fe80::1]:8443"}),
        "TargetNotAllowed",
        "link-local or cloud-metadata",
        listens=False,
    ),
    Target(
        "allowed suffix inside a longer name",
        lambda port: _spec({"url": "https://idm.allowed.example.attacker.test"}),
        "TargetNotAllowed",
        "not in the operator's allow-list",
        listens=False,
    ),
    Target(
        "plain http to an https-only allowed host",
        lambda port: _spec({"url": "http://idm.allowed.example"}),
        "TargetNotAllowed",
        "in clear",
        listens=False,
    ),
    Target(
        "Secret in another namespace",
        lambda port: _spec(
            {"url": "https://idm.allowed.example"},
            {"adminSecretRef": {"name": "idm-admin", "namespace": "kube-system"}},
        ),
        "InvalidSpec",
        "Extra inputs are not permitted",
        listens=False,
    ),
]


#: what the (fake) DNS answers for names under allowed.example; other names: the system's
DNS = {
    "meta.allowed.example": ["169.254.169.254"],
    "v6.allowed.example": ["fe80::1%eth0"],
    "mixed.allowed.example": ["10.0.0.5", "169.254.169.254"],
    "mapped.allowed.example": ["::ffff:169.254.169.254"],
    "am.allowed.example": ["169.254.169.254"],
    "idm.allowed.example": ["10.0.0.5"],
}

TARGETS += [
    Target(
        "DNS name resolving to the metadata address",
        lambda port: _spec({"url": "https://meta.allowed.example"}),
        "TargetNotAllowed",
        "resolves to 169.254.169.254",
        listens=False,
    ),
    Target(
        "DNS name resolving to IPv6 link-local",
        lambda port: _spec({"url": "https://v6.allowed.example"}),
        "TargetNotAllowed",
        "resolves to fe80::1%eth0",
        listens=False,
    ),
    Target(
        "DNS name with a metadata address among others",
        lambda port: _spec({"url": "https://mixed.allowed.example"}),
        "TargetNotAllowed",
        "resolves to 169.254.169.254",
        listens=False,
    ),
    Target(
        "DNS name resolving to IPv4-mapped metadata",
        lambda port: _spec({"url": "https://mapped.allowed.example"}),
        "TargetNotAllowed",
        "resolves to ::ffff:169.254.169.254",
        listens=False,
    ),
    Target(
        "metadata address as an integer (allowed)",
        lambda port: _spec({"url": "https://2852039166"}),
        "TargetNotAllowed",
        "2852039166 resolves to 169.254.169.254",
        listens=False,
    ),
    Target(
        "metadata address in hex (allowed)",
        lambda port: _spec({"url": "https://0xa9fea9fe"}),
        "TargetNotAllowed",
        "0xa9fea9fe resolves to 169.254.169.254",
        listens=False,
    ),
    Target(
        "IPv4-mapped IPv6 metadata literal",
        lambda port: _spec({"url": "https://[::ffff:169.254.169.254]"}),
        "TargetNotAllowed",
        "link-local or cloud-metadata",
        listens=False,
    ),
    Target(
        "OAuth tokenUrl name resolving to metadata",
        lambda port: _spec(
            {"url": "https://idm.allowed.example"},
            {
                "clientCredentials": {
                    "tokenUrl": "https://am.allowed.example/am/oauth2/access_token",
                    "secretRef": {"name": "oauth"},
                }
            },
        ),
        "TargetNotAllowed",
        "am.allowed.example resolves to 169.254.169.254",
        listens=False,
    ),
]


@pytest.fixture(autouse=True)
def _dns(monkeypatch: pytest.MonkeyPatch) -> None:
    real = policy.resolve_host

    async def resolve(host: str, port: int) -> list[str]:
        if host.endswith(".allowed.example"):
            if host not in DNS:
                raise OSError(f"no such name {host}")
            return DNS[host]
        return await real(host, port)

    monkeypatch.setattr(policy, "resolve_host", resolve)


@pytest.mark.parametrize("case", TARGETS, ids=[t.id for t in TARGETS])
async def test_a_forbidden_target_is_refused_before_any_connection(
    operator: Operator, stub: IdmStub, tripwire: Tripwire, case: Target
) -> None:
    operator.kube.add_service(NAMESPACE, "outside", tripwire.port, external_name="127.0.0.1")
    reason, message = await operator.run(case.spec(tripwire.port))
    arrived = str(tripwire.connections) if case.listens else "n/a (refused before connecting)"
    ROWS.append((case.id, reason, arrived))
    assert (reason, case.message in message) == (case.reason, True), message
    assert tripwire.connections == 0
    assert ADMIN_PASSWORD.encode() not in tripwire.received
    assert stub.requests == []
