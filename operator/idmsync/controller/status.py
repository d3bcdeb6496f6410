"""Status of a SyncTokenReset: one condition helper, one mapping to and from progress.

Conditions are kstatus-compatible: ``Ready`` (True when the reset succeeded),
``Reconciling`` (True while it runs or retries), ``Stalled`` (True when it
failed for good); each carries a machine-readable reason.
"""

from __future__ import annotations

import datetime

from pydantic import JsonValue

from idmsync.controller.models import (
    Condition,
    ReconStatus,
    StageCheck,
    StageDrift,
    StageLiveSync,
    StageStatus,
    SyncTokenResetStatus,
)
from idmsync.engine import DriftCheck, ReconProgress, StageProgress

__all__ = [
    "check_from_status",
    "check_status",
    "drift_status",
    "format_time",
    "now",
    "progress_from_status",
    "recon_from_status",
    "recon_status",
    "set_condition",
    "stage_status",
    "stage_summary",
    "status_dict",
]


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC, to the second, as Kubernetes writes times."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> str:
    return format_time(datetime.datetime.now(datetime.UTC))


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> list[Condition]:
    """Replace condition ``type_``, keeping lastTransitionTime when its status is unchanged."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == value else now()
    updated = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message[:1024],
        observed_generation=generation,
        last_transition_time=since,
    )
    return [c for c in conditions if c.type != type_] + [updated]


def stage_status(progress: StageProgress) -> StageStatus:
    return StageStatus(
        id=progress.id,
        source=progress.source,
        step=progress.step,
        previous_rev=progress.previous_rev,
        previous_token=progress.previous_token,
        result=progress.result,
        live_sync=StageLiveSync(triggered=progress.triggered, new_token=progress.new_token),
        message=progress.message,
        check=check_status(progress.check) if progress.check is not None else None,
    )


def check_status(check: DriftCheck, time: str | None = None) -> StageCheck:
    return StageCheck(
        state=check.state,
        token=check.token,
        first_change_number=check.first,
        last_change_number=check.last,
        lag=check.lag,
        time=time or now(),
    )


def check_from_status(check: StageCheck) -> DriftCheck:
    return DriftCheck(
        state=check.state,
        token=check.token,
        first=check.first_change_number,
        last=check.last_change_number,
        lag=check.lag,
    )


def drift_status(checks: dict[str, DriftCheck], time: str) -> list[StageDrift]:
    return [
        StageDrift(id=stage_id, **check_status(check, time).model_dump())
        for stage_id, check in checks.items()
    ]


def recon_status(recon: ReconProgress) -> ReconStatus:
    """The reconciliation as status shows it: every field of ReconStatus, by name."""
    return ReconStatus(**{name: getattr(recon, name) for name in ReconStatus.model_fields})


def recon_from_status(recon: ReconStatus | None) -> ReconProgress | None:
    return None if recon is None else ReconProgress(**recon.model_dump())


def progress_from_status(status: SyncTokenResetStatus) -> dict[str, StageProgress]:
    """What the last run got done, for resume."""
    return {
        stage.id: StageProgress(
            id=stage.id,
            source=stage.source,
            step=stage.step,
            previous_rev=stage.previous_rev,
            previous_token=stage.previous_token,
            result=stage.result,
            triggered=stage.live_sync.triggered,
            new_token=stage.live_sync.new_token,
            message=stage.message,
            check=check_from_status(stage.check) if stage.check is not None else None,
        )
        for stage in status.stages
    }


def stage_summary(ids: list[str]) -> str:
    if len(ids) <= 2:
        return ",".join(ids)
    return f"{ids[0]} +{len(ids) - 1}"


def status_dict(status: SyncTokenResetStatus) -> dict[str, JsonValue]:
    """The status as the API stores it: camelCase, explicit nulls so a merge patch clears."""
    return status.model_dump(by_alias=True, mode="json")
