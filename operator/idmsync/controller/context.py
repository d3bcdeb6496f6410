"""What the operator shares between handlers: settings, clients, caches, locks. Made at start-up.

Everything here is bounded: stage locks live while held, the version cache and the
credentials registry forget their least recently used entries, and HTTP clients
past :data:`MAX_CLIENTS` are closed when no reset uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx

from idmsync.auth import CredentialsRegistry
from idmsync.controller.kube import KubeApi
from idmsync.controller.locks import StageLocks
from idmsync.controller.resolve import ResolvedTarget
from idmsync.controller.settings import OperatorSettings
from idmsync.engine import (
    ChangelogReader,
    IdmClient,
    LdapChangelog,
    LdapDirectory,
    RetryPolicy,
    ServerVersions,
    TlsOptions,
    make_http_client,
)

__all__ = ["MAX_CLIENTS", "OperatorContext", "Stopping"]

log = logging.getLogger(__name__)

#: pooled HTTP clients kept (one per server and TLS setting); past it, the least recently
#: used that no reset is using is closed
MAX_CLIENTS = 64

_ClientKey = tuple[str, str, bool]


@dataclass
class _Pooled:
    client: httpx.AsyncClient
    users: int = 0


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
    #: what each server's info/version said, shared by every reset's client
    versions: ServerVersions = field(default_factory=ServerVersions)
    max_clients: int = MAX_CLIENTS
    _clients: OrderedDict[_ClientKey, _Pooled] = field(default_factory=OrderedDict)
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

    @contextlib.asynccontextmanager
    async def idm_client(self, target: ResolvedTarget) -> AsyncIterator[IdmClient]:
        """A client of ``target`` on the pooled HTTP client of its server, sharing the
        operator's version cache, for the time of the ``async with``."""
        async with self.http_client(target.server_url, target.tls) as http:
            yield IdmClient(
                target.server_url,
                target.credentials,
                http,
                flavour=target.flavour,
                context_path=target.context_path,
                retry=RetryPolicy(
                    attempts=self.settings.http_attempts, base_delay=self.settings.http_backoff
                ),
                versions=self.versions,
            )

    @contextlib.asynccontextmanager
    async def http_client(
        self, server_url: str, tls: TlsOptions
    ) -> AsyncIterator[httpx.AsyncClient]:
        """One pooled client per (server, TLS), for the time of the ``async with``: its pool
        caps concurrent requests per server. A client is closed only when none uses it."""
        ca_digest = hashlib.sha256((tls.ca_pem or "").encode()).hexdigest()
        key = (server_url, ca_digest, tls.insecure_skip_verify)
        pooled = self._clients.get(key)
        if pooled is None:
            pooled = self._clients[key] = _Pooled(
                make_http_client(tls, max_connections=self.settings.max_requests_per_server)
            )
        self._clients.move_to_end(key)
        pooled.users += 1
        try:
            yield pooled.client
        finally:
            pooled.users -= 1
            await self._evict()

    async def _evict(self) -> None:
        """Close the least recently used clients past the bound that nobody uses."""
        while len(self._clients) > self.max_clients:
            key = next((k for k, pooled in self._clients.items() if pooled.users == 0), None)
            if key is None:
                return  # every client is in use: the bound is met again when they are done
            await self._clients.pop(key).client.aclose()

    async def close(self) -> None:
        for pooled in self._clients.values():
            await pooled.client.aclose()
        self._clients.clear()
        self.kube.close()
