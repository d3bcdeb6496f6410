"""HTTP answers read within a size bound and a deadline.

A server (IDM, or an OAuth token endpoint) that answers with a huge or endless
body, or drips it a byte at a time, must neither fill memory nor hold a reset
for ever: every answer idmsync reads goes through :func:`send_bounded`. Callers
map the two refusals onto their own errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

__all__ = ["AnswerTooLarge", "leave_unread", "send_bounded"]


class AnswerTooLarge(Exception):
    """The answer's body (decompressed) grew past the bound; the rest was not read."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"{status} with an answer larger than {limit} bytes")
        self.status = status
        self.limit = limit


async def send_bounded(
    http: httpx.AsyncClient,
    request: httpx.Request,
    *,
    max_bytes: int,
    deadline: float,
    read_body: bool = True,
    auth: httpx.Auth | None = None,
) -> httpx.Response:
    """Send ``request`` (never following a redirect) and read its whole answer.

    Raises :class:`TimeoutError` when the answer is not complete within ``deadline``
    seconds and :class:`AnswerTooLarge` past ``max_bytes``; httpx's own errors pass
    through. ``read_body=False`` leaves a 2xx body unread (its status is the answer).
    ``auth`` runs within the deadline too (an OAuth flow may fetch a token first); the
    answers it sees on the way (a 401 it retries) are left unread: :func:`leave_unread`.
    """
    async with asyncio.timeout(deadline):
        response = await http.send(
            request, stream=True, follow_redirects=False, auth=auth or httpx.USE_CLIENT_DEFAULT
        )
        try:
            if not read_body and response.is_success:
                content = b""
            else:
                content = await _read(response, max_bytes)
        finally:
            await response.aclose()
    kept = {
        name: value
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    }
    return httpx.Response(response.status_code, headers=kept, content=content, request=request)


async def _read(response: httpx.Response, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise AnswerTooLarge(response.status_code, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


class _Unread(httpx.AsyncByteStream):
    """A body that reads as empty; closing it closes (and so drops) the real one."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        return
        yield  # pragma: no cover - an async generator that yields nothing

    async def aclose(self) -> None:
        if isinstance(self._stream, httpx.AsyncByteStream):
            await self._stream.aclose()


async def leave_unread(response: httpx.Response) -> None:
    """Let go of ``response`` without reading its body: an auth flow's answer that it
    retries (a 401). A huge or endless body costs neither memory nor time, and the
    connection is given up at once, before the flow may need one for a token request.
    httpx, which reads such an answer before the retry, finds it read (empty).
    """
    response.stream = _Unread(response.stream)
    await response.aread()  # reads nothing; closing the real body drops its connection
