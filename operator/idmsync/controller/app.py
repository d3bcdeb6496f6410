"""``idmsync run``: start kopf with our handlers and settings."""

from __future__ import annotations

import kopf

from idmsync.controller.handlers import configure_operator
from idmsync.controller.settings import OperatorSettings

__all__ = ["run_operator"]


def run_operator(settings: OperatorSettings) -> None:
    configure_operator(settings)
    kopf.configure(
        verbose=settings.verbose,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=settings.peering == "" or None,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz"
        if settings.health_port
        else None,
    )
