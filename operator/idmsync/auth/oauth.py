"""OAuth 2.0 access tokens for IDM: Identity Cloud service accounts and client credentials.

Both flows get an access token from a token endpoint, cache it until shortly
before it expires and send it as ``Authorization: Bearer``, as an
:class:`httpx.Auth` flow. Concurrent callers share one token request in flight.
After IDM refuses a token (401) the flow drops it once and sends the request
again with a new one; every request that carried the refused token retries
with the one new token (no retry storm).

- :class:`ServiceAccountFlow`: an RS256 JWT signed with the service account's
  private JWK, exchanged with the ``jwt-bearer`` grant (RFC 7523), as Identity
  Cloud and AM expect it.
- :class:`ClientCredentialsFlow`: ``grant_type=client_credentials`` (RFC 6749
  4.4), the client secret in the form or as HTTP Basic (ForgeOps
  ``idm-provisioning``).
- :class:`CredentialsRegistry`: one instance per identical set of inputs, so
  every reset of an operator shares the token cache of its tenant.

The token endpoint's refusals become :class:`~idmsync.errors.Unauthorized`
carrying the server's ``error_description``; no message ever contains the
client secret, the key, the assertion or an access token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from idmsync.auth.base import Credentials, Secret
from idmsync.bounded import AnswerTooLarge, leave_unread, send_bounded
from idmsync.errors import (
    IdmSyncError,
    InternalError,
    InvalidSpec,
    ProtocolError,
    ServerError,
    ServerUnreachable,
    Unauthorized,
    clip,
    redirect_refused,
)
from idmsync.urls import default_port, parse_url

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "DEFAULT_SCOPE",
    "JWT_BEARER_GRANT",
    "SERVICE_ACCOUNT_CLIENT_ID",
    "ClientCredentialsFlow",
    "CredentialsRegistry",
    "ServiceAccountFlow",
    "audience_for",
]

log = logging.getLogger(__name__)

DEFAULT_SCOPE = "fr:idm:*"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SERVICE_ACCOUNT_CLIENT_ID = "service-account"
#: lifetime of a service-account assertion (Identity Cloud: at most 180 s is advised,
#: AM refuses more than 30 min)
ASSERTION_LIFETIME = 180
#: a token is renewed this long before it expires: 10 % of its lifetime, at most 30 s
MAX_EXPIRY_MARGIN = 30.0
#: the largest token endpoint answer read, and the longest it may take to arrive whole
MAX_TOKEN_ANSWER_BYTES = 256 * 1024
TOKEN_ANSWER_DEADLINE = 30.0
_JWK_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")

#: how many flows a registry keeps; past it, the least recently used is forgotten (its
#: users keep it; the next reset of that account gets a new flow and a new token)
MAX_REGISTRY_FLOWS = 256


@dataclass(frozen=True, eq=False)  # compared by identity: which token IDM refused
class _Token:
    value: str
    renew_at: float | None  # None: the server gave no lifetime; use it until IDM refuses it


def _validate_url(url: str, what: str) -> str:
    """http(s)://host[:port][/path] with no user-info, query or fragment."""
    return parse_url(url, what=what, path=True).text


