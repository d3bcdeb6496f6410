"""kopf handlers: thin, they read like a table of contents.

Every trigger (create, operator resume, update such as a new rerun annotation)
calls the same :func:`reconcile`, which decides from the status what to do.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import kopf
from prometheus_client import start_http_server

from idmsync.controller import metrics
from idmsync.controller.context import OperatorContext, Stopping
from idmsync.controller.kube import Kube
from idmsync.controller.kube_retry import RetryingKube
from idmsync.controller.models import GROUP, PLURAL, VERSION
from idmsync.controller.reconcile import check_drift_now, reconcile
from idmsync.controller.settings import OperatorSettings
from idmsync.errors import InternalError, KubernetesUnavailable

__all__ = ["configure_kopf"]

log = logging.getLogger(__name__)

RESOURCE = (GROUP, VERSION, PLURAL)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """``memo.settings`` is ours, put there by ``idmsync run`` (controller/app.py)."""
    ours: OperatorSettings = memo.settings
    configure_kopf(settings, ours)
    if ours.metrics_port:
        start_http_server(ours.metrics_port)
    kube = Kube.from_environment()
    if ours.peering:
        await kube.ensure_cluster_peering(ours.peering)
    memo.operator = OperatorContext(settings=ours, kube=RetryingKube(kube))
    log.info("idmsync operator started (namespaces: %s)", ",".join(ours.namespaces) or "all")


def configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """kopf's settings from ours; the one place peering (or standalone) is decided."""
    # kopf's own bookkeeping goes in annotations under its own prefix: our status schema is
    # strict (it would prune status.kopf), and idmsync.dev/ annotations belong to users
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="kopf.idmsync.dev"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.idmsync.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "kopf.idmsync.dev/finalizer"
    # a watch that goes silent is re-established rather than trusted forever
    settings.watching.server_timeout = ours.watch_timeout
    settings.watching.client_timeout = ours.watch_timeout + 30
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.WARNING  # our Events are posted explicitly
    if ours.standalone:
        settings.peering.standalone = True
    elif ours.peering:
        settings.peering.name = ours.peering
        settings.peering.mandatory = True
        settings.peering.clusterwide = True  # one ClusterKopfPeering, whatever is watched
        settings.peering.lifetime = ours.peering_lifetime
        # distinct priorities: the highest replica works, the others pause
        settings.peering.priority = random.randint(1, 2**31 - 1)  # noqa: S311
    # else: kopf's default, the peering "default" if it exists, else standalone
    if ours.max_concurrent_resets:
        settings.queueing.worker_limit = ours.max_concurrent_resets
    # a worker holds its slot until idle this long; our own writes' echoes come within it
    settings.queueing.idle_timeout = 1.0


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    context: OperatorContext | None = getattr(memo, "operator", None)
    if context is not None:
        await context.close()


@kopf.on.probe(id="ready")
def ready(memo: kopf.Memo, **_: Any) -> bool:
    return getattr(memo, "operator", None) is not None


#: kopf's id of the handler below: its progress annotation (kopf.idmsync.dev/run_reset) is on
#: live objects and in users' GitOps ignore rules (docs/gitops.md), so it stays as it was
RESET_HANDLER_ID = "run_reset"


@kopf.on.resume(*RESOURCE, id=RESET_HANDLER_ID)
@kopf.on.create(*RESOURCE, id=RESET_HANDLER_ID)
@kopf.on.update(*RESOURCE, id=RESET_HANDLER_ID)
async def handle_reset(
    body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if namespace is None:
        raise InternalError(f"SyncTokenReset {name} without a namespace")
    context: OperatorContext = memo.operator

    def post(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    try:
        async with context.running():
            outcome = await reconcile(context, namespace, name, post)
    except Stopping:
        # not started: left to the replica taking over, or to the next start (kopf keeps it)
        raise kopf.TemporaryError(
            "the operator is stopping", delay=context.settings.retry_backoff
        ) from None
    except KubernetesUnavailable as exc:
        # not even the failure could be written: the status still says where the reset is,
        # and the next try resumes from it (kopf's own retries ride the outage out too)
        log.warning("%s/%s: %s; trying again", namespace, name, exc.message)
        raise kopf.TemporaryError(exc.message, delay=context.settings.retry_backoff) from None
    log.info("%s/%s: %s", namespace, name, outcome.message)
    if outcome.retry_in is not None:
        raise kopf.TemporaryError(outcome.message, delay=outcome.retry_in)


#: how often the operator looks whether a periodic drift check is due (spec.check.intervalSeconds)
CHECK_TICK = 15.0


def _checks_periodically(spec: kopf.Spec, **_: Any) -> bool:
    check = spec.get("check") or {}
    return bool(check.get("intervalSeconds"))


@kopf.timer(*RESOURCE, interval=CHECK_TICK, initial_delay=CHECK_TICK, when=_checks_periodically)
async def recheck_drift(
    body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if namespace is None:
        raise InternalError(f"SyncTokenReset {name} without a namespace")

    def post(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    outcome = await check_drift_now(memo.operator, namespace, name, post)
    log.debug("%s/%s: %s", namespace, name, outcome)


@kopf.on.delete(*RESOURCE, optional=True)
async def forget_metrics(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
    drift = (body.get("status") or {}).get("drift") or []
    metrics.forget_drift(namespace or "", name, [d.get("id", "") for d in drift])
