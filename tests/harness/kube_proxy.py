"""An HTTPS reverse proxy in front of kube-apiserver that fails chosen requests. Not shipped.

The operator (and kopf in it) talks to the proxy as to the API server: the proxy serves a
certificate from the control plane's CA, forwards every request with its own headers (a
ServiceAccount's bearer token) and streams every answer back, watches included. A rule
matches a method, a part of the path and a part of the body, and for its next ``count``
requests either

    refuse   answers ``status`` without forwarding (the API server never saw it), or
    after    forwards (the API server applied it), then answers ``status`` instead.

Every request is logged with what was answered, so tests can see the failures happen.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from tests.harness.controlplane import KeyPair
from tests.stub.loopback_server import LoopbackServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


@dataclass
class Rule:
    action: str  # refuse | after
    status: int
    remaining: int
    method: str
    path: str
    body: str

    def matches(self, method: str, path: str, body: bytes) -> bool:
        return (
            self.remaining > 0
            and method == self.method
            and self.path in path
            and self.body.encode() in body
        )


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    status: int
    forwarded: bool
    injected: bool


class KubeProxy(LoopbackServer):
    def __init__(self, upstream: str, ca_pem: bytes, serving: KeyPair) -> None:
        super().__init__(self._make_app, "kube-proxy", tls=serving.server_context())
        self.upstream = upstream.rstrip("/")
        self._upstream_tls = ssl.create_default_context(cadata=ca_pem.decode())
        self.rules: list[Rule] = []
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None

    def fail(
        self,
        action: str,
        status: int,
        *,
        method: str = "PATCH",
        path: str = "/status",
        body: str = "",
        count: int = 1,
    ) -> None:
        assert action in ("refuse", "after"), action
        with self.lock:
            self.rules.append(Rule(action, status, count, method, path, body))

    def injected(self) -> list[Logged]:
        with self.lock:
            return [entry for entry in self.log if entry.injected]

    def _make_app(self) -> web.Application:
        async def open_session(_app: web.Application) -> None:
            self._session = aiohttp.ClientSession(
                auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
            )

        async def close_session(_app: web.Application) -> None:
            if self._session is not None:
                await self._session.close()

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.on_startup.append(open_session)
        app.on_cleanup.append(close_session)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    # --- one request ---------------------------------------------------------------------

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self.lock:
            rule = next(
                (r for r in self.rules if r.matches(request.method, request.path, body)), None
            )
            if rule is not None:
                rule.remaining -= 1
        if rule is not None and rule.action == "refuse":
            self._record(request, rule.status, forwarded=False, injected=True)
            return _status(rule.status)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body or None,
                ssl=self._upstream_tls,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError):
            # the API server is down: the client sees its connection cut, as without us
            self._record(request, 0, forwarded=False, injected=False)
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=502)
        async with upstream:
            if rule is not None:  # applied; the answer says it failed
                await upstream.read()
                self._record(request, rule.status, forwarded=True, injected=True)
                return _status(rule.status)
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP},
            )
            await response.prepare(request)
            self._record(request, upstream.status, forwarded=True, injected=False)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, ConnectionError):
                pass  # either side went away (a watch ended, the API server stopped)
            return response

    def _record(
        self, request: web.Request, status: int, *, forwarded: bool, injected: bool
    ) -> None:
        with self.lock:
            self.log.append(Logged(request.method, request.path, status, forwarded, injected))


def _status(code: int) -> web.Response:
    """A Kubernetes Status object, as the API server answers a failure."""
    reason = {409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable"}.get(code, "")
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": f"injected by the test proxy ({code})",
            "reason": reason,
            "code": code,
        },
        status=code,
    )
