"""A server on 127.0.0.1 run by its own thread and event loop: the stubs and the proxies.

They run this way so that synchronous tests, async tests and subprocesses (the CLI, the
operator) can all talk to them while the test inspects their state. By default it serves an
aiohttp application (``make_app``, over TLS with ``tls``); a subclass serving raw streams
overrides ``_open`` (and ``_close``).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from typing import Self

from aiohttp import web


class LoopbackServer:
    def __init__(
        self,
        make_app: Callable[[], web.Application] | None,
        name: str,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.make_app = make_app
        self.name = name
        self.tls = tls
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> Self:
        """Serve on ``port`` (a free one unless given; ``self.port`` says which)."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self.port = await self._open(port)
            ready.set()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.name} did not start")
        return self

    async def _open(self, port: int) -> int:
        """Start serving (in the server's loop); return the port bound."""
        assert self.make_app is not None
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=self.tls)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _close(self) -> None:
        """Stop accepting (in the server's loop); what is in flight is cancelled after."""
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop serving; requests still in flight (a delay knob) are cancelled."""
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            await self._close()
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
