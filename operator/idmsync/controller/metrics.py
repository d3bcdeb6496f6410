"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["RESETS", "RESETS_IN_FLIGHT", "RESET_DURATION"]

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
