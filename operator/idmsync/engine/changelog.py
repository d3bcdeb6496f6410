"""The directory side of a drift check: the change numbers its changelog holds.

A directory with an external changelog (OpenDJ / ForgeRock DS, replication on)
publishes ``firstChangeNumber`` and ``lastChangeNumber`` on its root DSE. Those
operational attributes are not shown to an anonymous client (OpenDJ 4.6.4 answers
the search with the attributes empty), so the reader binds with a DN and password.

IDM itself offers no read-only way to learn a connector's latest token: the only
REST call that asks the connector for it is liveSync on a missing stage, which
creates the stage (see docs/notes/openidm-rest-facts.md). Hence LDAP.

ldap3 is synchronous: one short search runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Protocol

from idmsync.auth import Secret
from idmsync.engine.policy import TargetPolicy
from idmsync.errors import (
    ChangelogUnavailable,
    ServerUnreachable,
    Unauthorized,
    clip,
)
from idmsync.urls import parse_url

__all__ = [
    "ChangelogRange",
    "ChangelogReader",
    "LdapChangelog",
    "LdapDirectory",
    "parse_ldap_url",
]

ROOT_DSE_ATTRIBUTES = ("firstChangeNumber", "lastChangeNumber")


@dataclass(frozen=True)
class ChangelogRange:
    """The change numbers a changelog still holds (both 0 when it is empty)."""

    first: int
    last: int


class ChangelogReader(Protocol):
    """Where a drift check learns the directory's change numbers."""

    @property
    def where(self) -> str:
        """The directory, for messages (never holds a secret)."""
        ...

    async def read_range(self) -> ChangelogRange: ...

    def secret_values(self) -> tuple[str, ...]: ...


def parse_ldap_url(url: str) -> tuple[str, str, int]:
    """``ldap(s)://host[:port]`` → (scheme, host, port); nothing else is accepted."""
    parsed = parse_url(url, schemes=("ldap", "ldaps"), what="directory url")
    return parsed.scheme, parsed.host, parsed.port


@dataclass(frozen=True)
class LdapDirectory:
    """How to reach and bind to the directory whose changelog the checked stages read."""

    url: str  # ldap://host[:port] or ldaps://host[:port]
    bind_dn: str | None = None  # None: anonymous (OpenDJ then shows no change numbers)
    password: Secret | None = None
    start_tls: bool = False
    ca_pem: str | None = None
    insecure_skip_verify: bool = False
    timeout: float = 15.0

    @property
    def encrypted(self) -> bool:
        return self.url.lower().startswith("ldaps://") or self.start_tls

    def check_policy(self, policy: TargetPolicy, *, in_cluster_service: bool = False) -> None:
        """The bind password goes where an IDM credential may: ldaps/StartTLS as https."""
        _, host, port = parse_ldap_url(self.url)
        shown = f"[{host}]" if ":" in host else host
        policy.check(
            f"{'https' if self.encrypted else 'http'}://{shown}:{port}",
            in_cluster_service=in_cluster_service,
        )


class LdapChangelog:
    """Reads the change-number range from a directory's root DSE over LDAP (ldap3)."""

    def __init__(self, directory: LdapDirectory) -> None:
        parse_ldap_url(directory.url)
        self.directory = directory

    @property
    def where(self) -> str:
        return self.directory.url

    def secret_values(self) -> tuple[str, ...]:
        password = self.directory.password
        return (password.reveal(),) if password is not None and password.reveal() else ()

    async def read_range(self) -> ChangelogRange:
        return await asyncio.to_thread(self._read_range)

    def _read_range(self) -> ChangelogRange:
        # imported when a directory is first read: it costs the operator's start-up otherwise
        import ldap3
        from ldap3.core import exceptions as ldap_errors

        directory = self.directory
        scheme, host, port = parse_ldap_url(directory.url)
        tls = None
        if scheme == "ldaps" or directory.start_tls:
            tls = ldap3.Tls(
                validate=ssl.CERT_NONE if directory.insecure_skip_verify else ssl.CERT_REQUIRED,
                ca_certs_data=directory.ca_pem,
            )
        server = ldap3.Server(
            host,
            port=port,
            use_ssl=scheme == "ldaps",
            tls=tls,
            get_info=ldap3.NONE,
            connect_timeout=directory.timeout,
        )
        password = directory.password.reveal() if directory.password is not None else None
        connection = ldap3.Connection(
            server,
            user=directory.bind_dn,
            password=password,
            read_only=True,
            receive_timeout=max(1, int(directory.timeout)),
            raise_exceptions=True,
            auto_referrals=False,
        )
        try:
            connection.open()
            if directory.start_tls:
                connection.start_tls()
            connection.bind()
            connection.search(
                "",
                "(objectClass=*)",
                search_scope=ldap3.BASE,
                attributes=list(ROOT_DSE_ATTRIBUTES),
                size_limit=1,
                time_limit=int(directory.timeout),
            )
            response = connection.response or []
        except ldap_errors.LDAPInvalidCredentialsResult:
            raise Unauthorized(
                f"directory {self.where}: bind as {directory.bind_dn!r} refused "
                "(49 invalidCredentials)"
            ) from None
        except ldap_errors.LDAPOperationResult as exc:
            raise ChangelogUnavailable(
                f"directory {self.where}: {exc.result} {exc.description}: "
                f"{self._clip(str(exc.message or ''))}"
            ) from None
        except (ldap_errors.LDAPCommunicationError, ldap_errors.LDAPStartTLSError) as exc:
            raise ServerUnreachable(
                f"directory {self.where}: {type(exc).__name__}: {self._clip(str(exc))}"
            ) from None
        except (ldap_errors.LDAPException, OSError) as exc:
            raise ServerUnreachable(
                f"directory {self.where}: {type(exc).__name__}: {self._clip(str(exc))}"
            ) from None
        finally:
            # closing a connection that never opened is harmless; a failure here is not ours
            with contextlib.suppress(ldap_errors.LDAPException, OSError):
                connection.unbind()
        attributes = response[0].get("attributes", {}) if response else {}
        first = _number(attributes.get("firstChangeNumber"))
        last = _number(attributes.get("lastChangeNumber"))
        if first is None or last is None:
            who = f"{directory.bind_dn!r}" if directory.bind_dn else "an anonymous client"
            raise ChangelogUnavailable(
                f"directory {self.where}: the root DSE shows no firstChangeNumber/"
                f"lastChangeNumber to {who}: the external changelog is off (no replication "
                "configured), or this DN may not read it"
            )
        return ChangelogRange(first=first, last=last)

    def _clip(self, text: str) -> str:
        return clip(text, self.secret_values())


def _number(values: object) -> int | None:
    value = values[0] if isinstance(values, list) and values else values
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
