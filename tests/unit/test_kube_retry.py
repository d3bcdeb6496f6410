"""The controller's Kubernetes calls ride out a blip (controller/kube_retry.py), and a longer
outage fails the try without losing what the status recorded: reconcile against the stub and
the fake Kubernetes, whose status patches fail before or after they are stored.

The same against the real API server (restarted, or behind a proxy that fails status
patches) is tests/integration/test_controlplane_faults.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from idmsync.controller.context import OperatorContext
from idmsync.controller.kube_retry import RetryingKube, is_transient
from idmsync.controller.reconcile import reconcile
from idmsync.controller.settings import OperatorSettings
from idmsync.errors import KubernetesUnavailable, SecretNotFound
from tests.harness.fake_kube import FakeKube
from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER, LDAP_SOURCE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

NAMESPACE, NAME = "identity", "ldap"
SPEC = {
    "target": {"service": {"name": "idm", "port": "http"}},
    "auth": {"adminSecretRef": {"name": "idm-admin"}},
    "api": "IDM7",
    "stages": {"sources": [LDAP_SOURCE]},
}
TRIES = 3  # per call: the first and two retries


class Status(Exception):
    """What a Kubernetes client raises for an HTTP status (it carries ``status``)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"({status}) injected")
        self.status = status


def step(name: str) -> Any:
    """A predicate: the patch records the stage at ``name``."""
    return lambda patch: any(s.get("step") == name for s in patch.get("stages") or [])


class Operator:
    def __init__(self, stub: IdmStub) -> None:
        self.fake = FakeKube()
        self.fake.add_service(NAMESPACE, "idm", stub.port)
        self.fake.add_secret(
            NAMESPACE, "idm-admin", {"username": ADMIN_USER, "password": ADMIN_PASSWORD}
        )
        settings = OperatorSettings(
            retry_limit=3, http_attempts=2, http_backoff=0.01,
            service_url_template="{scheme}://127.0.0.1:{port}",
        )  # fmt: skip
        kube = RetryingKube(self.fake, delays=(0.0,) * (TRIES - 1))
        self.context = OperatorContext(settings=settings, kube=kube)

    async def drive(self) -> list[str]:
        """Call reconcile as kopf would, until it settles; what each call ended with."""
        ends: list[str] = []
        for _ in range(10):
            try:
                outcome = await reconcile(self.context, NAMESPACE, NAME, lambda *_: None)
            except KubernetesUnavailable:  # the handler turns it into a kopf retry
                ends.append("KubernetesUnavailable")
                continue
            ends.append(outcome.message if outcome.retry_in is None else "retry")
            if outcome.retry_in is None:
                return ends
        raise AssertionError(f"never settled: {ends}")

    @property
    def status(self) -> dict[str, Any]:
        return self.fake.status(NAMESPACE, NAME)


@pytest.fixture
async def operator(stub: IdmStub) -> AsyncIterator[Operator]:
    harness = Operator(stub)
    harness.fake.add_reset(NAMESPACE, NAME, SPEC)
    yield harness
    await harness.context.close()


def test_what_is_transient() -> None:
    assert [is_transient(Status(code)) for code in (409, 429, 500, 503, 504)] == [True] * 5
    assert [is_transient(Status(code)) for code in (400, 403, 404, 422)] == [False] * 4
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError())
    assert not is_transient(SecretNotFound("Secret identity/x not found"))
    assert not is_transient(ValueError("a bug"))


@pytest.mark.parametrize("applied", [False, True], ids=["refused", "stored-then-failed"])
@pytest.mark.parametrize("at", ["Recorded", "Changed"], ids=["before-delete", "after-delete"])
@pytest.mark.parametrize("error", [409, 503, "refused"])
async def test_a_status_patch_failing_briefly_is_retried_within_the_try(
    operator: Operator, stub: IdmStub, at: str, applied: bool, error: int | str
) -> None:
    fail = (lambda: ConnectionRefusedError()) if error == "refused" else (lambda: Status(error))  # type: ignore[arg-type]
    operator.fake.fail_patches(TRIES - 1, fail, when=step(at), applied=applied)
    ends = await operator.drive()
    assert operator.status["phase"] == "Succeeded", ends
    assert operator.status["attempts"] == 1, "absorbed: the try did not fail"
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1


async def test_a_longer_outage_before_the_delete_fails_the_try_before_the_delete(
    operator: Operator, stub: IdmStub
) -> None:
    operator.fake.fail_patches(TRIES, lambda: Status(503), when=step("Recorded"))
    ends = await operator.drive()
    assert ends[0] == "retry", "the try failed, its failure written"
    assert operator.status["phase"] == "Succeeded"
    assert operator.status["attempts"] == 2
    deletes = stub.requests_to(STAGE_PATH, "DELETE")
    assert len(deletes) == 1, "no DELETE went out while its intent was not recorded"


async def test_a_longer_outage_after_the_delete_loses_nothing(
    operator: Operator, stub: IdmStub
) -> None:
    # every write after the DELETE fails, the failure's own write too: reconcile gives up
    # (the handler retries later), and the status still says Recorded
    operator.fake.fail_patches(2 * TRIES, lambda: ConnectionResetError(), when=step("Changed"))
    ends = await operator.drive()
    assert ends[0] == "KubernetesUnavailable"
    assert operator.status["phase"] == "Succeeded", ends
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1, "read back, not repeated"
    (stage,) = operator.status["stages"]
    assert (stage["previousRev"], stage["previousToken"], stage["result"]) == ("1", 100, "Deleted")
    assert "by an earlier run" in stage["message"]


async def test_a_refusal_is_not_retried() -> None:
    calls: list[str] = []

    class Inner(FakeKube):
        async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
            calls.append(name)
            return await super().read_secret(namespace, name)

    with pytest.raises(SecretNotFound):
        await RetryingKube(Inner(), delays=(0.0, 0.0)).read_secret(NAMESPACE, "missing")
    assert calls == ["missing"]


async def test_a_persistent_failure_names_the_call_and_the_last_error() -> None:
    fake = FakeKube()
    fake.add_reset(NAMESPACE, NAME, SPEC)
    fake.fail_patches(99, lambda: Status(503))
    with pytest.raises(KubernetesUnavailable, match=r"writing the status of identity/ldap: .*"
                       r"failed 3 times in a row; last: Status: \(503\) injected"):  # fmt: skip
        await RetryingKube(fake, delays=(0.0, 0.0)).patch_status(NAMESPACE, NAME, {})
