"""One SyncTokenReset, from its current status to the next: the controller's service layer.

Status is the source of truth, read fresh from the API server on every call:
a terminal resource is never run again unless ``idmsync.dev/rerun`` changed;
a resource left Running (operator killed) resumes from its recorded stages.
Status is written only where a restart needs it, each write carrying all that
was noted since the last: a stage's recorded rev and token before its
DELETE/PUT, the change before the liveSync trigger, the scheduler's pause and a
reconciliation's progress as soon as they happen, the outcome at the end; a
one-stage reset makes three. Events say what changed IDM and how it ended;
every step is in the log. A status that
cannot be read safely is never replaced by a fresh one (that would throw away
what resume relies on): the resource is Stalled with reason InvalidStatus and
nothing is sent to IDM, until the status is fixed or a new rerun value asks
for a new run. One retry budget per reset: ``status.attempts`` counts every
try of this run, whoever made it, and ``status.nextRetryTime`` says when the
next one is due.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from idmsync.controller import metrics
from idmsync.controller.context import OperatorContext
from idmsync.controller.models import (
    RERUN_ANNOTATION,
    TERMINAL_PHASES,
    Condition,
    ServerStatus,
    SyncTokenResetSpec,
    SyncTokenResetStatus,
)
from idmsync.controller.resolve import (
    ResolvedTarget,
    reset_options,
    resolve_directory,
    resolve_target,
)
from idmsync.controller.status import (
    drift_status,
    format_time,
    now,
    progress_from_status,
    recon_from_status,
    recon_status,
    set_condition,
    stage_status,
    stage_summary,
    status_dict,
)
from idmsync.engine import (
    ChangelogReader,
    Event,
    IdmClient,
    LdapDirectory,
    StageRef,
    check_drift,
    run_reset,
    select_stages,
)
from idmsync.engine.recon import summary as recon_summary
from idmsync.errors import IdmSyncError, InternalError, InvalidSpec, InvalidStatus, redact

__all__ = ["EventPoster", "Outcome", "check_drift_now", "reconcile"]

log = logging.getLogger(__name__)

#: post a Kubernetes Event: (type "Normal"/"Warning", reason, message)
EventPoster = Callable[[str, str, str], None]


@dataclass(frozen=True)
class Outcome:
    """What the handler should do next: nothing, or retry after ``retry_in`` seconds."""

    retry_in: float | None = None
    message: str = ""


class _Run:
    """The status of one run: changes are noted in memory, and written all at once by
    :meth:`save` where they must be durable."""

    def __init__(
        self, ctx: OperatorContext, namespace: str, name: str, status: SyncTokenResetStatus
    ) -> None:
        self.ctx, self.namespace, self.name, self.status = ctx, namespace, name, status
        #: the engine's steps in this try, said in the outcome's Event
        self.steps: list[str] = []

    def with_steps(self, message: str) -> str:
        """``message`` and the steps of this try, within an Event's length: every step is
        mirrored in Events, in the few that are posted."""
        if not self.steps:
            return message
        shown: list[str] = []
        room = _EVENT_STEPS_ROOM - len(message)
        for index, step in enumerate(self.steps):
            room -= len(step) + 2
            if room < 0:
                shown.append(f"and {len(self.steps) - index} more")
                break
            shown.append(step)
        return f"{message} [steps: {', '.join(shown)}]"

    def note(self, **changes: Any) -> None:
        """Change the status in memory; the next :meth:`save` writes it."""
        self.status = self.status.model_copy(update=changes)

    async def save(self, **changes: Any) -> None:
        """Write the status, with every change noted so far, in one patch."""
        self.note(**changes)
        await self.ctx.kube.patch_status(self.namespace, self.name, status_dict(self.status))

    def conditions(self, *triples: tuple[str, bool, str, str]) -> Any:
        conditions = list(self.status.conditions)
        for type_, value, reason, message in triples:
            conditions = set_condition(
                conditions, type_, value, reason, message, self.status.observed_generation
            )
        return conditions


async def reconcile(
    ctx: OperatorContext,
    namespace: str,
    name: str,
    post_event: EventPoster,
) -> Outcome:
    """Take the resource one step on: run (or resume) its reset, or leave it alone.

    The resource and its status are read fresh; its status and ``idmsync.dev/rerun`` decide
    whether a run is due. The engine runs with its progress written to status where a
    restart needs it, and the run ends Succeeded, with a retry due, or Failed.
    """
    body = await ctx.kube.read_reset(namespace, name)
    if body is None:
        return Outcome(message="gone")
    meta = body.get("metadata", {})
    rerun = (meta.get("annotations") or {}).get(RERUN_ANNOTATION, "")
    generation = meta.get("generation")
    raw_status = body.get("status") or {}
    try:
        status = _read_status(raw_status)
    except InvalidStatus as exc:
        if _raw_rerun(raw_status) == rerun:
            return await _invalid_status(
                ctx, namespace, name, raw_status, generation, exc, post_event
            )
        # a new rerun value asks for a new run: the unreadable record belongs to the old one
        status = SyncTokenResetStatus(phase="Failed")
    if status.phase in TERMINAL_PHASES and (status.rerun or "") == rerun:
        return Outcome(message=f"already {status.phase}; set {RERUN_ANNOTATION} to run again")
    # lenient where safe: recorded stages without a start time are resumed, never dropped
    fresh = status.phase in TERMINAL_PHASES or (status.start_time is None and not status.stages)
    if fresh:
        status = SyncTokenResetStatus(rerun=rerun, start_time=now(), observed_generation=generation)
        log.info("%s/%s: reset started%s", namespace, name, f" (rerun {rerun!r})" if rerun else "")
    elif status.start_time is None:
        status = status.model_copy(update={"start_time": now()})
    run = _Run(ctx, namespace, name, status)
    # written with the first durable step (or the failure): nothing has happened in IDM yet
    run.note(
        phase="Running",
        attempts=status.attempts + 1,
        next_retry_time=None,
        conditions=run.conditions(
            ("Reconciling", True, "Running", "resetting sync tokens"),
            ("Ready", False, "Running", "resetting sync tokens"),
            ("Stalled", False, "Running", ""),
        ),
    )
    started = time.monotonic()
    metrics.RESETS_IN_FLIGHT.inc()
    secrets: list[str] = []
    try:
        try:
            spec = SyncTokenResetSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            raise InvalidSpec(_validation_message(exc, "spec")) from None
        target, directory = await _resolve(ctx, spec, namespace, secrets)
        changelog = ctx.changelog_reader(directory) if directory is not None else None
        async with ctx.idm_client(target) as client:
            refs = await _select(client, spec)
            ids = [ref.id for ref in refs]
            run.note(target=target.summary, stage_summary=stage_summary(ids))
            busy = ctx.locks.busy(client.base_url, ids)
            if busy:
                # it may wait long: show that it runs
                await run.save()
                post_event("Normal", "Waiting", f"another reset holds {', '.join(busy)}; waiting")
            async with ctx.locks.hold(client.base_url, ids):
                await _run_engine(run, client, refs, spec, changelog, post_event)
    except IdmSyncError as exc:
        return await _failed(ctx, run, exc, secrets, started, post_event)
    except Exception as exc:
        log.exception("unexpected error in %s/%s", namespace, name)
        error = InternalError(f"{type(exc).__name__}: {redact(str(exc), secrets)}")
        return await _failed(ctx, run, error, secrets, started, post_event)
    finally:
        metrics.RESETS_IN_FLIGHT.dec()
    summary = "; ".join(f"{s.id}: {s.result}" for s in run.status.stages)
    if run.status.reconciliation is not None:
        summary += f"; reconciliation {run.status.reconciliation.id}: SUCCESS"
    await run.save(
        phase="Succeeded",
        completion_time=now(),
        conditions=run.conditions(
            ("Ready", True, "Succeeded", summary),
            ("Reconciling", False, "Succeeded", ""),
            ("Stalled", False, "Succeeded", ""),
        ),
    )
    post_event("Normal", "Succeeded", run.with_steps(summary))
    metrics.RESETS.labels(result="Succeeded", reason="Succeeded").inc()
    metrics.RESET_DURATION.observe(time.monotonic() - started)
    return Outcome(message=summary)


async def check_drift_now(
    ctx: OperatorContext, namespace: str, name: str, post_event: EventPoster
) -> str:
    """The periodic drift check of ``spec.check.intervalSeconds``: read-only, never a reset.

    Refreshes ``status.drift``, ``status.lastCheckTime`` and the lag gauge when the last
    check is older than the interval and no run is going on (a run checks by itself).
    """
    body = await ctx.kube.read_reset(namespace, name)
    if body is None:
        return "gone"
    try:
        spec = SyncTokenResetSpec.model_validate(body.get("spec") or {})
        status = _read_status(body.get("status") or {})
    except (ValidationError, InvalidStatus):
        return "not checked: the resource does not parse"
    if spec.check is None or spec.check.interval_seconds is None:
        return "no periodic check"
    if status.phase == "Running":
        return "a run is going on"
    if status.last_check_time is not None:
        last = datetime.datetime.strptime(status.last_check_time, "%Y-%m-%dT%H:%M:%SZ")
        age = datetime.datetime.now(datetime.UTC) - last.replace(tzinfo=datetime.UTC)
        if age.total_seconds() < spec.check.interval_seconds:
            return "checked recently"
    secrets: list[str] = []
    try:
        target, directory = await _resolve(ctx, spec, namespace, secrets)
        if directory is None:
            raise InternalError("a drift check without check.ldap")
        async with ctx.idm_client(target) as client:
            refs = await _select(client, spec)
            _, checks = await check_drift(client, ctx.changelog_reader(directory), refs)
    except IdmSyncError as exc:
        message = f"drift check failed: {redact(exc.message, secrets)}"
        post_event("Warning", exc.reason, message)
        return message
    checked = now()
    for stage_id, check in checks.items():
        metrics.observe_drift(namespace, name, stage_id, check)
    drift = drift_status(checks, checked)
    await ctx.kube.patch_status(
        namespace,
        name,
        {
            "drift": [d.model_dump(by_alias=True, mode="json") for d in drift],
            "lastCheckTime": checked,
        },
    )
    out_of_sync = [f"{d.id}: {d.state}" for d in drift if d.state in ("Ahead", "Trimmed")]
    if out_of_sync:
        post_event("Warning", "OutOfSync", "; ".join(out_of_sync))
    return "checked: " + ", ".join(f"{d.id} {d.state}" for d in drift)


async def _resolve(
    ctx: OperatorContext, spec: SyncTokenResetSpec, namespace: str, secrets: list[str]
) -> tuple[ResolvedTarget, LdapDirectory | None]:
    """The target and the check's directory, their Secrets read now; each secret value is
    added to ``secrets`` as soon as it is known, so that a failure after it is redacted."""
    target = await resolve_target(spec, namespace, ctx.kube, ctx.settings, ctx.credentials)
    secrets.extend(target.credentials.secret_values())
    directory = await resolve_directory(spec, namespace, ctx.kube, ctx.settings)
    if directory is not None and directory.password is not None:
        secrets.append(directory.password.reveal())
    return target, directory


async def _select(client: IdmClient, spec: SyncTokenResetSpec) -> list[StageRef]:
    return await select_stages(
        client, sources=spec.stages.sources, ids=spec.stages.ids, all_stages=spec.stages.all
    )


def _read_status(raw: Any) -> SyncTokenResetStatus:
    if not isinstance(raw, dict):
        raise InvalidStatus(f"status is a {type(raw).__name__}, not an object")
    try:
        return SyncTokenResetStatus.model_validate(raw)
    except ValidationError as exc:
        raise InvalidStatus(_validation_message(exc, "status")) from None


def _raw_rerun(raw: Any) -> str:
    """The rerun value an unreadable status answers, if it says (else: the first run's "")."""
    value = raw.get("rerun") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else ""


async def _invalid_status(
    ctx: OperatorContext,
    namespace: str,
    name: str,
    raw: Any,
    generation: int | None,
    error: InvalidStatus,
    post_event: EventPoster,
) -> Outcome:
    """Fail safe: say so on the resource, touch nothing else, send nothing to IDM."""
    message = (
        f"{error.message}; not resuming from it (a change could be repeated). Fix the "
        f"status, or set {RERUN_ANNOTATION} to a new value to start a new reset"
    )
    kept = raw.get("conditions") if isinstance(raw, dict) else None
    conditions = SyncTokenResetStatus.model_validate({"conditions": kept}).conditions
    for type_, value, reason, text in (
        ("Ready", False, error.reason, message),
        ("Reconciling", False, error.reason, ""),
        ("Stalled", True, error.reason, message),
    ):
        conditions = set_condition(conditions, type_, value, reason, text, generation)
    await ctx.kube.patch_status(namespace, name, {"conditions": _dump(conditions)})
    post_event("Warning", error.reason, message)
    metrics.RESETS.labels(result="Stalled", reason=error.reason).inc()
    return Outcome(message=message)


def _dump(conditions: list[Condition]) -> list[Mapping[str, Any]]:
    return [c.model_dump(by_alias=True, mode="json") for c in conditions]


async def _run_engine(
    run: _Run,
    client: IdmClient,
    refs: list[Any],
    spec: SyncTokenResetSpec,
    changelog: ChangelogReader | None,
    post_event: EventPoster,
) -> None:
    progress = progress_from_status(run.status)
    # StageRecorded precedes every destructive call; StageChanged precedes the liveSync
    # trigger (a restart resumes there); the scheduler's pause is IDM-wide and a started
    # reconciliation must not be started again: said at once
    known = {ref.id for ref in refs}
    stages = {s.id: s for s in run.status.stages if s.id in known}

    async def observe(event: Event) -> None:
        log.info("%s/%s: %s: %s", run.namespace, run.name, event.kind, event.message)
        run.steps.append(event.kind if event.stage is None else f"{event.kind} {event.stage.id}")
        if event.kind == "StageChecked" and event.stage is not None and event.stage.check:
            checked = now()
            drift = {d.id: d for d in run.status.drift if d.id in known}
            (drift[event.stage.id],) = drift_status({event.stage.id: event.stage.check}, checked)
            run.status = run.status.model_copy(
                update={
                    "drift": [drift[ref.id] for ref in refs if ref.id in drift],
                    "last_check_time": checked,
                }
            )
            metrics.observe_drift(run.namespace, run.name, event.stage.id, event.stage.check)
        if event.server is not None:
            run.note(
                server=ServerStatus(
                    url=event.server.url,
                    api=str(event.server.flavour),
                    version=await client.version(),
                )
            )
        elif event.stage is not None:
            stages[event.stage.id] = stage_status(event.stage)
            run.note(stages=[stages[ref.id] for ref in refs if ref.id in stages])
        elif event.kind in ("SchedulerPaused", "SchedulerResumed"):
            paused = event.kind == "SchedulerPaused"
            run.note(schedules_paused=paused, paused_jobs=list(event.jobs) if paused else [])
        elif event.recon is not None:
            update: dict[str, Any] = {"reconciliation": recon_status(event.recon)}
            if not event.recon.finished:
                update["conditions"] = run.conditions(
                    ("Reconciling", True, "Reconciliation", recon_summary(event.recon)),
                    ("Ready", False, "Reconciliation", "catching up: " + event.message),
                )
            run.note(**update)
        if event.kind in _DURABLE:
            await run.save()
        if event.kind in _POSTED:
            post_event("Normal", event.kind, _event_message(event))

    await run_reset(
        client,
        refs,
        reset_options(spec),
        observer=observe,
        progress=progress,
        changelog=changelog,
        recon=recon_from_status(run.status.reconciliation),
    )


#: an Event's message is cut at 1,024 characters (kopf): the steps get what is left
_EVENT_STEPS_ROOM = 1000

#: engine steps written to status at once (a dry run changes nothing: it says StageWouldChange)
_DURABLE = frozenset(
    {
        "StageRecorded",
        "StageChanged",
        "SchedulerPaused",
        "ReconStarted",
        "ReconProgress",
        "ReconFinished",
    }
)
#: engine steps posted as Events (the others are in the operator's log and the status)
_POSTED = frozenset(
    {
        "StageChecked",
        "StageChanged",
        "SchedulerPaused",
        "LiveSyncIdle",
        "SchedulerResumed",
        "ReconStarted",
        "ReconProgress",
        "ReconFinished",
    }
)


def _event_message(event: Event) -> str:
    """An Event's message; a change says what it replaced, the audit record."""
    stage = event.stage
    if event.kind == "StageChanged" and stage is not None and stage.previous_rev is not None:
        return f"{event.message} (was rev {stage.previous_rev}, token {stage.previous_token!r})"
    return event.message


async def _failed(
    ctx: OperatorContext,
    run: _Run,
    error: IdmSyncError,
    secrets: Sequence[str],
    started: float,
    post_event: EventPoster,
) -> Outcome:
    message = redact(error.message, secrets)
    settings = ctx.settings
    attempt, allowed = run.status.attempts, settings.retry_limit + 1
    if error.requeue and attempt < allowed:
        delay = min(settings.retry_backoff_max, settings.retry_backoff * 2 ** (attempt - 1))
        due = format_time(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay))
        await run.save(
            next_retry_time=due,
            conditions=run.conditions(
                ("Ready", False, error.reason, message),
                (
                    "Reconciling",
                    True,
                    error.reason,
                    f"try {attempt} of {allowed} failed; next at {due}",
                ),
            ),
        )
        post_event(
            "Warning",
            error.reason,
            run.with_steps(f"{message} (try {attempt} of {allowed}; next in {delay:g}s)"),
        )
        return Outcome(retry_in=delay, message=message)
    await run.save(
        phase="Failed",
        completion_time=now(),
        conditions=run.conditions(
            ("Ready", False, error.reason, message),
            ("Reconciling", False, error.reason, ""),
            ("Stalled", True, error.reason, message),
        ),
    )
    post_event("Warning", error.reason, run.with_steps(message))
    metrics.RESETS.labels(result="Failed", reason=error.reason).inc()
    metrics.RESET_DURATION.observe(time.monotonic() - started)
    return Outcome(message=message)


def _validation_message(exc: ValidationError, what: str) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or what
        parts.append(f"{where}: {error['msg']}")
    return f"invalid {what}: " + "; ".join(parts)
