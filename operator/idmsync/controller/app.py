"""``idmsync run``: start kopf with our handlers and settings, and stop it in the right order.

On SIGTERM (a rolling update) or SIGINT the operator first drains: it starts no new reset,
lets those running finish within ``shutdown_grace`` seconds and cancels the rest at their
current step. Only then does kopf stop, and with it leave the peering: a standby replica
takes over no reset that is still running here. (kopf's own signal handling leaves the
peering while handlers still run: the standby then ran the same resets a second time.)
"""

from __future__ import annotations

import asyncio
import logging
import signal

import kopf

import idmsync.controller.handlers  # noqa: F401 - registers the handlers with kopf
from idmsync.controller.context import OperatorContext
from idmsync.controller.settings import OperatorSettings

__all__ = ["run_operator"]

log = logging.getLogger(__name__)


def run_operator(settings: OperatorSettings) -> None:
    kopf.configure(
        verbose=settings.verbose,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    asyncio.run(_operate(settings))


async def _operate(settings: OperatorSettings) -> None:
    # the handlers read our settings from the memo (handlers.startup); kopf's own settings,
    # peering included, are set there from them
    memo = kopf.Memo(settings=settings)
    ready, stop = asyncio.Event(), asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz"
            if settings.health_port
            else None,
            memo=memo,
            ready_flag=ready,
            stop_flag=stop,
        )
    )
    await asyncio.wait([operator, asyncio.create_task(ready.wait())], return_when="FIRST_COMPLETED")
    if operator.done():  # the start-up failed
        await operator
        return
    # kopf installed its signal handlers before it was ready: ours replace them
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled.set)
    await asyncio.wait(
        [operator, asyncio.create_task(signalled.wait())], return_when="FIRST_COMPLETED"
    )
    if not operator.done():
        log.info("stop requested: draining before leaving the peering")
        context: OperatorContext | None = getattr(memo, "operator", None)
        if context is not None:
            await context.drain(settings.shutdown_grace)
        stop.set()
    await operator
