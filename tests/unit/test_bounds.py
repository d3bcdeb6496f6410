"""What the operator keeps is bounded: stage locks, the version cache, the credentials
registry and the pooled HTTP clients (controller/context.py). Nothing is process-wide:
each is owned by an operator context or by one CLI run."""

from __future__ import annotations

import asyncio

import pytest

from idmsync.auth import CredentialsRegistry, Secret
from idmsync.controller.context import OperatorContext
from idmsync.controller.locks import StageLocks
from idmsync.controller.settings import OperatorSettings
from idmsync.engine import Flavour, ServerVersions, TlsOptions
from idmsync.errors import ServerUnreachable
from tests.harness.fake_kube import FakeKube

# --- stage locks -----------------------------------------------------------------------


async def test_a_stage_lock_lives_only_while_held_or_awaited() -> None:
    locks = StageLocks()
    entered = asyncio.Event()
    release = asyncio.Event()
    order: list[str] = []

    async def reset(name: str, stage_ids: list[str]) -> None:
        async with locks.hold("https://idm", stage_ids):
            order.append(name)
            entered.set()
            await release.wait()

    first = asyncio.create_task(reset("first", ["A", "B"]))
    await entered.wait()
    second = asyncio.create_task(reset("second", ["B", "C"]))
    await asyncio.sleep(0.01)
    assert locks.busy("https://idm", ["A", "B", "C", "D"]) == ["A", "B"]
    assert order == ["first"], "the second waits for B"
    assert len(locks) == 2, "A and B (held, B awaited too); C comes after B in order"
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert len(locks) == 0, "no holder, no waiter: no lock kept"
    assert locks.busy("https://idm", ["A", "B", "C"]) == []


async def test_a_cancelled_waiter_leaves_no_lock_behind() -> None:
    locks = StageLocks()
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("s", ["A"]):
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with locks.hold("s", ["A"]):
            raise AssertionError("never reached")

    task = asyncio.create_task(holder())
    await held.wait()
    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(locks) == 1
    release.set()
    await task
    assert len(locks) == 0


async def test_many_stages_over_time_keep_no_locks() -> None:
    locks = StageLocks()
    for n in range(1000):
        async with locks.hold(f"https://idm{n % 7}", [f"S{n}", f"T{n}"]):
            pass
    assert len(locks) == 0


# --- the version cache -----------------------------------------------------------------


async def test_the_version_cache_reads_once_per_server_and_forgets_the_least_recent() -> None:
    versions = ServerVersions(max_servers=2)
    reads: list[str] = []

    def reader(url: str, version: str) -> object:
        async def read() -> tuple[Flavour, str | None]:
            reads.append(url)
            await asyncio.sleep(0.01)
            return Flavour.IDM7, version

        return read

    answers = await asyncio.gather(
        *(versions.read_once("a", reader("a", "7.1.0")) for _ in range(10))  # type: ignore[arg-type]
    )
    assert answers == [(Flavour.IDM7, "7.1.0")] * 10
    assert reads == ["a"], "concurrent readers share one read"
    await versions.read_once("b", reader("b", "7.2.0"))  # type: ignore[arg-type]
    assert versions.get("a") is not None  # a is now the most recent
    await versions.read_once("c", reader("c", "7.3.0"))  # type: ignore[arg-type]
    assert len(versions) == 2
    assert versions.get("b") is None, "the least recently used is forgotten"
    assert versions.get("a") == (Flavour.IDM7, "7.1.0")
    await versions.read_once("b", reader("b", "7.2.1"))  # type: ignore[arg-type]
    assert reads == ["a", "b", "c", "b"], "a forgotten server is read again"
    assert len(versions._reading) == 0, "no read lock outlives its readers"


async def test_a_failed_version_read_is_not_remembered() -> None:
    versions = ServerVersions()
    calls = 0

    async def read() -> tuple[Flavour, str | None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ServerUnreachable("down")
        return Flavour.LEGACY, "6.5.0"

    with pytest.raises(ServerUnreachable):
        await versions.read_once("a", read)
    assert versions.get("a") is None
    assert await versions.read_once("a", read) == (Flavour.LEGACY, "6.5.0")
    assert calls == 2


# --- the credentials registry ----------------------------------------------------------


def test_the_registry_keeps_at_most_its_bound_least_recent_first() -> None:
    registry = CredentialsRegistry(max_flows=2)
    url = "https://am.example.com/am/oauth2/access_token"
    one = registry.client_credentials(url, "one", Secret("s1"))
    two = registry.client_credentials(url, "two", Secret("s2"))
    assert registry.client_credentials(url, "one", Secret("s1")) is one  # one: most recent
    registry.client_credentials(url, "three", Secret("s3"))
    assert len(registry) == 2
    assert registry.client_credentials(url, "one", Secret("s1")) is one
    assert registry.client_credentials(url, "two", Secret("s2")) is not two, "two was forgotten"
    assert len(registry) == 2


# --- pooled HTTP clients ---------------------------------------------------------------


async def test_clients_past_the_bound_are_closed_when_no_reset_uses_them() -> None:
    context = OperatorContext(settings=OperatorSettings(), kube=FakeKube(), max_clients=2)
    tls = TlsOptions()
    async with context.http_client("https://a", tls) as a:
        async with context.http_client("https://a", tls) as again:
            assert again is a, "one pooled client per server"
        async with context.http_client("https://b", tls) as b:
            async with context.http_client("https://c", tls) as c:
                assert len(context._clients) == 3, "all in use: none is closed under a reset"
            assert len(context._clients) == 2
            assert not a.is_closed, "a is still in use"
            assert not b.is_closed, "b is still in use"
            assert c.is_closed, "c, idle and least recently used, was closed"
    async with context.http_client("https://d", tls) as d:
        pass
    assert len(context._clients) == 2
    assert a.is_closed, "a was the least recently used"
    assert not b.is_closed
    assert not d.is_closed
    await context.close()
    assert b.is_closed
    assert d.is_closed
    assert context._clients == {}


async def test_the_context_owns_its_version_cache_and_registry() -> None:
    one = OperatorContext(settings=OperatorSettings(), kube=FakeKube())
    two = OperatorContext(settings=OperatorSettings(), kube=FakeKube())
    assert one.versions is not two.versions
    assert one.credentials is not two.credentials
    assert one.locks is not two.locks
