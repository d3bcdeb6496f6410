"""Two resets of the same (server, stage) never run at once; different servers run side by side."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

from idmsync.engine.keyed import KeyedLocks

__all__ = ["StageLocks"]


class StageLocks:
    """A (server, stage) lock exists while a reset holds or waits for it, and no longer."""

    def __init__(self) -> None:
        self._locks: KeyedLocks[tuple[str, str]] = KeyedLocks()

    def __len__(self) -> int:
        return len(self._locks)

    def busy(self, server: str, stage_ids: Iterable[str]) -> list[str]:
        """Stage ids another reset holds right now (for a 'waiting' message)."""
        return [stage_id for stage_id in stage_ids if self._locks.locked((server, stage_id))]

    @contextlib.asynccontextmanager
    async def hold(self, server: str, stage_ids: Iterable[str]) -> AsyncIterator[None]:
        """Take every (server, stage) lock, in sorted order so two holders cannot deadlock."""
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted({(server, stage_id) for stage_id in stage_ids}):
                await stack.enter_async_context(self._locks.hold(key))
            yield
