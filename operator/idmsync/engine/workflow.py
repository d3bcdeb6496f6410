"""The reset procedure of the KB article, one stage at a time, resumable.

For each stage: read → record the previous rev and token → delete with
``If-Match`` (or write a new token) → trigger liveSync → verify the stage came
back. The caller sees every step as an event *before* the next one starts, so
the operator can persist progress around each destructive call.

A change is never repeated blindly. Whenever it is unknown whether one was
carried out — a run resumed from recorded progress, or a DELETE/PUT/trigger
whose answer was lost (timeout after sending, connection cut, 5xx) — the stage
is read again and the answer decides: a stage that still has the recorded rev
and token was not touched; one that is gone, or has another rev or token, was
(and liveSync may already have recreated it: a recreated stage's rev starts
over at "1", so the token is compared too). The audit says which it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from idmsync.engine.changelog import ChangelogReader
from idmsync.engine.client import IdmClient
from idmsync.engine.drift import check_stages
from idmsync.engine.events import Event, EventKind, Observer, ignore
from idmsync.engine.model import (
    Action,
    ReconProgress,
    ResetOptions,
    ServerInfo,
    Stage,
    StageProgress,
    StageRef,
    StageResult,
    Step,
    When,
)
from idmsync.engine.naming import (
    stage_id_for_source,
    validate_mapping,
    validate_source,
    validate_stage_id,
)
from idmsync.engine.recon import run_recon
from idmsync.engine.schedules import schedules_paused
from idmsync.errors import IdmSyncError, InvalidSpec, NotFound, RevisionConflict, VerifyTimeout

__all__ = ["Event", "EventKind", "Observer", "ResetOutcome", "run_reset", "select_stages"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResetOutcome:
    """What :func:`run_reset` did: where, to each stage, and the reconciliation after."""

    server: ServerInfo
    stages: tuple[StageProgress, ...]
    reconciliation: ReconProgress | None = None


async def select_stages(
    client: IdmClient,
    *,
    sources: Sequence[str] = (),
    ids: Sequence[str] = (),
    all_stages: bool = False,
) -> list[StageRef]:
    """Sources first (their liveSync can be triggered), then ids, then every listed id."""
    if not (sources or ids or all_stages):
        raise InvalidSpec("name at least one stage: sources, ids or all")
    refs: dict[str, StageRef] = {}
    for source in sources:
        stage_id = stage_id_for_source(source)
        refs.setdefault(stage_id, StageRef(stage_id, validate_source(source)))
    for stage_id in ids:
        refs.setdefault(validate_stage_id(stage_id), StageRef(stage_id))
    if all_stages:
        for stage_id in await client.list_stage_ids():
            refs.setdefault(stage_id, StageRef(stage_id))
    return list(refs.values())


async def run_reset(
    client: IdmClient,
    stages: Sequence[StageRef],
    options: ResetOptions,
    *,
    observer: Observer = ignore,
    progress: Mapping[str, StageProgress] | None = None,
    changelog: ChangelogReader | None = None,
    recon: ReconProgress | None = None,
) -> ResetOutcome:
    """Reset ``stages`` on ``client``'s server; resume from ``progress`` (and ``recon``).

    With ``changelog``, each stage not yet started is first checked against the
    directory's changelog; under ``when: OutOfSync`` only the stages found Ahead or
    Trimmed are changed. With ``options.reconcile``, a reconciliation of that mapping
    runs after the stages are done, if any was changed, and is followed to its end.
    """
    if options.action is Action.SET and options.token is None:
        raise InvalidSpec("action Set needs a token value")
    if options.action is Action.DELETE and options.token is not None:
        raise InvalidSpec("a token value goes only with action Set")
    if options.when is When.OUT_OF_SYNC and changelog is None:
        raise InvalidSpec("when OutOfSync needs a drift check: name the directory to compare with")
    if options.reconcile is not None:
        validate_mapping(options.reconcile.mapping)
    server = await client.server_info()
    await observer(Event("ServerResolved", f"{server.url} speaks {server.flavour}", server=server))
    recorded = dict(progress or {})
    results: list[StageProgress] = []
    names = ", ".join(ref.id for ref in stages)
    await observer(Event("StagesSelected", f"{len(stages)} stage(s): {names}"))
    if changelog is not None:
        recorded = await check_stages(client, changelog, stages, options, recorded, observer)

    def started(ref: StageRef) -> StageProgress:
        return recorded.get(ref.id) or StageProgress(id=ref.id, source=ref.source)

    to_change = [ref.id for ref in stages if started(ref).step is not Step.DONE]
    # A resumed run pauses (and so resumes) even when every stage is done already: a run killed
    # after its last stage but before resuming left the scheduler paused, and only this run can
    # resume it. A fresh run with nothing to change (OutOfSync, all in sync) leaves it alone.
    resumed = bool(progress)
    pause = options.pause_schedules and not options.dry_run and (bool(to_change) or resumed)
    async with (
        schedules_paused(client, to_change or [ref.id for ref in stages], options, observer)
        if pause
        else contextlib.nullcontext()
    ):
        for ref in stages:
            results.append(await _reset_stage(client, started(ref), options, observer))
    changed = [s for s in results if s.result in _CHANGED]
    if options.reconcile is not None and changed and not options.dry_run:
        recon = await run_recon(client, options.reconcile, observer, recon)
    else:
        recon = None
    return ResetOutcome(server=server, stages=tuple(results), reconciliation=recon)


#: results after which changes may have been skipped: a reconciliation catches them up
_CHANGED = (StageResult.DELETED, StageResult.SET, StageResult.ALREADY_ABSENT)


async def _reset_stage(
    client: IdmClient, state: StageProgress, options: ResetOptions, observer: Observer
) -> StageProgress:
    if state.step is Step.DONE:
        return state
    if options.dry_run:
        return await _dry_run(client, state, options, observer)
    if state.step in (Step.PENDING, Step.RECORDED):
        state = await _change(client, state, options, observer)
    if state.step is Step.CHANGED:
        state = await _trigger(client, state, options, observer)
    if state.step in (Step.CHANGED, Step.TRIGGERED):  # still Changed: nothing was triggered
        state = await _verify(client, state, options, observer)
    return state


async def _dry_run(
    client: IdmClient, state: StageProgress, options: ResetOptions, observer: Observer
) -> StageProgress:
    would = StageResult.WOULD_SET if options.action is Action.SET else StageResult.WOULD_DELETE
    stage = await client.read_stage(state.id)
    if stage is None:
        state = state.advance(step=Step.DONE, result=StageResult.ALREADY_ABSENT)
        message = f"{state.id}: absent; nothing would change"
    else:
        state = state.advance(
            step=Step.DONE,
            previous_rev=stage.rev,
            previous_token=stage.sync_token,
            result=would,
        )
        message = f"{state.id}: {would} rev {stage.rev} (token {stage.sync_token!r})"
    await observer(Event("StageWouldChange", message, stage=state))
    return state


def _untouched(stage: Stage | None, state: StageProgress) -> bool:
    """Is the stage still exactly what we recorded (so no change of ours was carried out)?"""
    return (
        stage is not None
        and stage.rev == state.previous_rev
        and stage.sync_token == state.previous_token
    )


def _describe(stage: Stage | None) -> str:
    if stage is None:
        return "the stage is gone"
    return f"the stage is now rev {stage.rev} with token {stage.sync_token!r}"


async def _change(
    client: IdmClient, state: StageProgress, options: ResetOptions, observer: Observer
) -> StageProgress:
    done = StageResult.SET if options.action is Action.SET else StageResult.DELETED
    stage = await client.read_stage(state.id)
    if state.step is Step.RECORDED and not _untouched(stage, state):
        # resumed after the destructive call went out: it happened (and liveSync may have
        # recreated the stage, whose rev can start over: the token tells them apart)
        state = state.advance(
            step=Step.CHANGED,
            result=done,
            note=f"{done} by an earlier run: read back, {_describe(stage)}; not repeated",
        )
        await observer(
            Event(
                "StageChanged",
                f"{state.id}: {done} before the restart (no longer rev "
                f"{state.previous_rev} with token {state.previous_token!r}); not repeated",
                stage=state,
            )
        )
        return state
    stale = 0  # 412s: the stage changed between our read and our change
    tries = 0  # changes that failed and, read back, had not happened
    while True:
        if stage is None:
            if options.action is Action.SET:
                raise NotFound(
                    f"{state.id}: no such stage to set a token on; trigger liveSync "
                    "once to create it, or use action Delete"
                )
            state = state.advance(step=Step.CHANGED, result=StageResult.ALREADY_ABSENT)
            await observer(Event("StageChanged", f"{state.id}: already absent", stage=state))
            return state
        if not (state.step is Step.RECORDED and _untouched(stage, state)):
            state = state.advance(
                step=Step.RECORDED, previous_rev=stage.rev, previous_token=stage.sync_token
            )
            await observer(
                Event(
                    "StageRecorded",
                    f"{state.id}: recorded rev {stage.rev}, token {stage.sync_token!r}",
                    stage=state,
                )
            )
        try:
            state = await _destructive_call(client, stage, state, options)
        except RevisionConflict:
            stale += 1
            if stale > options.max_stale_retries:
                raise RevisionConflict(
                    f"{state.id}: the stage changed under us {stale} times in a row "
                    "(a liveSync loop is running); pause schedules or try again"
                ) from None
            log.info("%s: rev %s is stale (liveSync ran); reading again", state.id, stage.rev)
            stage = await client.read_stage(state.id)
            continue
        except IdmSyncError as exc:
            if not exc.outcome_unknown:
                raise
            what = "PUT" if options.action is Action.SET else "DELETE"
            stage = await _read_back(client, state.id, what, exc)
            if not _untouched(stage, state):
                state = state.advance(
                    step=Step.CHANGED,
                    result=done,
                    note=f"the {what}'s answer was lost ({exc.reason}); read back, "
                    f"{_describe(stage)}: it was carried out, and not repeated",
                )
                await observer(Event("StageChanged", f"{state.id}: {state.message}", stage=state))
                return state
            tries += 1
            if tries >= options.change_attempts:
                raise _not_carried_out(exc, tries, "the stage is unchanged") from None
            delay = client.retry.delay(tries)
            log.info(
                "%s: the %s was not carried out (%s); again in %.2fs",
                state.id,
                what,
                exc.reason,
                delay,
            )
            await asyncio.sleep(delay)
            continue
        await observer(Event("StageChanged", f"{state.id}: {state.result}", stage=state))
        return state


async def _read_back(
    client: IdmClient, stage_id: str, what: str, lost: IdmSyncError
) -> Stage | None:
    """Read the stage after a change whose answer was lost; say so if that fails too."""
    try:
        return await client.read_stage(stage_id)
    except IdmSyncError as exc:
        exc.message = (
            f"{stage_id}: the {what}'s answer was lost ({lost.reason}) and reading the stage "
            f"back failed: {exc.message}; the next run reads it again before any change"
        )
        raise


def _not_carried_out(error: IdmSyncError, tries: int, seen: str) -> IdmSyncError:
    """The same error, now known not to have changed anything."""
    return type(error)(
        f"{error.message}; read back, {seen}: it was not "
        f"(tried {tries} time{'s' if tries > 1 else ''})",
        status=error.status,
    )


async def _destructive_call(
    client: IdmClient, stage: Stage, state: StageProgress, options: ResetOptions
) -> StageProgress:
    if options.action is Action.SET:
        written = await client.write_stage_token(stage, options.token)
        return state.advance(step=Step.CHANGED, result=StageResult.SET, changed_rev=written.rev)
    try:
        await client.delete_stage(stage.id, stage.rev)
    except NotFound:
        # only a DELETE that was answered: a lost answer is read back, never re-sent blindly
        return state.advance(step=Step.CHANGED, result=StageResult.ALREADY_ABSENT)
    return state.advance(step=Step.CHANGED, result=StageResult.DELETED)


def _back(stage: Stage, state: StageProgress) -> bool:
    """Has a liveSync run since our change? (It recreates a deleted stage, rewrites a set one.)"""
    if state.result is StageResult.SET:
        return state.changed_rev is not None and stage.rev != state.changed_rev
    return True


async def _trigger(
    client: IdmClient, state: StageProgress, options: ResetOptions, observer: Observer
) -> StageProgress:
    if not options.trigger or state.source is None:
        why = "liveSync trigger disabled" if not options.trigger else "source not known"
        if options.verify and state.source is not None:
            return state  # still Changed: _verify waits for the next scheduled liveSync
        state = state.advance(
            step=Step.DONE,
            triggered=False,
            note=f"{why}: the next scheduled liveSync recreates the stage",
        )
        await observer(Event("StageVerified", f"{state.id}: {why}", stage=state))
        return state
    tries = 0
    while True:
        try:
            answer = await client.trigger_livesync(state.source)
            break
        except IdmSyncError as exc:
            if not exc.outcome_unknown:
                raise
            stage = await _read_back(client, state.id, "liveSync trigger", exc)
            if stage is not None and _back(stage, state):
                state = state.advance(
                    step=Step.TRIGGERED,
                    triggered=True,
                    new_token=stage.sync_token,
                    note=f"the liveSync trigger's answer was lost ({exc.reason}); read "
                    f"back, the stage is back with token {stage.sync_token!r}: it ran",
                )
                await observer(
                    Event(
                        "LiveSyncTriggered",
                        f"{state.id}: liveSync's answer was lost; the stage is back",
                        stage=state,
                    )
                )
                return state
            tries += 1
            if tries >= options.change_attempts:
                raise _not_carried_out(exc, tries, "the stage has not come back") from None
            await asyncio.sleep(client.retry.delay(tries))
    connector_data = answer.get("connectorData")
    token = connector_data.get("syncToken") if isinstance(connector_data, dict) else None
    state = state.advance(step=Step.TRIGGERED, triggered=True, new_token=token)
    await observer(
        Event("LiveSyncTriggered", f"{state.id}: liveSync on {state.source} ran", stage=state)
    )
    return state


async def _verify(
    client: IdmClient, state: StageProgress, options: ResetOptions, observer: Observer
) -> StageProgress:
    if not options.verify:
        state = state.advance(step=Step.DONE)
        await observer(Event("StageVerified", f"{state.id}: not verified (disabled)", stage=state))
        return state
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.verify_timeout
    while True:
        stage = await client.read_stage(state.id)
        if stage is not None and stage.sync_token is not None:
            state = state.advance(step=Step.DONE, new_token=stage.sync_token)
            await observer(
                Event(
                    "StageVerified",
                    f"{state.id}: back with token {stage.sync_token!r} (was "
                    f"{state.previous_token!r})",
                    stage=state,
                )
            )
            return state
        if loop.time() + options.verify_interval > deadline:
            raise VerifyTimeout(
                f"{state.id}: the stage did not come back with a sync token within "
                f"{options.verify_timeout:g}s"
                + ("" if state.triggered else " (liveSync was not triggered: is it scheduled?)")
            )
        await asyncio.sleep(options.verify_interval)
