"""Stopping in the right order (controller/context.py ``drain``): no new reset starts, those
running finish within the grace or are cancelled at their current step, and only then may the
replica leave its peers. The whole story with two replicas is tests/integration/test_ha.py."""

from __future__ import annotations

import asyncio

import pytest

from idmsync.controller.context import OperatorContext, Stopping
from idmsync.controller.settings import OperatorSettings
from tests.harness.fake_kube import FakeKube


async def test_draining_waits_for_resets_in_progress_then_refuses_new_ones() -> None:
    context = OperatorContext(settings=OperatorSettings(), kube=FakeKube())
    finished: list[str] = []

    async def reset(name: str, seconds: float) -> None:
        async with context.running():
            await asyncio.sleep(seconds)
            finished.append(name)

    quick = asyncio.create_task(reset("quick", 0.05))
    slow = asyncio.create_task(reset("slow", 30))
    await asyncio.sleep(0.01)
    await context.drain(grace=1.0)
    assert finished == ["quick"]
    assert slow.cancelled(), "cancelled at its current step once the grace was over"
    assert quick.done()
    with pytest.raises(Stopping):
        await reset("late", 0)


async def test_draining_with_nothing_running_returns_at_once() -> None:
    context = OperatorContext(settings=OperatorSettings(), kube=FakeKube())
    await asyncio.wait_for(context.drain(grace=60), timeout=1)
