"""Two resets of the same (server, stage) never run at once; different servers run side by side."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

__all__ = ["StageLocks"]


class StageLocks:
    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def busy(self, server: str, stage_ids: Iterable[str]) -> list[str]:
        """Stage ids another reset holds right now (for a 'waiting' message)."""
        return [
            stage_id
            for stage_id in stage_ids
            if (lock := self._locks.get((server, stage_id))) is not None and lock.locked()
        ]

    @contextlib.asynccontextmanager
    async def hold(self, server: str, stage_ids: Iterable[str]) -> AsyncIterator[None]:
        """Take every (server, stage) lock, in sorted order so two holders cannot deadlock."""
        keys = sorted({(server, stage_id) for stage_id in stage_ids})
        taken: list[asyncio.Lock] = []
        try:
            for key in keys:
                lock = self._locks.setdefault(key, asyncio.Lock())
                await lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()
