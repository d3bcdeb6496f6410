"""The one interface every credential strategy implements.

A strategy turns "who we are" into request headers. It may need the network to
do so (OAuth flows get a token first), so ``headers`` is async and receives the
shared HTTP client. ``refresh`` is called once after a 401 with a cached token;
it says whether a retry could succeed. ``secret_values`` lists what must never
appear in output: logs, status, Events and exception text are scrubbed of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Credentials(ABC):
    """How requests to one IDM server authenticate."""

    #: a short, non-secret description for logs and status ("admin headers", ...)
    kind: str = "credentials"

    @abstractmethod
    async def headers(self, client: httpx.AsyncClient) -> dict[str, str]:
        """Headers that authenticate one request."""

    async def refresh(self, client: httpx.AsyncClient) -> bool:
        """Forget cached material after a 401; True if a retry could now succeed."""
        return False

    @abstractmethod
    def secret_values(self) -> tuple[str, ...]:
        """Every secret value this strategy holds, for redaction."""


class AdminCredentials(Credentials):
    """IDM's own header authentication: ``X-OpenIDM-Username`` / ``X-OpenIDM-Password``."""

    kind = "admin headers"

    def __init__(self, username: str, password: Secret) -> None:
        self.username = username
        self.password = password

    async def headers(self, client: httpx.AsyncClient) -> dict[str, str]:
        return {
            "X-OpenIDM-Username": self.username,
            "X-OpenIDM-Password": self.password.reveal(),
            # no session cookie: every request authenticates on its own, nothing lingers
            "X-OpenIDM-NoSession": "true",
        }

    def secret_values(self) -> tuple[str, ...]:
        return (self.password.reveal(),)


class BearerToken(Credentials):
    """A static access token (Identity Cloud, IDM behind AM)."""

    kind = "bearer token"

    def __init__(self, token: Secret) -> None:
        self.token = token

    async def headers(self, client: httpx.AsyncClient) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.reveal()}"}

    def secret_values(self) -> tuple[str, ...]:
        return (self.token.reveal(),)
