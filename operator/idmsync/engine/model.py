"""Plain data the engine works with: requests in, progress and events out."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias, TypedDict, Unpack

from idmsync.engine.flavour import Flavour

__all__ = [
    "Action",
    "Drift",
    "DriftCheck",
    "JsonValue",
    "ReconProgress",
    "ReconcileOptions",
    "ResetOptions",
    "ServerInfo",
    "Stage",
    "StageProgress",
    "StageRef",
    "StageResult",
    "Step",
    "When",
]

#: a value as JSON carries it; a sync token is whatever JSON the connector stores (a change
#: number, a timestamp string, an object)
JsonValue: TypeAlias = "int | float | str | bool | list[JsonValue] | dict[str, JsonValue] | None"


class Action(enum.StrEnum):
    """What a reset does to a stage: delete it (the KB procedure) or write a token into it."""

    DELETE = "Delete"
    SET = "Set"


class StageResult(enum.StrEnum):
    """What happened to one stage, or with a dry run what would have; the audit record."""

    DELETED = "Deleted"
    ALREADY_ABSENT = "AlreadyAbsent"
    SET = "Set"
    WOULD_DELETE = "WouldDelete"
    WOULD_SET = "WouldSet"
    SKIPPED = "Skipped"  # when OutOfSync: the check found the stage in sync, left alone


class When(enum.StrEnum):
    """Which stages a reset changes: all it names, or only those a drift check faults."""

    ALWAYS = "Always"
    OUT_OF_SYNC = "OutOfSync"


class Drift(enum.StrEnum):
    """A stage's token against its directory's changelog range."""

    IN_SYNC = "InSync"  # first - 1 <= token <= last: liveSync reads every change after it
    AHEAD = "Ahead"  # token > last: changelog rebuilt or restored; liveSync is stuck
    TRIMMED = "Trimmed"  # token < first - 1: changes after it were purged; liveSync misses them
    ABSENT = "Absent"  # no stage: the next liveSync starts it at the latest change
    UNKNOWN = "Unknown"  # the token is not a change number (a CSV timestamp, an object)


@dataclass(frozen=True)
class DriftCheck:
    """What one check saw: the stage's token, the directory's range, and the verdict."""

    state: Drift
    token: JsonValue = None
    first: int | None = None  # the directory's firstChangeNumber
    last: int | None = None  # ... and lastChangeNumber
    #: changes between the token and the last change (negative: the token is ahead)
    lag: int | None = None

    @property
    def out_of_sync(self) -> bool:
        return self.state in (Drift.AHEAD, Drift.TRIMMED)


@dataclass(frozen=True)
class ReconcileOptions:
    """Catch up after a reset: reconcile ``mapping`` and follow it to the end."""

    mapping: str
    timeout: float = 3600.0
    interval: float = 2.0


@dataclass(frozen=True)
class ReconProgress:
    """One reconciliation run as IDM reports it (``GET recon/<id>``)."""

    mapping: str
    id: str | None = None
    state: str | None = None  # ACTIVE, SUCCESS, FAILED, CANCELED (IDM's words)
    stage: str | None = None  # e.g. ACTIVE_RECONCILING_SOURCE, COMPLETED_SUCCESS
    started: str | None = None
    ended: str | None = None
    processed: int | None = None  # source entries processed
    created: int | None = None  # target objects created
    succeeded: int | None = None  # entries whose action succeeded
    failed: int | None = None  # ... and failed
    situations: dict[str, int] = field(default_factory=dict)  # the non-zero situation counts
    message: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("SUCCESS", "FAILED", "CANCELED")


class Step(enum.StrEnum):
    """How far one stage has got. Persisted by the caller; drives resume."""

    PENDING = "Pending"
    RECORDED = "Recorded"  # previous rev/token written down; the destructive call comes next
    CHANGED = "Changed"  # deleted / set / found absent
    TRIGGERED = "Triggered"  # liveSync asked to run
    DONE = "Done"  # verified (or nothing left to verify)


@dataclass(frozen=True)
class ServerInfo:
    """The server a reset talks to, and the request dialect it speaks."""

    url: str  # server + context path, e.g. http://idm:8080/openidm
    flavour: Flavour
    version: str | None = None


@dataclass(frozen=True)
class Stage:
    """One entry of ``repo/synchronisation/pooledSyncStage``."""

    id: str
    rev: str
    sync_token: JsonValue
    body: dict[str, Any] = field(default_factory=dict)  # the stage as read, for a Set


@dataclass(frozen=True)
class StageRef:
    """A stage to reset, as :func:`select_stages` names it: by id, and by source if known."""

    id: str
    source: str | None = None  # known only when the stage was named by its source


@dataclass(frozen=True)
class ResetOptions:
    """How :func:`run_reset` goes about it: the spec's choices, and the engine's patience."""

    action: Action = Action.DELETE
    token: JsonValue = None  # with Action.SET
    trigger: bool = True
    verify: bool = True
    verify_timeout: float = 120.0
    verify_interval: float = 1.0
    pause_schedules: bool = False
    dry_run: bool = False
    #: re-reads after a 412 (a liveSync wrote the stage between our read and our change)
    max_stale_retries: int = 5
    #: Always: change every stage named; OutOfSync: only those the drift check faults
    when: When = When.ALWAYS
    #: after the reset: reconcile a mapping to catch up the changes liveSync skipped
    reconcile: ReconcileOptions | None = None
    #: with pause_schedules: how long to wait for running liveSync jobs of the stages
    pause_wait_timeout: float = 60.0
    pause_wait_interval: float = 1.0
    #: tries of a change (delete, set, trigger) whose failure left the stage as it was;
    #: the operator uses 1 and requeues the whole reset instead (one budget per reset)
    change_attempts: int = 3


class _Changes(TypedDict, total=False):
    """What :meth:`StageProgress.advance` may change (the id and source stay)."""

    step: Step
    previous_rev: str | None
    previous_token: JsonValue
    result: StageResult | None
    triggered: bool
    new_token: JsonValue
    message: str | None
    changed_rev: str | None
    check: DriftCheck | None


@dataclass(frozen=True)
class StageProgress:
    """What happened to one stage so far: the audit record, and what resume reads."""

    id: str
    source: str | None = None
    step: Step = Step.PENDING
    previous_rev: str | None = None
    previous_token: JsonValue = None
    result: StageResult | None = None
    triggered: bool = False
    new_token: JsonValue = None
    message: str | None = None
    #: the rev our Set wrote (not persisted: only tells a lost trigger answer apart)
    changed_rev: str | None = None
    #: the drift check that decided whether this stage is reset
    check: DriftCheck | None = None

    def advance(self, *, note: str | None = None, **changes: Unpack[_Changes]) -> StageProgress:
        """The next state; ``note`` is added to ``message``, which keeps every step's notes."""
        if note is not None:
            changes["message"] = f"{self.message}; {note}" if self.message else note
        return replace(self, **changes)
