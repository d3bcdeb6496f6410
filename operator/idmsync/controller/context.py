"""What the operator shares between handlers: settings, clients, locks. Made at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx

from idmsync.auth import CredentialsRegistry
from idmsync.controller.kube import KubeApi
from idmsync.controller.locks import StageLocks
from idmsync.controller.settings import OperatorSettings
from idmsync.engine import (
    ChangelogReader,
    LdapChangelog,
    LdapDirectory,
    TlsOptions,
    make_http_client,
)

__all__ = ["OperatorContext", "Stopping"]

log = logging.getLogger(__name__)


class Stopping(Exception):
    """The operator is stopping: a reset that has not started yet is left to the next one."""


@dataclass
class OperatorContext:
    settings: OperatorSettings
    kube: KubeApi
    locks: StageLocks = field(default_factory=StageLocks)
    #: OAuth flows shared by every reset: one token (and one request in flight) per account
    credentials: CredentialsRegistry = field(default_factory=CredentialsRegistry)
    #: how a drift check reads its directory (tests put a fake here)
    changelog_reader: Callable[[LdapDirectory], ChangelogReader] = LdapChangelog
    _clients: dict[tuple[str, str, bool], httpx.AsyncClient] = field(default_factory=dict)
    #: resets being worked on now, and whether new ones are refused (the operator is stopping)
    _running: set[asyncio.Task[object]] = field(default_factory=set)
    _draining: bool = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Around one reset's work; raises :class:`Stopping` once :meth:`drain` began."""
        if self._draining:
            raise Stopping("the operator is stopping")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("running() outside a task")
        self._running.add(task)
        try:
            yield
        finally:
            self._running.discard(task)

    async def drain(self, grace: float) -> None:
        """Start no new reset; let those running finish within ``grace`` seconds, then cancel
        the rest (each has recorded its intent before any change: the next replica or start
        resumes from its status). Only then may this replica leave its peers, who would
        otherwise take over resets still running here."""
        self._draining = True
        running = set(self._running)
        if not running:
            return
        log.info("stopping: waiting up to %gs for %d reset(s) in progress", grace, len(running))
        _, pending = await asyncio.wait(running, timeout=grace)
        if pending:
            log.warning(
                "stopping: %d reset(s) still running after %gs; cancelling them at "
                "their current step",
                len(pending),
                grace,
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    def http_client(self, server_url: str, tls: TlsOptions) -> httpx.AsyncClient:
        """One pooled client per (server, TLS): its pool caps concurrent requests per server."""
        ca_digest = hashlib.sha256((tls.ca_pem or "").encode()).hexdigest()
        key = (server_url, ca_digest, tls.insecure_skip_verify)
        if key not in self._clients:
            self._clients[key] = make_http_client(
                tls, max_connections=self.settings.max_requests_per_server
            )
        return self._clients[key]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        self.kube.close()
