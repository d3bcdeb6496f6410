"""The one place HTTP clients are made: TLS, timeouts, no redirects, no env proxies."""

from __future__ import annotations

import functools
import logging
import ssl
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

__all__ = ["TlsOptions", "make_http_client"]

log = logging.getLogger(__name__)

USER_AGENT = "idmsync"


@dataclass(frozen=True)
class TlsOptions:
    """How to trust an IDM server: extra CAs besides the system's, or (tests only) none."""

    ca_pem: str | None = None  # PEM text of extra trusted CAs (from a Secret or a file)
    insecure_skip_verify: bool = False


def _ssl_context(tls: TlsOptions) -> ssl.SSLContext | bool:
    if tls.insecure_skip_verify:
        log.warning(
            "TLS verification is OFF for this server (insecureSkipVerify): not for production"
        )
        return False
    return _verifying_context(tls.ca_pem)


@functools.lru_cache(maxsize=64)
def _verifying_context(ca_pem: str | None) -> ssl.SSLContext:
    """One context per set of extra CAs, shared by every client that trusts them: loading
    the system's CA certificates takes tens of milliseconds."""
    context = ssl.create_default_context()
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    return context


def make_http_client(
    tls: TlsOptions | None = None,
    *,
    timeout: float = 30.0,
    max_connections: int = 10,
) -> httpx.AsyncClient:
    """A client that never follows redirects (credentials are never re-sent elsewhere)
    and keeps no cookies (IDM answers header logins with a session cookie: every request
    authenticates on its own)."""
    return httpx.AsyncClient(
        verify=_ssl_context(tls or TlsOptions()),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
