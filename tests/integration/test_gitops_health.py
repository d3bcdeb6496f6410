"""Argo CD's and Flux's verdicts on live SyncTokenResets, in every phase.

Objects are read back from the real API server while the real operator works on them (or,
for the states the operator leaves only for an instant, with a status it wrote carried over
to an object in a namespace it does not watch), then judged by our health.lua in gopher-lua
as Argo CD runs it, by kstatus, and by Flux with our healthCheckExprs
(tests/harness/health.py).

Set IDMSYNC_HEALTH_CAPTURE=<dir> to also write each captured object there as YAML (how the
testdata beside health.lua was made).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import Kubectl
from tests.harness.health import HealthTool, Judgement, Verdict
from tests.harness.operator_process import OperatorProcess
from tests.integration.conftest import (
    admin_secret,
    condition,
    get_reset,
    reset_manifest,
    service_manifest,
    wait_for,
    wait_phase,
)
from tests.stub.fixtures import LDAP_SOURCE, LDAP_STAGE
from tests.stub.idm_stub import IdmStub

pytestmark = pytest.mark.controlplane

HOLD = "test.idmsync.dev/hold"


def spec() -> dict[str, object]:
    return {
        "target": {"service": {"name": "idm", "port": "http"}},
        "auth": {"adminSecretRef": {"name": "idm-admin"}},
        "api": "IDM7",
        "stages": {"sources": [LDAP_SOURCE]},
    }


def judged(tool: HealthTool, body: dict[str, Any], phase: str) -> Judgement:
    capture = os.environ.get("IDMSYNC_HEALTH_CAPTURE")
    if capture:
        kept = json.loads(json.dumps(body))
        kept["metadata"].pop("managedFields", None)
        Path(capture).mkdir(parents=True, exist_ok=True)
        (Path(capture) / f"{phase}.yaml").write_text(yaml.safe_dump(kept, sort_keys=False))
    (judgement,) = tool.judge(body)
    assert judgement.argocd == judgement.argocd_builtin, "the libraries Argo CD opens matter"
    return judgement


@dataclass
class Live:
    """The session's operator watching ``namespace``, where Service ``idm`` leads to the stub
    and Secret ``idm-admin`` holds its credentials."""

    tool: HealthTool
    kubectl: Kubectl
    namespace: str
    stub: IdmStub

    def create(self, name: str) -> None:
        self.kubectl.apply(reset_manifest(name, self.namespace, spec()))

    def get(self, name: str) -> dict[str, Any]:
        return get_reset(self.kubectl, self.namespace, name)

    def wait(self, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        return wait_phase(self.kubectl, self.namespace, name, phases, timeout)

    def succeeded(self, name: str) -> dict[str, Any]:
        self.create(name)
        body = self.wait(name, "Succeeded", "Failed")
        assert body["status"]["phase"] == "Succeeded", body["status"]
        return body


@pytest.fixture
def live(
    health_tool: HealthTool,
    operator: OperatorProcess,
    stub: IdmStub,
    kubectl: Kubectl,
    shared_namespace: str,
) -> Live:
    kubectl.apply(service_manifest("idm", shared_namespace, stub.port))
    kubectl.apply(admin_secret(shared_namespace))
    return Live(health_tool, kubectl, shared_namespace, stub)


def merge_patch(
    kubectl: Kubectl, namespace: str, name: str, patch: dict[str, Any], *subresource: str
) -> None:
    where = ["synctokenreset", name, "-n", namespace, *subresource]
    kubectl("patch", *where, "--type=merge", "-p", json.dumps(patch))


def unwatched_copy(
    kubectl: Kubectl, namespace: str, name: str, status: dict[str, Any], **meta: Any
) -> dict[str, Any]:
    """An object no operator watches, carrying a status the operator wrote elsewhere."""
    kubectl.apply(reset_manifest(name, namespace, spec(), **meta))
    merge_patch(kubectl, namespace, name, {"status": status}, "--subresource=status")
    return get_reset(kubectl, namespace, name)


def test_created_but_not_yet_seen_by_an_operator(
    health_tool: HealthTool, kubectl: Kubectl, crd: None, namespace: str
) -> None:
    kubectl.apply(reset_manifest("pending", namespace, spec()))
    body = get_reset(kubectl, namespace, "pending")
    assert "status" not in body
    judgement = judged(health_tool, body, "pending")
    assert judgement.argocd == Verdict("Progressing", "waiting for the operator to start the reset")
    # kstatus has nothing to go on without a status and calls it Current: documented in
    # docs/gitops.md with the Flux healthCheckExprs that closes the gap
    assert judgement.kstatus.status == "Current"
    # with our healthCheckExprs Flux cannot evaluate yet (Unknown) and keeps waiting
    assert judgement.flux == "error: InProgress: no such attribute(s): status.phase"


def test_running(live: Live) -> None:
    live.stub.delay_next(1, 6, method="POST", path=LDAP_SOURCE)  # liveSync answers slowly
    live.create("running")
    body = wait_for(
        lambda: (
            found
            if (found := live.get("running")).get("status", {}).get("phase") == "Running"
            and found["status"]["stages"]
            else None
        ),
        30,
        "phase Running with a stage recorded",
    )
    judgement = judged(live.tool, body, "running")
    assert judgement.argocd == Verdict("Progressing", "Running: resetting sync tokens")
    assert judgement.kstatus == Verdict("InProgress", "resetting sync tokens")
    assert judgement.flux == "InProgress"
    live.wait("running", "Succeeded")


def test_retrying_after_a_temporary_failure(live: Live) -> None:
    live.stub.stop()
    live.create("retrying")

    def retrying() -> dict[str, Any] | None:
        body = live.get("retrying")
        reconciling = condition(body, "Reconciling") or {}
        return body if reconciling.get("reason") == "ServerUnreachable" else None

    body = wait_for(retrying, 60, "Reconciling=ServerUnreachable")
    assert body["status"]["phase"] == "Running"
    judgement = judged(live.tool, body, "retrying")
    ready, reconciling = condition(body, "Ready"), condition(body, "Reconciling")
    assert ready is not None
    assert reconciling is not None
    assert judgement.argocd == Verdict(
        "Progressing",
        f"retrying after ServerUnreachable: {ready['message']} ({reconciling['message']})",
    )
    assert judgement.kstatus == Verdict("InProgress", reconciling["message"])
    assert judgement.flux == "InProgress"


def test_succeeded(live: Live) -> None:
    judgement = judged(live.tool, live.succeeded("succeeded"), "succeeded")
    assert judgement.argocd == Verdict("Healthy", f"Succeeded: {LDAP_STAGE}: Deleted")
    assert judgement.kstatus.status == "Current"
    assert judgement.flux == "Current"


def test_failed_for_good(live: Live) -> None:
    live.kubectl.apply(admin_secret(live.namespace, password="Wrong-Pw4-never-print-me"))
    live.create("failed")
    body = live.wait("failed", "Failed", "Succeeded", timeout=90)
    assert body["status"]["phase"] == "Failed"
    judgement = judged(live.tool, body, "failed")
    assert judgement.argocd.status == "Degraded"
    assert judgement.argocd.message.startswith("Unauthorized: ")
    stalled = condition(body, "Stalled")
    assert stalled is not None
    assert judgement.kstatus == Verdict("Failed", stalled["message"])
    assert judgement.flux == "Failed"


def test_being_deleted(live: Live) -> None:
    live.succeeded("deleting")
    merge_patch(live.kubectl, live.namespace, "deleting", {"metadata": {"finalizers": [HOLD]}})
    live.kubectl("delete", "synctokenreset", "deleting", "-n", live.namespace, "--wait=false")
    body = live.get("deleting")
    assert body["metadata"].get("deletionTimestamp")
    judgement = judged(live.tool, body, "deleting")
    assert judgement.argocd == Verdict("Progressing", "being deleted")
    assert judgement.kstatus.status == "Terminating"
    assert judgement.flux == "InProgress", "deletion bumps metadata.generation"
    merge_patch(live.kubectl, live.namespace, "deleting", {"metadata": {"finalizers": None}})


def test_a_rerun_not_yet_started_and_a_lagging_generation(live: Live, namespace: str) -> None:
    status = live.succeeded("done")["status"]

    rerun = unwatched_copy(
        live.kubectl, namespace, "rerun", status, annotations={"idmsync.dev/rerun": "2"}
    )
    judgement = judged(live.tool, rerun, "rerun-requested")
    assert judgement.argocd == Verdict(
        "Progressing", "rerun 2 requested; waiting for the operator to start it"
    )
    assert judgement.kstatus.status == "Current", "kstatus cannot see a rerun request"
    assert judgement.flux == "InProgress"

    lagging = unwatched_copy(
        live.kubectl, namespace, "lagging", {**status, "observedGeneration": 0}
    )
    assert lagging["metadata"]["generation"] == 1
    judgement = judged(live.tool, lagging, "generation-lag")
    assert judgement.argocd == Verdict(
        "Progressing", "waiting for the operator to observe generation 1"
    )
    assert judgement.kstatus.status == "InProgress"
    assert judgement.flux == "InProgress"
