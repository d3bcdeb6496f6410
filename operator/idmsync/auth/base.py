"""The one interface every credential strategy implements.

A strategy authenticates requests as an :class:`httpx.Auth`: :meth:`Credentials.auth`
gives the auth to send with each request of one HTTP client (OAuth flows fetch
their token through that client, and fetch a new one once after IDM answers 401).
``secret_values`` lists what must never appear in output: logs, status, Events
and exception text are scrubbed of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from typing import Final

import httpx

__all__ = ["AdminCredentials", "BearerToken", "Credentials", "Secret"]


class Secret:
    """A string that does not show itself in repr/str, so it cannot leak by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value: Final = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class Credentials(ABC):
    """How requests to one IDM server authenticate."""

    #: a short, non-secret description for logs and status ("admin headers", ...)
    kind: str = "credentials"

    @abstractmethod
    def auth(self, http: httpx.AsyncClient) -> httpx.Auth:
        """The auth for the requests of ``http`` (which also carries any token request)."""

    @abstractmethod
    def secret_values(self) -> tuple[str, ...]:
        """Every secret value this strategy holds, for redaction."""


class _HeaderAuth(Credentials, httpx.Auth):
    """Fixed headers on every request: nothing to fetch, nothing to refresh."""

    def auth(self, http: httpx.AsyncClient) -> httpx.Auth:
        return self

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self._headers())
        yield request

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError


class AdminCredentials(_HeaderAuth):
    """IDM's own header authentication: ``X-OpenIDM-Username`` / ``X-OpenIDM-Password``."""

    kind = "admin headers"

    def __init__(self, username: str, password: Secret) -> None:
        self.username = username
        self.password = password

    def _headers(self) -> dict[str, str]:
        return {
            "X-OpenIDM-Username": self.username,
            "X-OpenIDM-Password": self.password.reveal(),
            # no session cookie: every request authenticates on its own, nothing lingers
            "X-OpenIDM-NoSession": "true",
        }

    def secret_values(self) -> tuple[str, ...]:
        return (self.password.reveal(),)


class BearerToken(_HeaderAuth):
    """A static access token (Identity Cloud, IDM behind AM)."""

    kind = "bearer token"

    def __init__(self, token: Secret) -> None:
        self.token = token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.reveal()}"}

    def secret_values(self) -> tuple[str, ...]:
        return (self.token.reveal(),)
