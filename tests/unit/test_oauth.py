"""OAuth flows end to end: IDM stub + a local token endpoint that verifies what it receives.

Service accounts (RS256 JWT, jwt-bearer grant) and client credentials (form and
Basic), through the engine and through the ``idmsync`` command in a subprocess.
No Kubernetes. Every test scans what it could see (log records, exception
text, the command's stdout/stderr) for the key material, the client secret,
every access token issued and every assertion sent.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from idmsync.auth import (
    AdminCredentials,
    BearerToken,
    ClientCredentialsFlow,
    Credentials,
    CredentialsRegistry,
    Secret,
    ServiceAccountFlow,
    audience_for,
)
from idmsync.cli import credentials_from_env
from idmsync.engine import (
    Event,
    Flavour,
    IdmClient,
    ResetOptions,
    RetryPolicy,
    StageRef,
    StageResult,
    make_http_client,
    run_reset,
)
from idmsync.errors import (
    IdmSyncError,
    InvalidSpec,
    ProtocolError,
    ServerError,
    ServerUnreachable,
    TargetNotAllowed,
    Unauthorized,
)
from tests.stub.fixtures import LDAP_SOURCE, LDAP_STAGE, STAGE_PATH
from tests.stub.idm_stub import IdmStub
from tests.stub.token_endpoint import JWT_BEARER, TokenEndpoint, new_rsa_key, private_jwk

IDMSYNC = str(Path(sys.executable).with_name("idmsync"))
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
LDAP = StageRef(LDAP_STAGE, LDAP_SOURCE)
RESET_STEPS = [
    f"GET {STAGE_PATH}",
    f"DELETE {STAGE_PATH}",
    f"POST {LDAP_SOURCE}",
    f"GET {STAGE_PATH}",
]
SA_ID = "3b8c5a4e-6f1d-4c2b-9a77-sa-idmsync"
CLIENT_ID = "idm-provisioning"
CLIENT_SECRET = "cs-Hq7w/+&=never-print-me"  # characters Basic and forms must encode


@functools.cache
def sa_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


@functools.cache
def other_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


def jwk_text(key: rsa.RSAPrivateKey | None = None) -> str:
    return private_jwk(key or sa_key(), kid="idmsync-test")


def key_material(text: str) -> list[str]:
    document = json.loads(text)
    return [text, *(document[m] for m in ("d", "p", "q", "dp", "dq", "qi"))]


class Clock:
    """An injectable clock, shared by the client and the endpoint where a test says so."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def endpoint(stub: IdmStub) -> Iterator[TokenEndpoint]:
    server = TokenEndpoint(idm=stub).start()
    server.add_service_account(SA_ID, sa_key().public_key())
    server.add_client(CLIENT_ID, CLIENT_SECRET)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(timeout=5.0) as client:
        yield client


def leaked(text: str, endpoint: TokenEndpoint, *extra: str) -> list[str]:
    """Which secret values appear in ``text``: keys, client secret, tokens, assertions."""
    values = [*key_material(jwk_text()), *key_material(jwk_text(other_key())), CLIENT_SECRET]
    values += [t.value for t in endpoint.issued]
    values += [r.form["assertion"] for r in endpoint.requests if "assertion" in r.form]
    values += [r.form["client_secret"] for r in endpoint.requests if "client_secret" in r.form]
    values += list(extra)
    return [v[:12] + "…" for v in values if v and v in text]


