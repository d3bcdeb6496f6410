"""Kubernetes calls that ride out a blip: an API server restarting, a 409, a 5xx.

Every call the controller makes is safe to send again: reads, and a merge patch
of the whole status (applied twice, it is the same status). So a call that
failed transiently (connection refused or cut, a timeout, 409, 429, 5xx) is
retried a few times with growing delays before the try of the reset fails with
:class:`~idmsync.errors.KubernetesUnavailable`. The order of writes is kept:
the workflow waits for each before it goes on, so the status is always written
before the change it announces is sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from idmsync.controller.kube import KubeApi, ServiceInfo
from idmsync.errors import KubernetesUnavailable

__all__ = ["RETRY_DELAYS", "RetryingKube", "is_transient"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: delays between tries of one call: about 8 s in all, then the try of the reset fails
RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0)
#: the longest one call may take (a stalled API server is noticed)
CALL_TIMEOUT = 60.0
_TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """A failure that sending the same call again may not meet: the network, or the API
    server's status saying so. Refusals (403, 404, 422) are not."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status in _TRANSIENT_STATUS
    if isinstance(exc, OSError | TimeoutError):  # refused, reset, unreachable, timed out
        return True
    # the official client's transport errors (urllib3), without importing it here
    return any(cls.__module__.startswith("urllib3") for cls in type(exc).__mro__)


class RetryingKube:
    """:class:`KubeApi` around another, each call retried on transient failures."""

    def __init__(self, inner: KubeApi, delays: Sequence[float] = RETRY_DELAYS) -> None:
        self.inner = inner
        self.delays = tuple(delays)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        return await self._call(
            f"reading Secret {namespace}/{name}", self.inner.read_secret, namespace, name
        )

    async def read_service(self, namespace: str, name: str) -> ServiceInfo:
        return await self._call(
            f"reading Service {namespace}/{name}", self.inner.read_service, namespace, name
        )

    async def read_reset(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(
            f"reading SyncTokenReset {namespace}/{name}", self.inner.read_reset, namespace, name
        )

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._call(
            f"writing the status of {namespace}/{name}",
            self.inner.patch_status,
            namespace,
            name,
            status,
        )

    def close(self) -> None:
        self.inner.close()

    async def _call(self, what: str, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        for attempt, delay in enumerate((*self.delays, None), start=1):
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    return await call(*args)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                detail = f"{type(exc).__name__}: {_first_line(exc)}"
                if delay is None:
                    raise KubernetesUnavailable(
                        f"{what}: the Kubernetes API failed {attempt} times in a row; "
                        f"last: {detail}"
                    ) from None
                log.info("%s failed (%s); again in %.1fs", what, detail, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
