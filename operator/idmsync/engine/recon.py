"""Catch up after a reset: reconcile a mapping and follow it to the end.

A reset makes liveSync start again at the directory's latest change: every change
made while the token was wrong is skipped. A reconciliation of the stage's mapping
compares every source entry with its target and applies what differs, so it
catches them up. OpenIDM runs it in the background (``POST recon?_action=recon``
answers ``{_id, state: ACTIVE}``) and reports progress at ``GET recon/<id>``
until ``state`` is ``SUCCESS``, ``FAILED`` or ``CANCELED``.

Resumable: a run recorded as started is followed, never started twice. If the
answer to the start was lost, the runs IDM lists are searched for an active one
of the mapping before anything is started again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from idmsync.engine.client import IdmClient
from idmsync.engine.events import Event, Observer
from idmsync.engine.model import ReconcileOptions, ReconProgress
from idmsync.errors import IdmSyncError, InternalError, ReconFailed, ReconTimeout

__all__ = ["parse_recon", "run_recon", "summary"]

log = logging.getLogger(__name__)


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _path(body: Any, *keys: str) -> Any:
    for key in keys:
        body = body.get(key) if isinstance(body, dict) else None
    return body


def parse_recon(mapping: str, body: dict[str, Any]) -> ReconProgress:
    """IDM's progress report, reduced to what status and Events carry."""
    situations = _path(body, "situationSummary")
    return ReconProgress(
        mapping=str(body.get("mapping") or mapping),
        id=str(body["_id"]) if body.get("_id") is not None else None,
        state=str(body["state"]) if body.get("state") is not None else None,
        stage=str(body["stage"]) if body.get("stage") is not None else None,
        started=body.get("started") or None,
        ended=body.get("ended") or None,
        processed=_count(_path(body, "progress", "source", "existing", "processed")),
        created=_count(_path(body, "progress", "target", "created")),
        succeeded=_count(_path(body, "statusSummary", "SUCCESS")),
        failed=_count(_path(body, "statusSummary", "FAILURE")),
        situations={
            str(name): count
            for name, value in (situations.items() if isinstance(situations, dict) else ())
            if (count := _count(value))
        },
    )


def summary(recon: ReconProgress) -> str:
    counts = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("processed", recon.processed),
            ("created", recon.created),
            ("succeeded", recon.succeeded),
            ("failed", recon.failed),
        )
        if value is not None
    )
    return f"reconciliation {recon.id} of {recon.mapping}: {recon.state}" + (
        f" ({counts})" if counts else ""
    )


async def run_recon(
    client: IdmClient,
    options: ReconcileOptions,
    observer: Observer,
    recorded: ReconProgress | None = None,
) -> ReconProgress:
    """Start (or resume following) the reconciliation; return it once SUCCESS.

    Raises ReconFailed when it ends FAILED or CANCELED, ReconTimeout when it is still
    running after ``options.timeout`` seconds (it is left running).
    """
    progress = recorded if _resumable(recorded, options) else None
    if progress is None:
        progress = await _start(client, options, observer)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.timeout
    restarted = False
    while True:
        if progress.id is None:
            raise InternalError(f"reconciliation of {options.mapping}: started without an id")
        body = await client.read_recon(progress.id)
        if body is None:
            if restarted:
                raise ReconFailed(f"reconciliation {progress.id} vanished from IDM twice")
            # IDM forgot it (restarted): the run did not finish; start it once more
            log.info("reconciliation %s is unknown to IDM; starting another", progress.id)
            restarted = True
            progress = await _start(client, options, observer)
            continue
        current = parse_recon(options.mapping, body)
        if current.stage != progress.stage or current.state != progress.state:
            progress = current
            if not progress.finished:
                await observer(
                    Event("ReconProgress", f"{summary(progress)}, {progress.stage}", recon=progress)
                )
        progress = current
        if progress.finished:
            break
        if loop.time() + options.interval > deadline:
            raise ReconTimeout(
                f"{summary(progress)} still running after {options.timeout:g}s; left running "
                f"(follow it at recon/{progress.id})"
            )
        await asyncio.sleep(options.interval)
    await observer(Event("ReconFinished", summary(progress), recon=progress))
    if progress.state != "SUCCESS":
        raise ReconFailed(f"{summary(progress)}, {progress.stage}")
    return progress


def _resumable(recorded: ReconProgress | None, options: ReconcileOptions) -> bool:
    return (
        recorded is not None
        and recorded.mapping == options.mapping
        and recorded.id is not None
        and recorded.state != "FAILED"
        and recorded.state != "CANCELED"
    )


async def _start(client: IdmClient, options: ReconcileOptions, observer: Observer) -> ReconProgress:
    try:
        body = await client.start_recon(options.mapping)
    except IdmSyncError as exc:
        if not exc.outcome_unknown:
            raise
        # the start may have been carried out: look for it before anything is sent again
        active = [
            run
            for run in await client.list_recons()
            if run.get("mapping") == options.mapping and run.get("state") == "ACTIVE"
        ]
        if not active:
            raise
        body = active[-1]
    progress = parse_recon(options.mapping, body)
    await observer(Event("ReconStarted", f"{summary(progress)}", recon=progress))
    return progress