@pytest.fixture(autouse=True)
def no_secret_in_logs(
    caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    endpoint: TokenEndpoint | None = None
    if "endpoint" in request.fixturenames:
        endpoint = request.getfixturevalue("endpoint")  # set up first, so torn down after
    yield
    if endpoint is not None:
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert leaked(text, endpoint) == [], "a secret reached a log record"


def service_account(endpoint: TokenEndpoint, **kwargs: object) -> ServiceAccountFlow:
    jwk = kwargs.pop("jwk", jwk_text())
    account = kwargs.pop("account", SA_ID)
    return ServiceAccountFlow(endpoint.url, str(account), Secret(str(jwk)), **kwargs)  # type: ignore[arg-type]


def client_credentials(endpoint: TokenEndpoint, method: str = "form") -> ClientCredentialsFlow:
    return ClientCredentialsFlow(
        endpoint.token_url("/am/oauth2/realms/root/access_token"),
        CLIENT_ID,
        Secret(CLIENT_SECRET),
        auth_method="basic" if method == "basic" else "form",
    )


def idm(stub: IdmStub, credentials: Credentials, http: httpx.AsyncClient) -> IdmClient:
    return IdmClient(stub.url, credentials, http, flavour=Flavour.IDENTITY_CLOUD, retry=FAST)


def assert_refused(exc: IdmSyncError, endpoint: TokenEndpoint, description: str) -> None:
    assert isinstance(exc, Unauthorized), exc
    assert description in exc.message
    assert endpoint.url in exc.message, "the message names the token endpoint"
    assert leaked(str(exc), endpoint) == []


# --- the flows against the endpoint, through the engine ------------------------------


async def test_a_service_account_resets_with_one_verified_jwt_bearer_request(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    flow = service_account(endpoint)
    outcome = await run_reset(idm(stub, flow, http), [LDAP], ResetOptions())

    assert outcome.stages[0].result is StageResult.DELETED
    assert outcome.stages[0].new_token == 105
    assert stub.steps() == RESET_STEPS
    (granted,) = endpoint.requests
    assert granted.status == 200
    assert granted.path == "/am/oauth2/access_token"
    assert {k: v for k, v in granted.form.items() if k != "assertion"} == {
        "client_id": "service-account",
        "grant_type": JWT_BEARER,
        "scope": "fr:idm:*",
    }
    assertion = granted.form["assertion"]
    assert jwt.get_unverified_header(assertion)["kid"] == "idmsync-test"
    claims = jwt.decode(
        assertion,
        sa_key().public_key(),
        algorithms=["RS256"],
        audience=endpoint.audience(),
    )
    assert claims["iss"] == claims["sub"] == SA_ID
    assert claims["aud"] == f"http://127.0.0.1:{endpoint.port}/am/oauth2/access_token"
    assert 0 < claims["exp"] - claims["iat"] <= 180
    assert uuid.UUID(claims["jti"]).version == 4
    (issued,) = endpoint.issued
    assert {r.header("Authorization") for r in stub.requests} == {f"Bearer {issued.value}"}
    assert all(r.header("X-OpenIDM-Username") is None for r in stub.requests)


def test_the_audience_always_names_the_port() -> None:
    assert (
        audience_for("https://Tenant.ForgeBlocks.com/am/oauth2/access_token")
        == "https://tenant.forgeblocks.com:443/am/oauth2/access_token"
    )
    assert audience_for("https://t.example.com:8443/am/oauth2/access_token").endswith(
        "t.example.com:8443/am/oauth2/access_token"
    )
    assert audience_for("http://[::1]/x") == "http://[::1]:80/x"


@pytest.mark.parametrize("method", ["form", "basic"])
async def test_client_credentials_reset_with_the_secret_in_the_form_or_as_basic(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient, method: str
) -> None:
    outcome = await run_reset(
        idm(stub, client_credentials(endpoint, method), http), [LDAP], ResetOptions()
    )

    assert outcome.stages[0].result is StageResult.DELETED
    assert stub.steps() == RESET_STEPS
    (granted,) = endpoint.requests
    assert (granted.status, granted.basic) == (200, method == "basic")
    assert granted.path == "/am/oauth2/realms/root/access_token"
    assert granted.form["grant_type"] == "client_credentials"
    assert granted.form["scope"] == "fr:idm:*"
    if method == "basic":
        assert "client_secret" not in granted.form
        assert "client_id" not in granted.form
    else:
        assert granted.form["client_id"] == CLIENT_ID
    (issued,) = endpoint.issued
    assert issued.subject == CLIENT_ID
    assert {r.header("Authorization") for r in stub.requests} == {f"Bearer {issued.value}"}


# --- the token's lifetime ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["service-account", "client-credentials"])
async def test_a_token_expiring_mid_run_is_renewed_before_use(
    stub: IdmStub, http: httpx.AsyncClient, kind: str
) -> None:
    clock = Clock()
    with TokenEndpoint(idm=stub, expires_in=60, clock=clock) as endpoint:
        endpoint.add_service_account(SA_ID, sa_key().public_key())
        endpoint.add_client(CLIENT_ID, CLIENT_SECRET)
        flow: Credentials
        if kind == "service-account":
            flow = service_account(endpoint, clock=clock)
        else:
            flow = ClientCredentialsFlow(
                endpoint.token_url(), CLIENT_ID, Secret(CLIENT_SECRET), clock=clock
            )

        async def expire_after_delete(event: Event) -> None:
            if event.kind == "StageChanged":
                clock.offset += 61  # the token's 60 s are over, for both sides
                endpoint.expire_all()

        outcome = await run_reset(
            idm(stub, flow, http), [LDAP], ResetOptions(), observer=expire_after_delete
        )

    assert outcome.stages[0].result is StageResult.DELETED
    assert outcome.stages[0].new_token == 105
    assert [r.status for r in endpoint.requests] == [200, 200]
    assert stub.steps() == RESET_STEPS, "renewed before IDM could refuse it: no 401, no retry"
    first, second = (t.value for t in endpoint.issued)
    tokens = [r.header("Authorization") for r in stub.requests]
    assert tokens == [f"Bearer {first}"] * 2 + [f"Bearer {second}"] * 2


async def test_a_token_is_renewed_a_margin_before_its_expiry_not_after(
    stub: IdmStub, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    with TokenEndpoint(idm=stub, expires_in=100, clock=clock) as endpoint:
        endpoint.add_client(CLIENT_ID, CLIENT_SECRET)
        flow = ClientCredentialsFlow(
            endpoint.token_url(), CLIENT_ID, Secret(CLIENT_SECRET), clock=clock
        )
        first = await flow.access_token(http)
        clock.offset += 89  # inside the lifetime minus a 10 % margin
        assert await flow.access_token(http) == first
        assert endpoint.token_requests == 1
        clock.offset += 2  # 91 s: within 10 s of expiry
        assert await flow.access_token(http) != first
        assert endpoint.token_requests == 2


async def test_an_idm_401_on_a_cached_token_refreshes_once_and_retries(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    flow = service_account(endpoint)
    client = idm(stub, flow, http)
    await client.read_stage(LDAP_STAGE)  # a token is cached
    endpoint.expire_all()  # IDM no longer accepts it; the client does not know
    stub.clear_log()

    outcome = await run_reset(client, [LDAP], ResetOptions())

    assert outcome.stages[0].result is StageResult.DELETED
    assert endpoint.token_requests == 2, "exactly one refresh"
    assert stub.steps() == [RESET_STEPS[0], *RESET_STEPS], "the refused read, retried once"
    old, new = (t.value for t in endpoint.issued)
    assert stub.requests[0].header("Authorization") == f"Bearer {old}"
    assert {r.header("Authorization") for r in stub.requests[1:]} == {f"Bearer {new}"}


async def test_idm_refusing_every_token_ends_unauthorized_after_one_refresh(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    stub.fail_next(99, 401)
    with pytest.raises(Unauthorized) as caught:
        await run_reset(idm(stub, client_credentials(endpoint), http), [LDAP], ResetOptions())
    assert endpoint.token_requests == 2
    assert len(stub.requests) == 2, "one retry with the new token, then stop: no storm"
    assert leaked(str(caught.value), endpoint) == []


async def test_concurrent_401s_on_one_token_share_one_new_token(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    flow = client_credentials(endpoint)
    client = idm(stub, flow, http)
    await client.read_stage(LDAP_STAGE)
    endpoint.expire_all()
    endpoint.delay = 0.05
    stages = await asyncio.gather(*(client.read_stage(LDAP_STAGE) for _ in range(20)))
    assert all(s is not None and s.sync_token == 100 for s in stages)
    assert endpoint.token_requests == 2, "twenty refusals of one token, one new token"


async def test_refusals_that_fill_the_pool_still_get_their_new_token(
    stub: IdmStub, endpoint: TokenEndpoint
) -> None:
    # a refused answer lets its connection go before the token request needs one
    async with make_http_client(timeout=3.0, max_connections=2) as http:
        client = idm(stub, client_credentials(endpoint), http)
        await client.read_stage(LDAP_STAGE)
        endpoint.expire_all()
        endpoint.delay = 0.05
        stages = await asyncio.gather(*(client.read_stage(LDAP_STAGE) for _ in range(6)))
    assert all(s is not None and s.sync_token == 100 for s in stages)
    assert endpoint.token_requests == 2


async def test_a_caller_cancelled_while_waiting_does_not_cancel_the_shared_request(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    flow = client_credentials(endpoint)
    endpoint.delay = 0.2
    first = asyncio.create_task(flow.access_token(http))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(idm(stub, flow, http).read_stage(LDAP_STAGE))
    await asyncio.sleep(0.01)
    first.cancel()
    stage = await second
    assert stage is not None
    assert stage.sync_token == 100
    assert endpoint.token_requests == 1
    assert first.cancelled()


# --- many resets, one tenant ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["service-account", "client-credentials"])
async def test_fifty_concurrent_resets_make_exactly_one_token_request(
    stub: IdmStub, endpoint: TokenEndpoint, kind: str
) -> None:
    refs = []
    for n in range(50):
        source = f"system/ldap{n}/account"
        stub.add_source(source, latest=200 + n)
        stub.put_stage(f"SYSTEMLDAP{n}ACCOUNT", n)
        refs.append(StageRef(f"SYSTEMLDAP{n}ACCOUNT", source))
    endpoint.delay = 0.05  # every reset asks while the first request is still in flight
    registry = CredentialsRegistry()

    def credentials() -> Credentials:
        if kind == "service-account":
            return registry.service_account(endpoint.url, SA_ID, Secret(jwk_text()))
        return registry.client_credentials(endpoint.token_url(), CLIENT_ID, Secret(CLIENT_SECRET))

    async with make_http_client(timeout=10.0, max_connections=20) as http:
        outcomes = await asyncio.gather(
            *(run_reset(idm(stub, credentials(), http), [ref], ResetOptions()) for ref in refs)
        )

    assert endpoint.token_requests == 1
    assert len(registry) == 1
    assert [o.stages[0].new_token for o in outcomes] == [200 + n for n in range(50)]
    assert len(stub.requests) == 50 * 4
    (issued,) = endpoint.issued
    assert {r.header("Authorization") for r in stub.requests} == {f"Bearer {issued.value}"}


def test_the_registry_shares_identical_inputs_and_renews_on_rotation() -> None:
    registry = CredentialsRegistry()
    url = "https://am.example.com/am/oauth2/realms/root/access_token"
    one = registry.client_credentials(url, CLIENT_ID, Secret("s1"))
    assert registry.client_credentials(url, CLIENT_ID, Secret("s1")) is one
    assert registry.client_credentials(url, CLIENT_ID, Secret("s2")) is not one, "rotated"
    assert registry.client_credentials(url, CLIENT_ID, Secret("s1"), scope="fr:idm:read") is not (
        registry.client_credentials(url, CLIENT_ID, Secret("s1"))
    )
    assert registry.client_credentials(url, "other", Secret("s1")) is not one
    tenant = "https://tenant.example.com"
    sa = registry.service_account(tenant, SA_ID, Secret(jwk_text()))
    assert registry.service_account(tenant + "/", SA_ID, Secret(jwk_text())) is sa
    assert sa.token_url == "https://tenant.example.com/am/oauth2/access_token"
    assert registry.service_account(tenant, SA_ID, Secret(jwk_text(other_key()))) is not sa
    assert registry.service_account(tenant, "other-account", Secret(jwk_text())) is not sa


# --- the auth flow on the wire (a fake server behind httpx's MockTransport) -----------


class FakeTenant:
    """IDM and its token endpoint on one host, answering through httpx.MockTransport."""

    def __init__(self, *, refuse_first: int = 0, refusal_body: str = "short") -> None:
        self.refuse_first = refuse_first
        self.refusal_body = refusal_body
        self.requests: list[httpx.Request] = []
        self.sent: list[tuple[str, str | None]] = []  # (path, Authorization) as received
        self.tokens = 0
        self.refusal_chunks_sent = 0
        self.idm_location: str | None = None

    async def endless(self) -> AsyncIterator[bytes]:
        while True:
            self.refusal_chunks_sent += 1
            yield b"x" * 65536

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.sent.append((request.url.path, request.headers.get("Authorization")))
        if request.url.path == "/am/oauth2/access_token":
            self.tokens += 1
            return httpx.Response(200, json={"access_token": f"t{self.tokens}", "expires_in": 600})
        if self.idm_location is not None:
            return httpx.Response(307, headers={"Location": self.idm_location})
        if self.refuse_first > 0:
            self.refuse_first -= 1
            if self.refusal_body == "endless":
                return httpx.Response(401, content=self.endless())
            return httpx.Response(401, json={"reason": "Unauthorized"})
        return httpx.Response(
            200, json={"_id": LDAP_STAGE, "_rev": "1", "connectorData": {"syncToken": 100}}
        )

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


async def test_the_body_of_a_refused_request_is_not_read_before_the_retry() -> None:
    tenant = FakeTenant(refuse_first=1, refusal_body="endless")
    flow = ClientCredentialsFlow(
        "https://idm.example.com/am/oauth2/access_token", CLIENT_ID, Secret(CLIENT_SECRET)
    )
    async with tenant.client() as http:
        client = IdmClient("https://idm.example.com", flow, http, flavour=Flavour.IDM7)
        stage = await asyncio.wait_for(client.read_stage(LDAP_STAGE), timeout=5)
    assert stage is not None
    assert stage.sync_token == 100
    assert tenant.tokens == 2, "the refused token, then one new one"
    assert tenant.refusal_chunks_sent <= 1, "the endless 401 body was left unread"
    stage_reads = [auth for path, auth in tenant.sent if path.endswith(LDAP_STAGE)]
    assert stage_reads == ["Bearer t1", "Bearer t2"]


async def test_a_redirect_with_a_token_is_not_followed_and_the_token_goes_nowhere_else() -> None:
    tenant = FakeTenant()
    tenant.idm_location = "https://elsewhere.example.net/openidm/steal"
    flow = ClientCredentialsFlow(
        "https://idm.example.com/am/oauth2/access_token", CLIENT_ID, Secret(CLIENT_SECRET)
    )
    async with tenant.client() as http:
        client = IdmClient("https://idm.example.com", flow, http, flavour=Flavour.IDM7)
        with pytest.raises(ProtocolError, match="never follows redirects"):
            await client.read_stage(LDAP_STAGE)
    assert {r.url.host for r in tenant.requests} == {"idm.example.com"}
    assert tenant.tokens == 1


async def test_static_credentials_are_plain_httpx_auth() -> None:
    tenant = FakeTenant()
    async with tenant.client() as http:
        for credentials, header, value in [
            (BearerToken(Secret("static-never-print-me")), "Authorization", "Bearer static-"),
            (AdminCredentials("admin", Secret("pw")), "X-OpenIDM-Password", "pw"),
        ]:
            auth = credentials.auth(http)
            assert auth is credentials
            await http.get("https://idm.example.com/openidm/info/ping", auth=auth)
            assert tenant.requests[-1].headers[header].startswith(value)
            assert "Cookie" not in tenant.requests[-1].headers


def test_a_token_flow_needs_an_async_client() -> None:
    flow = ClientCredentialsFlow(
        "https://idm.example.com/am/oauth2/access_token", CLIENT_ID, Secret(CLIENT_SECRET)
    )
    auth = flow.auth(httpx.AsyncClient())
    with (
        httpx.Client(transport=httpx.MockTransport(FakeTenant().handle)) as http,
        pytest.raises(RuntimeError, match="AsyncClient"),
    ):
        http.get("https://idm.example.com/openidm/info/ping", auth=auth)


# --- refusals and failures -----------------------------------------------------------


async def test_a_jwt_signed_with_the_wrong_key_is_refused(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    flow = service_account(endpoint, jwk=jwk_text(other_key()))
    with pytest.raises(Unauthorized) as caught:
        await run_reset(idm(stub, flow, http), [LDAP], ResetOptions())
    assert_refused(caught.value, endpoint, "JWT signature does not verify with the account's key")
    assert "invalid_grant" in caught.value.message
    assert stub.requests == [], "IDM never saw a request"
    assert endpoint.token_requests == 1, "a refusal is not retried"


async def test_a_jwt_with_the_wrong_audience_is_refused(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    # the endpoint knows itself as 127.0.0.1: a client naming it localhost signs another aud
    flow = ServiceAccountFlow(f"http://localhost:{endpoint.port}", SA_ID, Secret(jwk_text()))
    with pytest.raises(Unauthorized) as caught:
        await run_reset(idm(stub, flow, http), [LDAP], ResetOptions())
    message = caught.value.message
    assert f"token endpoint http://localhost:{endpoint.port}/am/oauth2/access_token" in message
    assert f"JWT audience is not http://127.0.0.1:{endpoint.port}/am/oauth2/access_token" in message
    assert leaked(message, endpoint) == []
    assert stub.requests == []


async def test_an_unknown_service_account_is_refused(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    flow = service_account(endpoint, account="no-such-account")
    with pytest.raises(Unauthorized) as caught:
        await run_reset(idm(stub, flow, http), [LDAP], ResetOptions())
    assert_refused(caught.value, endpoint, "unknown service account no-such-account")


@pytest.mark.parametrize(("offset", "ok"), [(600.0, False), (-600.0, False), (20.0, True)])
async def test_a_client_clock_off_by_more_than_the_skew_is_refused(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient, offset: float, ok: bool
) -> None:
    endpoint.clock_skew = 30
    flow = service_account(endpoint, clock=Clock(offset))
    if ok:
        await run_reset(idm(stub, flow, http), [LDAP], ResetOptions())
        assert endpoint.token_requests == 1
        return
    with pytest.raises(Unauthorized) as caught:
        await run_reset(idm(stub, flow, http), [LDAP], ResetOptions())
    expected = "iat in the future" if offset > 0 else "JWT has expired"
    assert_refused(caught.value, endpoint, expected)


async def test_a_replayed_assertion_is_refused(
    endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    flow = service_account(endpoint)
    await flow.access_token(http)
    assertion = endpoint.requests[0].form["assertion"]
    replay = await http.post(
        endpoint.token_url(),
        data={
            "client_id": "service-account",
            "grant_type": JWT_BEARER,
            "assertion": assertion,
            "scope": "fr:idm:*",
        },
    )
    assert replay.status_code == 400
    assert replay.json() == {
        "error": "invalid_grant",
        "error_description": "JWT jti has already been used",
    }
    assert endpoint.token_requests == 2
    assert len(endpoint.issued) == 1


@pytest.mark.parametrize("method", ["form", "basic"])
async def test_a_wrong_client_secret_is_refused_as_invalid_client(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient, method: str
) -> None:
    flow = ClientCredentialsFlow(
        endpoint.token_url(),
        CLIENT_ID,
        Secret("wr0ng-never-print-me"),
        auth_method="basic" if method == "basic" else "form",
    )
    with pytest.raises(Unauthorized) as caught:
        await run_reset(idm(stub, flow, http), [LDAP], ResetOptions())
    assert caught.value.status == 401
    assert_refused(caught.value, endpoint, "invalid_client: Client authentication failed")
    assert "wr0ng-never-print-me" not in caught.value.message


async def test_a_scope_the_client_may_not_have_is_refused(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    flow = ClientCredentialsFlow(
        endpoint.token_url(), CLIENT_ID, Secret(CLIENT_SECRET), scope="fr:am:*"
    )
    with pytest.raises(Unauthorized) as caught:
        await flow.access_token(http)
    assert_refused(caught.value, endpoint, "invalid_scope: scope not allowed: fr:am:*")


async def test_a_token_endpoint_5xx_is_retried_by_the_engine(
    stub: IdmStub, endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    endpoint.fail_next(1, 503)
    outcome = await run_reset(idm(stub, service_account(endpoint), http), [LDAP], ResetOptions())
    assert outcome.stages[0].result is StageResult.DELETED
    assert [r.status for r in endpoint.requests] == [503, 200]

    endpoint.fail_next(99, 502)
    flow = client_credentials(endpoint)
    with pytest.raises(ServerError) as caught:
        await flow.access_token(http)
    assert caught.value.requeue
    assert leaked(str(caught.value), endpoint) == []


async def test_a_redirect_from_the_token_endpoint_is_not_followed(
    endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    endpoint.fail_next(1, 307, {"error": "moved"})
    with pytest.raises(ProtocolError, match="never follows redirects"):
        await client_credentials(endpoint).access_token(http)
    assert endpoint.token_requests == 1


async def test_an_unreachable_token_endpoint_is_server_unreachable(
    endpoint: TokenEndpoint, http: httpx.AsyncClient
) -> None:
    flow = service_account(endpoint)
    endpoint.stop()
    with pytest.raises(ServerUnreachable) as caught:
        await flow.access_token(http)
    assert caught.value.requeue
    assert leaked(str(caught.value), endpoint, flow._assertion or "") == []


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ('{"kty": "RSA", "d": "c2VjcmV0LWQtbmV2ZXItcHJpbnQ', "is not JSON"),
        ('{"kty": "EC", "d": "c2VjcmV0LWQtbmV2ZXItcHJpbnQ"}', "must be an RSA key"),
        ("PUBLIC", "holds no private part"),
        ('{"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "c2VjcmV0LWQtbmV2ZXItcHJpbnQ"}', "valid"),
    ],
)
def test_a_bad_jwk_is_invalid_spec_without_quoting_it(jwk: str, message: str) -> None:
    if jwk == "PUBLIC":
        document = json.loads(jwk_text())
        jwk = json.dumps({k: document[k] for k in ("kty", "n", "e")})
    with pytest.raises(InvalidSpec, match=message) as caught:
        ServiceAccountFlow("https://tenant.example.com", SA_ID, Secret(jwk))
    assert "c2VjcmV0" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or "c2VjcmV0" not in str(caught.value.__context__)


def test_secret_values_cover_the_key_the_secret_the_token_and_the_assertion(
    endpoint: TokenEndpoint,
) -> None:
    flow = service_account(endpoint)
    values = flow.secret_values()
    assert all(part in values for part in key_material(jwk_text()))

    async def one() -> None:
        async with make_http_client() as http:
            await flow.access_token(http)

    asyncio.run(one())
    values = flow.secret_values()
    assert endpoint.issued[0].value in values
    assert endpoint.requests[0].form["assertion"] in values
    assert CLIENT_SECRET in client_credentials(endpoint).secret_values()


# --- the command ---------------------------------------------------------------------


def idmsync(
    endpoint: TokenEndpoint, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IDM_")}
    result = subprocess.run(
        [IDMSYNC, *args, "--retry-delay", "0.01"],
        capture_output=True,
        text=True,
        env=environment | env,
        timeout=60,
        check=False,
    )
    assert leaked(result.stdout + result.stderr, endpoint) == [], "a secret reached the output"
    return result


@pytest.fixture
def jwk_file(tmp_path: Path) -> Path:
    path = tmp_path / "sa.jwk"
    path.write_text(jwk_text())
    return path


def test_the_cli_resets_through_a_service_account(
    stub: IdmStub, endpoint: TokenEndpoint, jwk_file: Path
) -> None:
    env = {
        "IDM_SERVICE_ACCOUNT_ID": SA_ID,
        "IDM_SERVICE_ACCOUNT_JWK_FILE": str(jwk_file),
        "IDM_TENANT_URL": endpoint.url,
    }
    result = idmsync(
        endpoint, "reset", "--url", stub.url, "--api", "cloud", "--source", LDAP_SOURCE, "-v",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "SYSTEMLDAPACCOUNT: Deleted; previous rev 1 token 100; new token 105" in result.stdout
    assert stub.steps() == RESET_STEPS
    assert [r.status for r in endpoint.requests] == [200]
    assert endpoint.requests[0].form["client_id"] == "service-account"


@pytest.mark.parametrize("method", ["form", "basic"])
def test_the_cli_resets_through_client_credentials(
    stub: IdmStub, endpoint: TokenEndpoint, method: str
) -> None:
    env = {
        "IDM_CLIENT_ID": CLIENT_ID,
        "IDM_CLIENT_SECRET": CLIENT_SECRET,
        "IDM_TOKEN_URL": endpoint.token_url("/am/oauth2/realms/root/access_token"),
        "IDM_CLIENT_AUTH": method,
        "IDM_SCOPE": "fr:idm:*",
    }
    result = idmsync(endpoint, "reset", "--url", stub.url, "--source", LDAP_SOURCE, "-v", env=env)
    assert result.returncode == 0, result.stderr
    assert "new token 105" in result.stdout
    assert stub.steps() == ["GET info/version", *RESET_STEPS]
    (granted,) = endpoint.requests
    assert (granted.status, granted.basic) == (200, method == "basic")


def test_the_cli_reports_a_refusal_with_the_endpoints_description(
    stub: IdmStub, endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.jwk"
    wrong.write_text(jwk_text(other_key()))
    env = {
        "IDM_SERVICE_ACCOUNT_ID": SA_ID,
        "IDM_SERVICE_ACCOUNT_JWK_FILE": str(wrong),
        "IDM_TENANT_URL": endpoint.url,
    }
    result = idmsync(
        endpoint, "reset", "--url", stub.url, "--api", "cloud", "--source", LDAP_SOURCE, env=env
    )
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("idmsync: error: Unauthorized: token endpoint ")
    assert "JWT signature does not verify with the account's key" in line
    assert stub.requests == []


def test_the_cli_defaults_the_tenant_to_the_url_server(
    stub: IdmStub, endpoint: TokenEndpoint, jwk_file: Path
) -> None:
    env = {"IDM_SERVICE_ACCOUNT_ID": SA_ID, "IDM_SERVICE_ACCOUNT_JWK_FILE": str(jwk_file)}
    result = idmsync(
        endpoint, "reset", "--url", stub.url, "--api", "cloud", "--source", LDAP_SOURCE, env=env
    )
    # the IDM stub is no token endpoint: it refuses, and the message says where we asked
    assert result.returncode == 3
    assert f"token endpoint {stub.url}/am/oauth2/access_token" in result.stderr
    assert [r.path for r in stub.requests] == ["/am/oauth2/access_token"]
    assert stub.requests[0].header("Authorization") is None


@pytest.mark.parametrize("content", ['{"kty": "RSA", "d": "c2VjcmV0LWQtbmV2ZXItcHJpbnQ"', "", None])
def test_the_cli_exits_2_on_a_bad_jwk_file(
    stub: IdmStub, endpoint: TokenEndpoint, tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "bad.jwk"
    if content is not None:
        path.write_text(content)
    env = {
        "IDM_SERVICE_ACCOUNT_ID": SA_ID,
        "IDM_SERVICE_ACCOUNT_JWK_FILE": str(path),
        "IDM_TENANT_URL": endpoint.url,
    }
    result = idmsync(endpoint, "reset", "--url", stub.url, "--source", LDAP_SOURCE, env=env)
    assert result.returncode == 2
    assert "InvalidSpec" in result.stderr
    assert "IDM_SERVICE_ACCOUNT_JWK_FILE" in result.stderr or "JWK" in result.stderr
    assert "c2VjcmV0" not in result.stderr + result.stdout
    assert stub.requests == []
    assert endpoint.requests == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"IDM_CLIENT_ID": "c", "IDM_CLIENT_SECRET": "s", "IDM_BEARER_TOKEN": "t"},
            "not IDM_BEARER_TOKEN and IDM_CLIENT_ID/IDM_CLIENT_SECRET/IDM_TOKEN_URL",
        ),
        (
            {"IDM_CLIENT_ID": "c", "IDM_CLIENT_SECRET": "s"},
            "IDM_CLIENT_ID, IDM_CLIENT_SECRET and IDM_TOKEN_URL go together",
        ),
        (
            {"IDM_SERVICE_ACCOUNT_ID": "a"},
            "IDM_SERVICE_ACCOUNT_ID and IDM_SERVICE_ACCOUNT_JWK_FILE go together",
        ),
        (
            {"IDM_SERVICE_ACCOUNT_ID": "a", "IDM_USERNAME": "u", "IDM_PASSWORD": "p"},
            "exactly one credential set",
        ),
        ({"IDM_BEARER_TOKEN": "t", "IDM_SCOPE": "fr:idm:*"}, "IDM_SCOPE does not apply"),
        (
            {
                "IDM_CLIENT_ID": "c",
                "IDM_CLIENT_SECRET": "s",
                "IDM_TOKEN_URL": "https://a/t",
                "IDM_CLIENT_AUTH": "jwt",
            },
            "IDM_CLIENT_AUTH=jwt",
        ),
        (
            {"IDM_CLIENT_ID": "c", "IDM_CLIENT_SECRET": "s", "IDM_TOKEN_URL": "https://u:p@a/t"},
            "user-info",
        ),
        ({}, "IDM_SERVICE_ACCOUNT_JWK_FILE"),
    ],
)
def test_credential_sets_from_the_environment_are_exactly_one(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        credentials_from_env(env, server_url="https://idm.example.com", allow_insecure_http=False)
    assert message in caught.value.message


def test_a_token_endpoint_in_clear_needs_allow_insecure_http() -> None:
    env = {"IDM_CLIENT_ID": "c", "IDM_CLIENT_SECRET": "s", "IDM_TOKEN_URL": "http://am.example/t"}
    with pytest.raises(TargetNotAllowed, match="in clear"):
        credentials_from_env(env, server_url="https://idm.example.com", allow_insecure_http=False)
    flow = credentials_from_env(env, server_url="https://idm.example.com", allow_insecure_http=True)
    assert isinstance(flow, ClientCredentialsFlow)
    loopback = env | {"IDM_TOKEN_URL": "http://127.0.0.1:9/t"}
    assert isinstance(
        credentials_from_env(loopback, server_url="https://x", allow_insecure_http=False),
        ClientCredentialsFlow,
    )


@pytest.mark.parametrize(
    ("flag", "code", "reason"), [(False, 2, "TargetNotAllowed"), (True, 4, "ServerUnreachable")]
)
def test_the_cli_sends_a_client_secret_in_clear_only_with_allow_insecure_http(
    stub: IdmStub, endpoint: TokenEndpoint, flag: bool, code: int, reason: str
) -> None:
    env = {
        "IDM_CLIENT_ID": CLIENT_ID,
        "IDM_CLIENT_SECRET": CLIENT_SECRET,
        "IDM_TOKEN_URL": "http://am.invalid/am/oauth2/realms/root/access_token",
    }
    flags = ["--allow-insecure-http", "--retries", "1"] if flag else []
    result = idmsync(endpoint, "reset", "--url", stub.url, "--source", LDAP_SOURCE, *flags, env=env)
    assert result.returncode == code
    assert f"idmsync: error: {reason}: " in result.stderr
    assert stub.requests == []