def audience_for(token_url: str) -> str:
    """The ``aud`` AM expects: ``scheme://host:port/path`` with the port always written.

    ``https://tenant.example.com/am/oauth2/access_token`` becomes
    ``https://tenant.example.com:443/am/oauth2/access_token``.
    """
    parts = urlsplit(token_url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or default_port(scheme)
    return f"{scheme}://{host}:{port}{parts.path}"


def _form_encode(value: str) -> str:
    return quote(value, safe="")


class _TokenFlow(Credentials):
    """What both grants share: the cache, the single flight, refresh and error mapping."""

    grant: str = "token request"
    #: a token answer is a few hundred bytes: a huge or endless one is refused ...
    max_answer_bytes: int = MAX_TOKEN_ANSWER_BYTES
    #: ... and so is one that does not arrive whole in time (a slow drip)
    answer_deadline: float = TOKEN_ANSWER_DEADLINE

    def __init__(self, token_url: str, scope: str, clock: Callable[[], float]) -> None:
        self.token_url = _validate_url(token_url, "the token URL")
        self.scope = scope
        self._clock = clock
        self._token: _Token | None = None
        self._inflight: asyncio.Task[_Token] | None = None

    # --- Credentials -------------------------------------------------------------

    def auth(self, http: httpx.AsyncClient) -> httpx.Auth:
        return _TokenAuth(self, http)

    def secret_values(self) -> tuple[str, ...]:
        values = list(self._static_secrets())
        if self._token is not None:
            values.append(self._token.value)
        return tuple(v for v in values if v)

    async def access_token(self, http: httpx.AsyncClient) -> str:
        """The cached token, or a new one fetched through ``http`` (one request in flight)."""
        return (await self._access_token(http)).value

    # --- for subclasses ----------------------------------------------------------

    def _static_secrets(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _request(self) -> tuple[dict[str, str], dict[str, str]]:
        """The form and the extra headers of one token request."""
        raise NotImplementedError

    # --- the token ---------------------------------------------------------------

    def _refused(self, token: _Token) -> None:
        """IDM answered 401 to ``token``: drop it, unless a newer one already replaced it
        (it expired, or a concurrent request saw the same 401): a refused token costs at
        most one new token, however many requests carried it."""
        if self._token is token:
            self._token = None
            log.info("IDM refused the access token from %s; requesting a new one", self.token_url)

    async def _access_token(self, http: httpx.AsyncClient) -> _Token:
        token = self._token
        if token is not None and (token.renew_at is None or self._clock() < token.renew_at):
            return token
        loop = asyncio.get_running_loop()
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._fetch(http))
            self._inflight = task
            task.add_done_callback(self._fetch_done)
        # shield: a caller cancelled while waiting does not cancel the others' request
        return await asyncio.shield(task)

    def _fetch_done(self, task: asyncio.Task[_Token]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning if every waiter left

    async def _fetch(self, client: httpx.AsyncClient) -> _Token:
        started = self._clock()
        form, headers = self._request()
        log.info("requesting an access token from %s (%s)", self.token_url, self.grant)
        request = client.build_request(
            "POST", self.token_url, data=form, headers={"Accept": "application/json", **headers}
        )
        try:
            response = await send_bounded(
                client, request, max_bytes=self.max_answer_bytes, deadline=self.answer_deadline
            )
        except AnswerTooLarge as exc:
            raise ProtocolError(
                f"token endpoint {self.token_url}: {exc}; not read further", status=exc.status
            ) from None
        except TimeoutError:
            raise ServerUnreachable(
                f"token endpoint {self.token_url}: no complete answer within "
                f"{self.answer_deadline:g}s"
            ) from None
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(
                f"token endpoint {self.token_url}: timed out ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"token endpoint {self.token_url}: {type(exc).__name__}: {self._clip(str(exc))}"
            ) from None
        body = self._json(response)
        if response.status_code != 200:
            raise self._refusal(response, body)
        return self._accept(body, started)

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError):
            return None

    def _refusal(self, response: httpx.Response, body: Any) -> IdmSyncError:
        status = response.status_code
        where = f"token endpoint {self.token_url}"
        error = body.get("error") if isinstance(body, dict) else None
        description = body.get("error_description") if isinstance(body, dict) else None
        detail = ": ".join(str(part) for part in (error, description) if part)
        detail = self._clip(detail or response.reason_phrase)
        if 300 <= status < 400:
            return redirect_refused(where, status, response.headers.get("location"))
        if status in (400, 401) or (status == 403 and error):
            return Unauthorized(
                f"{where} refused the {self.grant} ({status}): {detail}", status=status
            )
        if status >= 500 or status == 429:
            return ServerError(f"{where}: {status} {detail}", status=status)
        # 403 without an OAuth error, 404, 405...: most likely not a token endpoint
        return ProtocolError(
            f"{where}: {status} {detail}; is this the token endpoint of the realm?",
            status=status,
        )

    def _accept(self, body: Any, started: float) -> _Token:
        where = f"token endpoint {self.token_url}"
        if not isinstance(body, dict):
            raise ProtocolError(f"{where}: 200 with a body that is not a JSON object")
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise ProtocolError(f"{where}: the answer has no access_token")
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise ProtocolError(f"{where}: token_type {token_type!r} is not Bearer")
        lifetime = body.get("expires_in")
        renew_at: float | None = None
        if lifetime is not None:
            try:
                seconds = float(lifetime)
            except (TypeError, ValueError):
                raise ProtocolError(f"{where}: expires_in {lifetime!r} is not a number") from None
            renew_at = started + seconds - min(MAX_EXPIRY_MARGIN, 0.1 * seconds)
        token = _Token(value=value, renew_at=renew_at)
        self._token = token
        return token

    def _clip(self, text: str) -> str:
        return clip(text, self.secret_values())


class _TokenAuth(httpx.Auth):
    """A token flow's httpx auth for one client: the token as ``Authorization: Bearer``;
    after IDM answers 401, the request again, once, with a new token."""

    def __init__(self, flow: _TokenFlow, http: httpx.AsyncClient) -> None:
        self._flow = flow
        self._http = http

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("OAuth flows fetch their token asynchronously: use an AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._flow._access_token(self._http)
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code != 401:
            return
        self._flow._refused(token)
        await leave_unread(response)  # the refusal's body is not needed: not read at all
        token = await self._flow._access_token(self._http)
        request.headers["Authorization"] = f"Bearer {token.value}"
        yield request  # its answer, a second 401 included, is the caller's


def _parse_private_jwk(private_jwk: Secret) -> tuple[RSAPrivateKey, str | None, tuple[str, ...]]:
    """The RSA private key, its ``kid`` and every secret string in the JWK text.

    Accepts the JWK Identity Cloud lets you download, or a JWK set holding one key.
    Errors never quote the text: it is key material.
    """
    # imported when a service account is used: they cost the operator's start-up otherwise
    import jwt
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    text = private_jwk.reveal()
    what = "the service account's private JWK"
    try:
        document = json.loads(text)
    except ValueError:
        raise InvalidSpec(
            f"{what} is not JSON (expected the key file Identity Cloud gives)"
        ) from None
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        keys = document["keys"]
        if len(keys) != 1:
            raise InvalidSpec(f"{what} is a JWK set of {len(keys)} keys; give exactly one key")
        document = keys[0]
    if not isinstance(document, dict):
        raise InvalidSpec(f"{what} is not a JSON object")
    secrets = [text, text.strip()]
    secrets.extend(
        str(document[m]) for m in _JWK_PRIVATE_MEMBERS if isinstance(document.get(m), str)
    )
    if document.get("kty") != "RSA":
        raise InvalidSpec(f"{what} must be an RSA key (kty RSA), not kty {document.get('kty')!r}")
    if "d" not in document:
        raise InvalidSpec(f"{what} holds no private part (d): it is a public key")
    try:
        key = jwt.algorithms.RSAAlgorithm.from_jwk(document)
    except (jwt.exceptions.PyJWTError, ValueError, TypeError, KeyError):
        raise InvalidSpec(f"{what} is not a valid RSA private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise InvalidSpec(f"{what} holds no private key")
    if key.key_size < 2048:
        raise InvalidSpec(f"{what} is a {key.key_size}-bit key; RS256 needs at least 2048 bits")
    kid = document.get("kid")
    return key, kid if isinstance(kid, str) else None, tuple(secrets)


class ServiceAccountFlow(_TokenFlow):
    """An Identity Cloud service account: a signed JWT exchanged for an access token."""

    kind = "service account"
    grant = "service-account JWT (jwt-bearer grant)"

    def __init__(
        self,
        tenant_url: str,
        account_id: str,
        private_jwk: Secret,
        *,
        scope: str = DEFAULT_SCOPE,
        token_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant_url = _validate_url(tenant_url, "the tenant URL")
        super().__init__(token_url or f"{self.tenant_url}/am/oauth2/access_token", scope, clock)
        if not account_id:
            raise InvalidSpec("the service account id is empty")
        self.account_id = account_id
        self.audience = audience_for(self.token_url)
        self._key, self._kid, self._key_secrets = _parse_private_jwk(private_jwk)
        self._assertion: str | None = None

    def assertion(self) -> str:
        """A fresh signed JWT: iss = sub = the account, aud = the token endpoint, 180 s."""
        now = self._clock()
        claims = {
            "iss": self.account_id,
            "sub": self.account_id,
            "aud": self.audience,
            "iat": int(now),
            "exp": int(now) + ASSERTION_LIFETIME,
            "jti": str(uuid.uuid4()),
        }
        headers = {"kid": self._kid} if self._kid else None
        import jwt

        self._assertion = jwt.encode(claims, self._key, algorithm="RS256", headers=headers)
        return self._assertion

    def _request(self) -> tuple[dict[str, str], dict[str, str]]:
        form = {
            "client_id": SERVICE_ACCOUNT_CLIENT_ID,
            "grant_type": JWT_BEARER_GRANT,
            "assertion": self.assertion(),
        }
        if self.scope:
            form["scope"] = self.scope
        return form, {}

    def _static_secrets(self) -> tuple[str, ...]:
        return (*self._key_secrets, self._assertion or "")


class ClientCredentialsFlow(_TokenFlow):
    """An OAuth client: ``grant_type=client_credentials`` (ForgeOps ``idm-provisioning``)."""

    kind = "client credentials"
    grant = "client credentials"

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: Secret,
        *,
        scope: str = DEFAULT_SCOPE,
        auth_method: Literal["form", "basic"] = "form",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(token_url, scope, clock)
        if not client_id:
            raise InvalidSpec("the OAuth client id is empty")
        if auth_method not in ("form", "basic"):
            raise InvalidSpec(f"client auth method {auth_method!r}: use form or basic")
        self.client_id = client_id
        self.auth_method = auth_method
        self._secret = client_secret

    def _request(self) -> tuple[dict[str, str], dict[str, str]]:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.auth_method == "basic":
            # RFC 6749 2.3.1: both parts form-urlencoded, then base64
            pair = f"{_form_encode(self.client_id)}:{_form_encode(self._secret.reveal())}"
            basic = base64.b64encode(pair.encode()).decode()
            return form, {"Authorization": f"Basic {basic}"}
        form["client_id"] = self.client_id
        form["client_secret"] = self._secret.reveal()
        return form, {}

    def _static_secrets(self) -> tuple[str, ...]:
        secret = self._secret.reveal()
        pair = f"{_form_encode(self.client_id)}:{_form_encode(secret)}"
        return (secret, _form_encode(secret), base64.b64encode(pair.encode()).decode())


def _digest(secret: Secret) -> str:
    return hashlib.sha256(secret.reveal().encode()).hexdigest()


class CredentialsRegistry:
    """One flow instance per identical inputs: resets of one tenant share its token.

    Keyed by (kind, token URL, client or account id, scope, client auth method); the
    SHA-256 of the secret material decides whether the cached instance is still the
    right one: a rotated secret replaces it with a new instance (and a new token).
    Keep one registry per operator (its context) or per command (the CLI); it is used
    from one event loop. It holds at most ``max_flows``, the least recently used
    forgotten first (their users keep them; the next reset makes a new one).
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, max_flows: int = MAX_REGISTRY_FLOWS
    ) -> None:
        self._clock = clock
        self._max_flows = max_flows
        self._flows: OrderedDict[tuple[str, ...], tuple[str, _TokenFlow]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flows)

    def service_account(
        self,
        tenant_url: str,
        account_id: str,
        private_jwk: Secret,
        *,
        scope: str = DEFAULT_SCOPE,
        token_url: str | None = None,
    ) -> ServiceAccountFlow:
        resolved = (
            token_url or f"{_validate_url(tenant_url, 'the tenant URL')}/am/oauth2/access_token"
        )
        key = ("service-account", _validate_url(resolved, "the token URL"), account_id, scope)

        def make() -> ServiceAccountFlow:
            return ServiceAccountFlow(
                tenant_url,
                account_id,
                private_jwk,
                scope=scope,
                token_url=token_url,
                clock=self._clock,
            )

        flow = self._get(key, _digest(private_jwk), make)
        if not isinstance(flow, ServiceAccountFlow):
            raise InternalError(f"credentials cache: {key[0]} key holds a {type(flow).__name__}")
        return flow

    def client_credentials(
        self,
        token_url: str,
        client_id: str,
        client_secret: Secret,
        *,
        scope: str = DEFAULT_SCOPE,
        auth_method: Literal["form", "basic"] = "form",
    ) -> ClientCredentialsFlow:
        key = (
            "client-credentials",
            _validate_url(token_url, "the token URL"),
            client_id,
            scope,
            auth_method,
        )

        def make() -> ClientCredentialsFlow:
            return ClientCredentialsFlow(
                token_url,
                client_id,
                client_secret,
                scope=scope,
                auth_method=auth_method,
                clock=self._clock,
            )

        flow = self._get(key, _digest(client_secret), make)
        if not isinstance(flow, ClientCredentialsFlow):
            raise InternalError(f"credentials cache: {key[0]} key holds a {type(flow).__name__}")
        return flow

    def _get(self, key: tuple[str, ...], digest: str, make: Callable[[], _TokenFlow]) -> _TokenFlow:
        found = self._flows.get(key)
        if found is not None and found[0] == digest:
            self._flows.move_to_end(key)
            return found[1]
        flow = make()  # may fail with InvalidSpec (a bad JWK): nothing is kept then
        self._flows[key] = (digest, flow)
        self._flows.move_to_end(key)
        while len(self._flows) > self._max_flows:
            self._flows.popitem(last=False)
        return flow
