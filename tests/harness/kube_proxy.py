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

import asyncio
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.harness.controlplane import KeyPair

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


class KubeProxy:
    def __init__(self, upstream: str, ca_pem: bytes, serving: KeyPair) -> None:
        self.upstream = upstream.rstrip("/")
        self._upstream_tls = ssl.create_default_context(cadata=ca_pem.decode())
        self._serving = serving
        self.rules: list[Rule] = []
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

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

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> KubeProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert.write_bytes(self._serving.cert_pem)
            key.write_bytes(self._serving.key_pem)
            serving.load_cert_chain(cert, key)

        async def serve() -> None:
            self._session = aiohttp.ClientSession(
                auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
            )
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._forward)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=serving)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="kube-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("kube proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()
        self._loop = None

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
