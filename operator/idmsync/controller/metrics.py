"""Prometheus metrics of the operator."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from idmsync.engine import Drift, DriftCheck

__all__ = [
    "RESETS",
    "RESETS_IN_FLIGHT",
    "RESET_DURATION",
    "STAGE_DRIFT",
    "STAGE_LAG",
    "forget_drift",
    "observe_drift",
]

RESETS = Counter(
    "idmsync_resets_total",
    "SyncTokenResets that reached a terminal phase, by result and reason",
    ["result", "reason"],
)
RESET_DURATION = Histogram(
    "idmsync_reset_duration_seconds",
    "Time from start to terminal phase of one SyncTokenReset run",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
RESETS_IN_FLIGHT = Gauge("idmsync_resets_in_flight", "SyncTokenResets being run right now")

STAGE_LAG = Gauge(
    "idmsync_stage_lag_changes",
    "Changes between a stage's sync token and its directory's last change, at the latest "
    "drift check (negative: the token is ahead of the directory and liveSync is stuck)",
    ["namespace", "name", "stage"],
)
STAGE_DRIFT = Gauge(
    "idmsync_stage_drift",
    "1 for the state the latest drift check found a stage in (InSync, Ahead, Trimmed, "
    "Absent, Unknown), 0 for the others",
    ["namespace", "name", "stage", "state"],
)


def observe_drift(namespace: str, name: str, stage: str, check: DriftCheck) -> None:
    if check.lag is not None:
        STAGE_LAG.labels(namespace, name, stage).set(check.lag)
    else:
        _remove(STAGE_LAG, namespace, name, stage)
    for state in Drift:
        STAGE_DRIFT.labels(namespace, name, stage, state.value).set(
            1 if state is check.state else 0
        )


def forget_drift(namespace: str, name: str, stages: list[str]) -> None:
    """The resource is gone: its series go too."""
    for stage in stages:
        _remove(STAGE_LAG, namespace, name, stage)
        for state in Drift:
            _remove(STAGE_DRIFT, namespace, name, stage, state.value)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
