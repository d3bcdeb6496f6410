"""The URLs idmsync sends credentials to: one parser, one set of rules, one default port.

IDM servers, token endpoints and directories are all ``scheme://host[:port]`` (a token
endpoint with a path), never with user-info, a query or a fragment. Below every layer, so
the engine, auth and the controller check a URL the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from idmsync.errors import InvalidSpec

__all__ = ["DEFAULT_PORTS", "Url", "default_port", "parse_url"]

#: the port a URL without one goes to
DEFAULT_PORTS = {"http": 80, "https": 443, "ldap": 389, "ldaps": 636}

# a host name or IPv4 address of letters, digits, dots and hyphens, or a bracketed IPv6
# address; then an optional port of at most five digits
_AUTHORITY = re.compile(r"(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")


def default_port(scheme: str) -> int:
    """443 for https, 80 for http, 636 for ldaps, 389 for ldap."""
    return DEFAULT_PORTS[scheme.lower()]


@dataclass(frozen=True)
class Url:
    """An accepted URL, taken apart."""

    scheme: str  # lower-cased
    host: str  # lower-cased, an IPv6 address without its brackets
    port: int  # as written, else the scheme's default
    path: str  # without a trailing slash; always empty unless a path was allowed
    text: str  # the URL as accepted: scheme lower-cased, no trailing slash


def parse_url(
    url: str, *, schemes: Sequence[str] = ("http", "https"), what: str = "url", path: bool = False
) -> Url:
    """Accept ``scheme://host[:port]`` (``[/path]`` too when ``path``), or raise InvalidSpec.

    A message never repeats a URL that carries user-info: that part is a password.
    """
    shapes = " or ".join(f"{s}://host[:port]{'[/path]' if path else ''}" for s in schemes)
    wrong = InvalidSpec(
        f"{what} {url!r} must be {shapes} with no {'' if path else 'path, '}query, "
        "user-info or fragment"
    )
    scheme, separator, rest = url.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        raise InvalidSpec(f"{what} must not carry user-info (user:password@)")
    if not separator or scheme.lower() not in schemes or "?" in tail or "#" in tail:
        raise wrong
    if not path and tail not in ("", "/"):
        raise wrong
    match = _AUTHORITY.fullmatch(authority)
    if match is None:
        raise wrong
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise InvalidSpec(f"{what} {url!r} has a port out of range")
    scheme = scheme.lower()
    tail = tail.rstrip("/")
    return Url(
        scheme=scheme,
        host=match["host"].strip("[]").lower(),
        port=port or default_port(scheme),
        path=tail,
        text=f"{scheme}://{authority}{tail}",
    )
