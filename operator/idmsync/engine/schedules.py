"""Pause IDM's scheduled liveSync around a reset, as gently as the server allows.

Where the scheduler pauses one job (scheduler API 2.0, IDM 7 and later), only the
liveSync jobs of the stages being reset are paused; OpenIDM before 7 has no per-job
pause (``scheduler/job/<id>?_action=pause`` answers 500 on 6.1), so there every job
is paused (``pauseJobs``), as is any server that refuses the per-job call. A pause
does not stop a run already going: before the first change, the reset waits
(bounded) until no liveSync of those stages is running. Whatever happens, what
was paused is resumed — shielded, so a second cancellation cannot skip it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

from idmsync.engine.client import IdmClient
from idmsync.engine.events import Event, Observer
from idmsync.engine.flavour import Flavour
from idmsync.engine.model import ResetOptions
from idmsync.errors import CredentialsRefused, IdmSyncError

__all__ = ["livesync_stage", "schedules_paused"]

log = logging.getLogger(__name__)


def livesync_stage(job: Mapping[str, Any]) -> str | None:
    """The stage id a scheduled job runs liveSync for, if it is a liveSync job."""
    context = job.get("invokeContext")
    if not isinstance(context, dict) or context.get("action") != "liveSync":
        return None
    source = context.get("source")
    return source.replace("/", "").upper() if isinstance(source, str) else None


@contextlib.asynccontextmanager
async def schedules_paused(
    client: IdmClient,
    stage_ids: Collection[str],
    options: ResetOptions,
    observer: Observer,
) -> AsyncIterator[None]:
    """Pause (per job where possible), wait for running liveSync of ``stage_ids``, resume."""
    jobs = await _pause(client, stage_ids)
    what = f"paused the liveSync job(s) {', '.join(jobs)}" if jobs else "paused the IDM scheduler"
    await observer(Event("SchedulerPaused", what, jobs=jobs))
    failure: BaseException | None = None
    try:
        await _wait_idle(client, stage_ids, options, observer)
        yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        await _resume(client, jobs, observer, failure=failure)


async def _pause(client: IdmClient, stage_ids: Collection[str]) -> tuple[str, ...]:
    """The jobs paused one by one; () when the whole scheduler was paused instead."""
    if (await client.server_info()).flavour is not Flavour.LEGACY:
        paused: list[str] = []
        try:
            for job in await client.list_jobs():
                if livesync_stage(job) in stage_ids and isinstance(job.get("_id"), str):
                    await client.pause_job(job["_id"])
                    paused.append(job["_id"])
            if paused:
                return tuple(paused)
        except CredentialsRefused as exc:
            if paused:
                await _resume(client, tuple(paused), _quiet, failure=exc)
            raise
        except IdmSyncError as exc:
            log.info("per-job pause not available (%s); pausing every job", exc.message)
            if paused:
                await _resume(client, tuple(paused), _quiet, failure=exc)
    try:
        await client.pause_scheduler()
    except IdmSyncError as exc:
        if exc.outcome_unknown:
            # the pause may have been carried out before the failure: never leave it paused
            await _resume(client, (), _quiet, failure=exc)
        raise
    return ()


async def _quiet(event: Event) -> None:
    return None


async def _wait_idle(
    client: IdmClient, stage_ids: Collection[str], options: ResetOptions, observer: Observer
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + options.pause_wait_timeout
    while True:
        try:
            running = sorted(
                {
                    stage
                    for job in await client.running_jobs()
                    if (stage := livesync_stage(job)) is not None and stage in stage_ids
                }
            )
        except CredentialsRefused:
            raise
        except IdmSyncError as exc:
            message = f"cannot tell whether liveSync is running ({exc.reason}); going on"
            await observer(Event("LiveSyncIdle", message))
            return
        waited = loop.time() - started
        if not running:
            message = "no liveSync of these stages is running" + (
                f" (waited {waited:.0f}s)" if waited >= 1 else ""
            )
            await observer(Event("LiveSyncIdle", message))
            return
        if loop.time() + options.pause_wait_interval > deadline:
            message = (
                f"liveSync of {', '.join(running)} still running after "
                f"{options.pause_wait_timeout:g}s; going on (a run that collides with the "
                "reset fails, and the next one starts at the latest change)"
            )
            await observer(Event("LiveSyncIdle", message))
            return
        await asyncio.sleep(options.pause_wait_interval)


async def _resume(
    client: IdmClient,
    jobs: tuple[str, ...],
    observer: Observer,
    *,
    failure: BaseException | None,
) -> None:
    """Resume what was paused, even when cancelled (shielded: a second cancel cannot skip it).

    If resuming fails while the reset is failing anyway, the reset's own error is the one
    raised, and it says the scheduler may still be paused; otherwise resuming's error is.
    """
    try:
        if jobs:
            for job in jobs:
                await asyncio.shield(client.resume_job(job))
        else:
            await asyncio.shield(client.resume_scheduler())
    except IdmSyncError as exc:
        note = f"the IDM scheduler may still be paused: {exc.message}"
        if failure is None:
            exc.message = note
            raise
        log.warning("%s", note)
        if isinstance(failure, IdmSyncError):
            failure.message += f"; {note}"
        return
    what = f"resumed the liveSync job(s) {', '.join(jobs)}" if jobs else "resumed the IDM scheduler"
    await observer(Event("SchedulerResumed", what, jobs=jobs))
