"""What the operator shares between handlers: settings, clients, locks. Made at start-up."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
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

__all__ = ["OperatorContext"]


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
