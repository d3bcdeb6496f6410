"""A local OAuth 2.0 token endpoint that verifies what it receives, like AM does. Not shipped.

Identity Cloud has no public test server, so the auth flows are tested against
this: it answers ``POST <path>`` (default ``/am/oauth2/access_token`` and
``/am/oauth2/realms/root/access_token``) on 127.0.0.1 only, in its own thread
with its own event loop (like :mod:`tests.stub.idm_stub`), and checks:

- ``jwt-bearer`` (service accounts): ``client_id=service-account``; the JWT's
  RS256 signature with the registered account's public key; ``iss`` = ``sub`` =
  a registered account; ``aud`` = ``http://127.0.0.1:<port><path>`` (the port
  always written, as AM wants it); ``exp`` present, not passed and at most
  ``max_assertion_lifetime`` (180 s) ahead; ``iat`` not in the future; all
  within ``clock_skew`` seconds; ``jti`` present and never seen before (a replay
  is refused); the requested scope allowed for the account.
- ``client_credentials``: the client id and secret in the form or as HTTP Basic
  (RFC 6749 2.3.1 encoding), exactly one of the two; the scope allowed.

Refusals are AM-shaped: ``{"error": ..., "error_description": ...}`` with 400
(``invalid_request``, ``invalid_grant``, ``invalid_scope``,
``unsupported_grant_type``) or 401 (``invalid_client``). Issued tokens are
opaque, live ``expires_in`` seconds, and are registered into a linked
:class:`IdmStub`'s ``bearer_tokens`` so IDM accepts them; :meth:`expire_all` and
:meth:`revoke` take them back out. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.stub.idm_stub import IdmStub, hostile_body
from tests.stub.loopback_server import LoopbackServer

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_CREDENTIALS = "client_credentials"
DEFAULT_PATHS = ("/am/oauth2/access_token", "/am/oauth2/realms/root/access_token")


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_jwk(key: rsa.RSAPrivateKey, *, kid: str | None = None) -> str:
    """The JSON text of an RSA private JWK, shaped like Identity Cloud's download."""
    document = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    document |= {"use": "sig", "alg": "RS256"}
    if kid:
        document["kid"] = kid
    return json.dumps(document, indent=2)


@dataclass(frozen=True)
class TokenRequest:
    path: str
    form: dict[str, str]
    basic: bool  # the client authenticated with HTTP Basic
    status: int
    error: str | None

    @property
    def grant_type(self) -> str | None:
        return self.form.get("grant_type")


@dataclass(frozen=True)
class IssuedToken:
    value: str
    subject: str
    scope: str
    grant: str
    expires_at: float


@dataclass
class _Account:
    account_id: str
    public_key: rsa.RSAPublicKey
    scopes: frozenset[str]


@dataclass
class _Client:
    client_id: str
    secret: str
    scopes: frozenset[str]
    methods: frozenset[str]  # "form", "basic"


@dataclass
class _Fault:
    remaining: int
    status: int
    body: dict[str, Any] | None
    hostile: str = ""  # huge | endless | drip: a 200 whose body never ends well


