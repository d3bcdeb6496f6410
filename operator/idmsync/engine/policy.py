"""Where credentials may be sent.

Rules of the contract: a URL target must match the operator's allow-list;
plain ``http://`` carries credentials only to in-cluster Services, loopback
addresses and patterns written with an explicit ``http://`` prefix; link-local
and cloud-metadata addresses are refused whatever the allow-list says: written
as an address (in any notation), or a host name resolving to one
(:meth:`TargetPolicy.check_resolved`, before any credential leaves).
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from idmsync.errors import ServerUnreachable, TargetNotAllowed
from idmsync.urls import default_port

__all__ = ["AllowPattern", "Resolver", "TargetPolicy", "resolve_host"]

#: the longest a host name's lookup may take before the target counts as unreachable
RESOLVE_TIMEOUT = 30.0

#: host, port -> the addresses a connection could go to
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host`` (what the HTTP client will use)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


_METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "169.254.169.254",
        "100.100.100.200",  # Alibaba Cloud metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
    }
)


@dataclass(frozen=True)
class AllowPattern:
    """``host``, ``host:port`` or ``*.example.com``, optionally prefixed ``http://``/``https://``."""

    host: str
    port: int | None = None
    scheme: str | None = None  # None: https only (http only when the pattern says so)

    @classmethod
    def parse(cls, text: str) -> AllowPattern:
        text = text.strip()
        scheme: str | None = None
        for prefix in ("http://", "https://"):
            if text.lower().startswith(prefix):
                scheme = prefix[:-3]
                text = text[len(prefix) :]
        if not text or "/" in text:
            raise ValueError(f"allow-list pattern {text!r} must be host, host:port or *.domain")
        host, port = text, None
        if text.startswith("["):
            end = text.index("]")
            host, rest = text[1:end], text[end + 1 :]
            port = int(rest[1:]) if rest.startswith(":") else None
        elif text.count(":") == 1:
            host, port_text = text.split(":")
            port = None if port_text == "*" else int(port_text)
        return cls(host=host.lower(), port=port, scheme=scheme)

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return fnmatch.fnmatchcase(host, self.host)

    def permits(self, scheme: str) -> bool:
        """A pattern without a scheme means https only; http must be asked for by name."""
        return scheme == (self.scheme or "https")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_forbidden_address(host: str) -> bool:
    if host in _METADATA_HOSTS:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # fe80::1%eth0: scoped
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    return (
        address.is_link_local
        or str(address) in _METADATA_HOSTS
        or (address.version == 6 and address.is_multicast)
    )


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class TargetPolicy:
    """Whether credentials may go to a URL: the allow-list, https, no metadata addresses."""

    allowed: tuple[AllowPattern, ...] = ()
    #: loopback servers are always allowed (the CLI against a local IDM, tests)
    allow_loopback: bool = True
    allow_list_name: str = "the operator's allow-list (IDMSYNC_ALLOWED_TARGETS)"
    http_hint: str = "allow it explicitly with the pattern http://{host}"

    @classmethod
    def from_patterns(
        cls, patterns: str | list[str], *, allow_loopback: bool = True
    ) -> TargetPolicy:
        items = patterns.split(",") if isinstance(patterns, str) else patterns
        return cls(
            allowed=tuple(AllowPattern.parse(p) for p in items if p.strip()),
            allow_loopback=allow_loopback,
        )

    async def check_resolved(self, url: str, resolve: Resolver | None = None) -> None:
        """Refuse a host *name* that resolves to a link-local or cloud-metadata address.

        Call it after :meth:`check` and before any credential is sent. The HTTP client
        resolves the name again when it connects: a name whose answers change in between
        (DNS rebinding, a zero TTL) is not caught here; allow only names whose DNS you
        trust (SECURITY.md). A name that does not resolve (in time) is
        :class:`ServerUnreachable`: nothing is sent on a lookup that could not be checked.
        """
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not host or _is_address(host):
            return  # an address as written was checked by check()
        port = parts.port or default_port(parts.scheme)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                addresses = await (resolve or resolve_host)(host, port)
        except (OSError, TimeoutError) as exc:
            detail = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise ServerUnreachable(f"cannot resolve {host}: {detail}") from None
        forbidden = next((a for a in addresses if _is_forbidden_address(a)), None)
        if forbidden is not None:
            raise TargetNotAllowed(
                f"{host} resolves to {forbidden}, a link-local or cloud-metadata address; "
                "idmsync never sends credentials there"
            )

    def check(self, server_url: str, *, in_cluster_service: bool = False) -> None:
        """Raise :class:`TargetNotAllowed` unless credentials may go to ``server_url``."""
        parts = urlsplit(server_url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port or default_port(scheme)
        if _is_forbidden_address(host):
            raise TargetNotAllowed(
                f"{host} is a link-local or cloud-metadata address; idmsync never sends "
                "credentials there"
            )
        if in_cluster_service:
            return
        loopback = _is_loopback(host)
        if loopback and self.allow_loopback:
            return
        matching = [p for p in self.allowed if p.matches(host, port)]
        if not matching:
            raise TargetNotAllowed(f"{scheme}://{host}:{port} is not in {self.allow_list_name}")
        if not any(p.permits(scheme) for p in matching) and not (scheme == "http" and loopback):
            raise TargetNotAllowed(
                f"{scheme} to {host} would send credentials in clear; use https, or "
                f"{self.http_hint.format(host=host)}"
            )
