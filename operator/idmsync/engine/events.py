"""What the engine tells its caller as it goes: one event per step, before the next starts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from idmsync.engine.model import ReconProgress, ServerInfo, StageProgress

__all__ = ["Event", "EventKind", "Observer", "ignore"]

EventKind = Literal[
    "ServerResolved",
    "StagesSelected",
    "StageChecked",
    "SchedulerPaused",
    "LiveSyncIdle",
    "SchedulerResumed",
    "StageRecorded",
    "StageChanged",
    "StageWouldChange",  # a dry run: what StageChanged would have said; nothing changed
    "LiveSyncTriggered",
    "StageVerified",
    "ReconStarted",
    "ReconProgress",
    "ReconFinished",
]


@dataclass(frozen=True)
class Event:
    """One step of a reset, told to the observer before the next starts (to persist it)."""

    kind: EventKind
    message: str
    stage: StageProgress | None = None
    server: ServerInfo | None = None
    recon: ReconProgress | None = None
    #: SchedulerPaused / SchedulerResumed: the jobs paused one by one (empty: all jobs)
    jobs: tuple[str, ...] = ()


Observer = Callable[[Event], Awaitable[None]]


async def ignore(event: Event) -> None:
    return None