class _Refusal(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass
class TokenEndpoint:
    """Start with :meth:`start` (or as a context manager); register accounts and clients."""

    idm: IdmStub | None = None
    expires_in: int = 899
    clock: Callable[[], float] = time.time
    clock_skew: float = 0.0
    max_assertion_lifetime: int = 180
    paths: tuple[str, ...] = DEFAULT_PATHS
    #: seconds every answer waits, to make concurrent callers overlap for sure
    delay: float = 0.0
    requests: list[TokenRequest] = field(default_factory=list)
    issued: list[IssuedToken] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._accounts: dict[str, _Account] = {}
        self._clients: dict[str, _Client] = {}
        self._seen_jti: set[str] = set()
        self._faults: list[_Fault] = []
        self._server = LoopbackServer(self._make_app, "token-endpoint")

    # --- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The tenant URL (the service-account endpoint is ``{url}/am/oauth2/access_token``)."""
        return f"http://127.0.0.1:{self.port}"

    def token_url(self, path: str = DEFAULT_PATHS[0]) -> str:
        return self.url + path

    def audience(self, path: str = DEFAULT_PATHS[0]) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> TokenEndpoint:
        self.port = self._server.start(self.port).port
        return self

    def stop(self) -> None:
        self._server.stop()

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def __enter__(self) -> TokenEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- registration and knobs ----------------------------------------------------

    def add_service_account(
        self,
        account_id: str,
        public_key: rsa.RSAPublicKey,
        *,
        scopes: tuple[str, ...] = ("fr:idm:*",),
    ) -> None:
        with self.lock:
            self._accounts[account_id] = _Account(account_id, public_key, frozenset(scopes))

    def add_client(
        self,
        client_id: str,
        secret: str,
        *,
        scopes: tuple[str, ...] = ("fr:idm:*",),
        methods: tuple[str, ...] = ("form", "basic"),
    ) -> None:
        with self.lock:
            self._clients[client_id] = _Client(
                client_id, secret, frozenset(scopes), frozenset(methods)
            )

    def fail_next(self, count: int, status: int, body: dict[str, Any] | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``body``) unverified."""
        with self.lock:
            self._faults.append(_Fault(count, status, body))

    def hostile_body_next(self, count: int, body: str) -> None:
        """Answer the next ``count`` requests 200 with a ``huge`` (64 MiB), ``endless`` or
        ``drip`` (a byte each 50 ms, forever) body, as the IDM stub's knob of that name."""
        assert body in ("huge", "endless", "drip"), body
        with self.lock:
            self._faults.append(_Fault(count, 200, None, hostile=body))

    def expire_all(self) -> None:
        """Every token issued so far stops working at the linked IDM (it expired)."""
        with self.lock:
            values = [t.value for t in self.issued]
        for value in values:
            self.revoke(value)

    def revoke(self, token: str) -> None:
        if self.idm is not None:
            with self.idm.lock:
                self.idm.bearer_tokens.discard(token)

    @property
    def token_requests(self) -> int:
        with self.lock:
            return len(self.requests)

    def granted(self) -> list[TokenRequest]:
        with self.lock:
            return [r for r in self.requests if r.status == 200]

    # --- HTTP ----------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        raw = await request.read()
        form: dict[str, str] = {}
        basic = request.headers.get("Authorization", "").startswith("Basic ")
        try:
            fault = self._take_fault()
            if fault is not None and fault.hostile:
                self._record(request.path, form, basic, 200, None)
                return await hostile_body(request, fault.hostile)
            if fault is not None:
                status = fault.status
                body = fault.body or {"error": "server_error", "error_description": "injected"}
                error = body.get("error")
                self._record(request.path, form, basic, status, error)
                return web.json_response(body, status=status)
            if request.path not in self.paths:
                raise _Refusal(404, "not_found", f"no token endpoint at {request.path}")
            if request.method != "POST":
                raise _Refusal(405, "invalid_request", "the token endpoint takes POST only")
            content_type = request.headers.get("Content-Type", "")
            if not content_type.startswith("application/x-www-form-urlencoded"):
                raise _Refusal(400, "invalid_request", "the body must be a form")
            form = _parse_form(raw)
            grant = form.get("grant_type")
            if grant == JWT_BEARER:
                answer = self._jwt_bearer(request.path, form, basic)
            elif grant == CLIENT_CREDENTIALS:
                answer = self._client_credentials(request, form)
            elif grant is None:
                raise _Refusal(400, "invalid_request", "grant_type is missing")
            else:
                raise _Refusal(400, "unsupported_grant_type", f"grant_type {grant} not supported")
        except _Refusal as refusal:
            self._record(request.path, form, basic, refusal.status, refusal.error)
            return web.json_response(
                {"error_description": refusal.description, "error": refusal.error},
                status=refusal.status,
            )
        self._record(request.path, form, basic, 200, None)
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    def _take_fault(self) -> _Fault | None:
        with self.lock:
            fault = next((f for f in self._faults if f.remaining > 0), None)
            if fault is not None:
                fault.remaining -= 1
            return fault

    def _record(
        self, path: str, form: dict[str, str], basic: bool, status: int, error: str | None
    ) -> None:
        with self.lock:
            self.requests.append(TokenRequest(path, dict(form), basic, status, error))

    def _jwt_bearer(self, path: str, form: dict[str, str], basic: bool) -> dict[str, Any]:
        if basic or form.get("client_id") != "service-account":
            raise _Refusal(401, "invalid_client", "client_id must be service-account")
        assertion = form.get("assertion")
        if not assertion:
            raise _Refusal(400, "invalid_request", "assertion is missing")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _Refusal(400, "invalid_grant", "the assertion is not a JWT") from None
        if header.get("alg") != "RS256":
            raise _Refusal(400, "invalid_grant", "the JWT must be signed RS256")
        issuer, subject = unverified.get("iss"), unverified.get("sub")
        if not issuer or issuer != subject:
            raise _Refusal(400, "invalid_grant", "JWT iss and sub must both be the account id")
        with self.lock:
            account = self._accounts.get(str(issuer))
        if account is None:
            raise _Refusal(400, "invalid_grant", f"unknown service account {issuer}")
        now = self.clock()
        try:
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=self.audience(path),
                issuer=account.account_id,
                leeway=self.clock_skew,
                # times are checked below against this endpoint's (injectable) clock
                options={
                    "require": ["iss", "sub", "aud", "exp", "iat", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise _Refusal(
                400, "invalid_grant", "JWT signature does not verify with the account's key"
            ) from None
        except jwt.InvalidAudienceError:
            raise _Refusal(
                400, "invalid_grant", f"JWT audience is not {self.audience(path)}"
            ) from None
        except jwt.ExpiredSignatureError:
            raise _Refusal(400, "invalid_grant", "JWT has expired") from None
        except jwt.ImmatureSignatureError:
            raise _Refusal(
                400, "invalid_grant", "JWT is not yet valid (iat in the future)"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _Refusal(400, "invalid_grant", f"JWT claim {exc.claim} is missing") from None
        except jwt.PyJWTError as exc:
            raise _Refusal(400, "invalid_grant", f"JWT refused: {type(exc).__name__}") from None
        try:
            exp, iat = float(claims["exp"]), float(claims["iat"])
            nbf = float(claims.get("nbf", iat))
        except (TypeError, ValueError):
            raise _Refusal(400, "invalid_grant", "JWT exp, iat and nbf must be numbers") from None
        if exp <= now - self.clock_skew:
            raise _Refusal(400, "invalid_grant", "JWT has expired")
        if max(iat, nbf) > now + self.clock_skew:
            raise _Refusal(400, "invalid_grant", "JWT is not yet valid (iat in the future)")
        if exp > now + self.max_assertion_lifetime + self.clock_skew:
            raise _Refusal(
                400,
                "invalid_grant",
                f"JWT expiry is more than {self.max_assertion_lifetime} s in the future",
            )
        with self.lock:
            jti = str(claims["jti"])
            if jti in self._seen_jti:
                raise _Refusal(400, "invalid_grant", "JWT jti has already been used")
            self._seen_jti.add(jti)
        scope = self._scope(form, account.scopes)
        return self._issue(account.account_id, scope, JWT_BEARER)

    def _client_credentials(self, request: web.Request, form: dict[str, str]) -> dict[str, Any]:
        authorization = request.headers.get("Authorization", "")
        in_form = "client_secret" in form
        if authorization.startswith("Basic "):
            if in_form:
                raise _Refusal(400, "invalid_request", "more than one client authentication")
            try:
                decoded = base64.b64decode(authorization[6:], validate=True).decode()
                raw_id, raw_secret = decoded.split(":", 1)
            except ValueError:
                raise _Refusal(401, "invalid_client", "malformed Basic authorization") from None
            client_id, secret, method = unquote_plus(raw_id), unquote_plus(raw_secret), "basic"
        elif in_form:
            client_id, secret, method = form.get("client_id", ""), form["client_secret"], "form"
        else:
            raise _Refusal(401, "invalid_client", "no client authentication")
        with self.lock:
            client = self._clients.get(client_id)
        if client is None or not secrets.compare_digest(client.secret, secret):
            raise _Refusal(401, "invalid_client", "Client authentication failed")
        if method not in client.methods:
            raise _Refusal(401, "invalid_client", f"client may not authenticate with {method}")
        scope = self._scope(form, client.scopes)
        return self._issue(client.client_id, scope, CLIENT_CREDENTIALS)

    def _scope(self, form: dict[str, str], allowed: frozenset[str]) -> str:
        requested = form.get("scope", "").split()
        if not requested:
            raise _Refusal(400, "invalid_scope", "no scope requested")
        refused = [s for s in requested if s not in allowed]
        if refused:
            raise _Refusal(400, "invalid_scope", f"scope not allowed: {' '.join(refused)}")
        return " ".join(requested)

    def _issue(self, subject: str, scope: str, grant: str) -> dict[str, Any]:
        value = secrets.token_urlsafe(32)
        with self.lock:
            self.issued.append(
                IssuedToken(value, subject, scope, grant, self.clock() + self.expires_in)
            )
        if self.idm is not None:
            with self.idm.lock:
                self.idm.bearer_tokens.add(value)
        return {
            "access_token": value,
            "scope": scope,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


def _parse_form(raw: bytes) -> dict[str, str]:
    form: dict[str, str] = {}
    for pair in raw.decode().split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name, value = unquote_plus(name), unquote_plus(value)
        if name in form:
            raise _Refusal(400, "invalid_request", f"parameter {name} given twice")
        form[name] = value
    return form
