"""Drift check: is a stage's sync token inside its directory's changelog?

liveSync from a changelog reads the changes numbered after the stored token.
That works while ``first - 1 <= token <= last``: the next change it needs is
still there (or none is due yet). Above ``last`` (the changelog was rebuilt or
restored from an older backup) liveSync waits for change numbers the directory
will not reach for a long time: it is stuck, silently. Below ``first - 1`` the
changes right after the token were purged: liveSync misses them (and, with a gap
wider than the connector's changeLogBlockSize, finds nothing at all and stays
stuck too; observed on OpenDJ 4.6.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from idmsync.engine.changelog import ChangelogRange, ChangelogReader
from idmsync.engine.client import IdmClient
from idmsync.engine.events import Event, Observer
from idmsync.engine.model import (
    Drift,
    DriftCheck,
    JsonValue,
    ResetOptions,
    StageProgress,
    StageRef,
    StageResult,
    Step,
    When,
)

__all__ = [
    "change_number",
    "check_drift",
    "check_stages",
    "classify",
    "describe",
    "needs_check",
    "worst",
]


def change_number(token: JsonValue) -> int | None:
    """The token as a change number, if it is one (an int, or a string of digits)."""
    if isinstance(token, bool):
        return None
    if isinstance(token, int):
        return token
    if isinstance(token, str) and token.strip().isdigit():
        return int(token.strip())
    return None


def classify(token: JsonValue, span: ChangelogRange, *, present: bool = True) -> DriftCheck:
    """The verdict for one stage's token (``present=False``: there is no stage)."""
    if not present:
        return DriftCheck(Drift.ABSENT, None, span.first, span.last, None)
    number = change_number(token)
    if number is None:
        return DriftCheck(Drift.UNKNOWN, token, span.first, span.last, None)
    lag = span.last - number
    if number > span.last:
        state = Drift.AHEAD
    elif number < span.first - 1:
        state = Drift.TRIMMED
    else:
        state = Drift.IN_SYNC
    return DriftCheck(state, token, span.first, span.last, lag)


def describe(check: DriftCheck) -> str:
    """One line a person can act on."""
    span = f"changelog {check.first}..{check.last}"
    if check.state is Drift.ABSENT:
        return "Absent: no stage; the next liveSync creates it at the latest change"
    if check.state is Drift.UNKNOWN:
        return f"Unknown: token {check.token!r} is not a change number ({span})"
    if check.state is Drift.AHEAD:
        return (
            f"Ahead: token {check.token!r} is above the last change ({span}): liveSync is "
            "stuck until the directory passes it"
        )
    if check.state is Drift.TRIMMED:
        return (
            f"Trimmed: the changes after token {check.token!r} were purged ({span}): "
            "liveSync misses them"
        )
    return f"InSync: token {check.token!r}, {check.lag} change(s) behind ({span})"


def worst(checks: Sequence[DriftCheck]) -> Drift:
    """The state that matters most: Ahead (stuck) > Trimmed (missing) > Unknown > in sync."""
    states = {check.state for check in checks}
    for state in (Drift.AHEAD, Drift.TRIMMED, Drift.UNKNOWN):
        if state in states:
            return state
    return Drift.IN_SYNC


async def check_drift(
    client: IdmClient, changelog: ChangelogReader, stages: Sequence[StageRef]
) -> tuple[ChangelogRange, dict[str, DriftCheck]]:
    """Read-only: the directory's range once, then each stage's verdict."""
    span = await changelog.read_range()
    checks: dict[str, DriftCheck] = {}
    for ref in stages:
        stage = await client.read_stage(ref.id)
        checks[ref.id] = classify(
            stage.sync_token if stage is not None else None, span, present=stage is not None
        )
    return span, checks


def needs_check(state: StageProgress | None) -> bool:
    """A stage not yet started and not yet checked (a resumed run keeps its verdict)."""
    return state is None or (state.step is Step.PENDING and state.check is None)


async def check_stages(
    client: IdmClient,
    changelog: ChangelogReader,
    stages: Sequence[StageRef],
    options: ResetOptions,
    recorded: Mapping[str, StageProgress],
    observer: Observer,
) -> dict[str, StageProgress]:
    """Check the stages not checked yet; under OutOfSync, settle those found in sync.

    The directory is read once for all of them. Each verdict reaches the observer (and so
    the status) before any stage is changed.
    """
    progress = dict(recorded)
    pending = [ref for ref in stages if needs_check(progress.get(ref.id))]
    if not pending:
        return progress
    _, checks = await check_drift(client, changelog, pending)
    for ref in pending:
        state = progress.get(ref.id) or StageProgress(id=ref.id, source=ref.source)
        check = checks[ref.id]
        state = state.advance(check=check)
        if options.when is When.OUT_OF_SYNC and not check.out_of_sync:
            state = state.advance(
                step=Step.DONE,
                result=StageResult.SKIPPED,
                note=f"{check.state}: left alone (when OutOfSync)",
            )
        progress[ref.id] = state
        await observer(Event("StageChecked", f"{ref.id}: {describe(check)}", stage=state))
    return progress
