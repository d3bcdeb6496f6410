"""Plain data the engine works with: requests in, progress and events out."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from idmsync.engine.flavour import Flavour

__all__ = [
    "Action",
    "JsonValue",
    "ResetOptions",
    "ServerInfo",
    "Stage",
    "StageProgress",
    "StageRef",
    "StageResult",
    "Step",
]

JsonValue = Any  # a sync token is whatever JSON the connector stores: int, str, object


class Action(enum.StrEnum):
    DELETE = "Delete"
    SET = "Set"


class StageResult(enum.StrEnum):
    DELETED = "Deleted"
    ALREADY_ABSENT = "AlreadyAbsent"
    SET = "Set"
    WOULD_DELETE = "WouldDelete"
    WOULD_SET = "WouldSet"


class Step(enum.StrEnum):
    """How far one stage has got. Persisted by the caller; drives resume."""

    PENDING = "Pending"
    RECORDED = "Recorded"  # previous rev/token written down; the destructive call comes next
    CHANGED = "Changed"  # deleted / set / found absent
    TRIGGERED = "Triggered"  # liveSync asked to run
    DONE = "Done"  # verified (or nothing left to verify)


@dataclass(frozen=True)
class ServerInfo:
    url: str  # server + context path, e.g. http://idm:8080/openidm
    flavour: Flavour
    version: str | None = None


@dataclass(frozen=True)
class Stage:
    """One entry of ``repo/synchronisation/pooledSyncStage``."""

    id: str
    rev: str
    sync_token: JsonValue
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageRef:
    id: str
    source: str | None = None  # known only when the stage was named by its source


@dataclass(frozen=True)
class ResetOptions:
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
    #: tries of a change (delete, set, trigger) whose failure left the stage as it was;
    #: the operator uses 1 and requeues the whole reset instead (one budget per reset)
    change_attempts: int = 3


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

    def advance(self, *, note: str | None = None, **changes: Any) -> StageProgress:
        """The next state; ``note`` is added to ``message``, which keeps every step's notes."""
        if note is not None:
            changes["message"] = f"{self.message}; {note}" if self.message else note
        return replace(self, **changes)
