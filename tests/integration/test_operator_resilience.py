"""Operator restarts and SIGKILLs at step boundaries never repeat a destructive call.

Each test runs its own operator process on its own namespace, so it can kill it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.operator_process import OperatorProcess
from tests.integration.conftest import (
    admin_secret,
    get_reset,
    reset_manifest,
    secret_manifest,
    service_manifest,
    wait_for,
    wait_phase,
)
from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER, LDAP_SOURCE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

pytestmark = pytest.mark.controlplane

SPEC = {
    "target": {"service": {"name": "idm", "port": "http"}},
    "auth": {"adminSecretRef": {"name": "idm-admin"}},
    "api": "IDM7",
    "stages": {"sources": [LDAP_SOURCE]},
}


class Own:
    """A namespace with the stub behind Service idm, and an operator that only watches it."""

    def __init__(self, control_plane: ControlPlane, stub: IdmStub, log: Path) -> None:
        self.kubectl = control_plane.kubectl
        self.namespace = f"own-{secrets.token_hex(4)}"
        self.kubectl("create", "namespace", self.namespace)
        self.kubectl.apply(service_manifest("idm", self.namespace, stub.port))
        self.kubectl.apply(admin_secret(self.namespace))
        self.control_plane = control_plane
        self.log = log
        self.processes: list[OperatorProcess] = []

    def start_operator(self) -> OperatorProcess:
        process = OperatorProcess(
            self.control_plane.kubeconfig, self.log, namespaces=self.namespace
        ).start()
        self.processes.append(process)
        return process

    def get(self, name: str) -> dict[str, object]:
        return get_reset(self.kubectl, self.namespace, name)

    def step(self, name: str) -> str | None:
        stages = self.get(name).get("status", {}).get("stages") or []  # type: ignore[attr-defined]
        return stages[0]["step"] if stages else None


@pytest.fixture
def own(control_plane: ControlPlane, crd: None, stub: IdmStub, tmp_path: Path) -> Iterator[Own]:
    harness = Own(control_plane, stub, tmp_path / "operator.log")
    yield harness
    for process in harness.processes:
        process.stop()
    for process in harness.processes:
        assert ADMIN_PASSWORD not in process.log()


def livesync_now(stub: IdmStub) -> None:
    """What IDM's scheduler would do while the operator is down."""
    httpx.post(
        f"{stub.url}/openidm/{LDAP_SOURCE}?_action=liveSync",
        headers={"X-OpenIDM-Username": ADMIN_USER, "X-OpenIDM-Password": ADMIN_PASSWORD},
    ).raise_for_status()


def test_an_operator_restart_leaves_completed_resets_alone(own: Own, stub: IdmStub) -> None:
    first = own.start_operator()
    own.kubectl.apply(reset_manifest("done", own.namespace, SPEC))
    wait_phase(own.kubectl, own.namespace, "done", ("Succeeded",))
    before = own.get("done")["status"]
    first.stop()
    count = len(stub.requests)

    own.start_operator()
    wait_for(lambda: own.log.read_text().count("idmsync operator started") == 2, 30)
    # give the new operator its resume pass: it reads the resource, then must do nothing
    wait_for(lambda: "already Succeeded" in own.log.read_text(), 30, "the resume pass")
    assert len(stub.requests) == count
    assert own.get("done")["status"] == before


def test_sigkill_after_the_delete_and_before_it_was_recorded_does_not_delete_again(
    own: Own, stub: IdmStub
) -> None:
    # the DELETE is carried out, then its answer held back: the operator dies in between
    stub.delay_after_next(1, 30.0, method="DELETE")
    operator = own.start_operator()
    own.kubectl.apply(reset_manifest("killed", own.namespace, SPEC))
    wait_for(lambda: stub.requests_to(STAGE_PATH, "DELETE"), 30, "the DELETE")
    assert own.step("killed") == "Recorded", "the intent was persisted before the delete"
    operator.kill()
    livesync_now(stub)  # the schedule recreates the stage (rev starts over) at token 105

    own.start_operator()
    body = wait_phase(own.kubectl, own.namespace, "killed", ("Succeeded", "Failed"))
    assert body["status"]["phase"] == "Succeeded"  # type: ignore[index]
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1, "the recreated stage was spared"
    (stage,) = body["status"]["stages"]  # type: ignore[index]
    assert (stage["previousRev"], stage["previousToken"], stage["result"]) == ("1", 100, "Deleted")


def test_sigkill_during_livesync_resumes_at_the_trigger(own: Own, stub: IdmStub) -> None:
    stub.delay_next(1, 30.0, method="POST", path=LDAP_SOURCE)
    operator = own.start_operator()
    own.kubectl.apply(reset_manifest("mid", own.namespace, SPEC))
    wait_for(lambda: stub.requests_to(LDAP_SOURCE, "POST"), 30, "the liveSync trigger")
    assert own.step("mid") == "Changed"
    operator.kill()

    own.start_operator()
    body = wait_phase(own.kubectl, own.namespace, "mid", ("Succeeded", "Failed"))
    assert body["status"]["phase"] == "Succeeded"  # type: ignore[index]
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1
    assert len(stub.requests_to(LDAP_SOURCE, "POST")) == 2


def test_recorded_intent_with_the_stage_untouched_deletes_exactly_once(
    own: Own, stub: IdmStub
) -> None:
    """The instant between persisting the intent and sending the DELETE, replayed exactly."""
    own.kubectl.apply(reset_manifest("intent", own.namespace, SPEC))
    own.kubectl(
        "patch",
        "synctokenreset/intent",
        "-n",
        own.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z", "rerun": "",'
        ' "attempts": 1, "stages": [{"id": "SYSTEMLDAPACCOUNT", "source": "system/ldap/account",'
        ' "step": "Recorded", "previousRev": "1", "previousToken": 100}]}}',
    )
    own.start_operator()
    body = wait_phase(own.kubectl, own.namespace, "intent", ("Succeeded", "Failed"))
    assert body["status"]["phase"] == "Succeeded"  # type: ignore[index]
    deletes = stub.requests_to(STAGE_PATH, "DELETE")
    assert [d.header("If-Match") for d in deletes] == ["1"]
    assert body["status"]["startTime"] == "2026-01-01T00:00:00Z", "resumed, not restarted"  # type: ignore[index]


def test_a_lost_delete_answer_with_the_stage_recreated_at_rev_1_deletes_once(
    own: Own, stub: IdmStub
) -> None:
    """The DELETE is carried out, liveSync recreates the stage (rev "1" again), the answer is
    lost: the operator reads back instead of resending If-Match "1" onto the new stage."""
    stub.drop_after_next(1, method="DELETE", then=lambda: stub.livesync(LDAP_SOURCE))
    own.start_operator()
    own.kubectl.apply(reset_manifest("lost", own.namespace, SPEC))
    body = wait_phase(own.kubectl, own.namespace, "lost", ("Succeeded", "Failed"))
    status = body["status"]
    assert status["phase"] == "Succeeded", status  # type: ignore[index]
    assert status["attempts"] == 1  # type: ignore[index]
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1
    (stage,) = status["stages"]  # type: ignore[index]
    assert (stage["previousRev"], stage["previousToken"], stage["result"]) == ("1", 100, "Deleted")
    assert "answer was lost" in stage["message"]
    assert stub.stage("SYSTEMLDAPACCOUNT") is not None, "the recreated stage survived"


def test_a_delete_dropped_before_it_was_carried_out_is_retried_by_the_next_try(
    own: Own, stub: IdmStub
) -> None:
    stub.drop_next(1, method="DELETE")
    own.start_operator()
    own.kubectl.apply(reset_manifest("dropped", own.namespace, SPEC))
    body = wait_phase(own.kubectl, own.namespace, "dropped", ("Succeeded", "Failed"))
    assert body["status"]["phase"] == "Succeeded"  # type: ignore[index]
    assert body["status"]["attempts"] == 2, "one try per DELETE: one budget"  # type: ignore[index]
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 2


def test_an_unreadable_status_is_stalled_and_nothing_is_sent(own: Own, stub: IdmStub) -> None:
    """A status the CRD admits but resume cannot trust (Recorded without the rev it needs)."""
    own.kubectl.apply(reset_manifest("unreadable", own.namespace, SPEC))
    own.kubectl(
        "patch",
        "synctokenreset/unreadable",
        "-n",
        own.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",'
        ' "stages": [{"id": "SYSTEMLDAPACCOUNT", "step": "Recorded", "previousToken": 100}]}}',
    )
    own.start_operator()

    def stalled() -> dict[str, object] | None:
        body = own.get("unreadable")
        conditions = body.get("status", {}).get("conditions") or []  # type: ignore[attr-defined]
        found = [c for c in conditions if c["type"] == "Stalled" and c["status"] == "True"]
        return body if found else None

    body = wait_for(stalled, 60, "Stalled")
    (condition,) = [c for c in body["status"]["conditions"] if c["type"] == "Stalled"]
    assert condition["reason"] == "InvalidStatus"
    assert body["status"]["phase"] == "Running", "the record is left as it was"
    assert stub.requests == []
    reasons = own.kubectl(
        "get", "events", "-n", own.namespace, "-o", "jsonpath={.items[*].reason}"
    ).stdout.split()
    assert "InvalidStatus" in reasons


def test_two_resets_of_the_same_stage_never_overlap(own: Own, stub: IdmStub) -> None:
    tokens = {"a": "token-a-never-print-me", "b": "token-b-never-print-me"}
    stub.bearer_tokens.update(tokens.values())
    for who, token in tokens.items():
        own.kubectl.apply(secret_manifest(f"token-{who}", own.namespace, {"token": token}))
    stub.delay_next(2, 1.0, method="POST", path=LDAP_SOURCE)
    own.start_operator()
    for who in tokens:
        spec = {**SPEC, "auth": {"bearerTokenSecretRef": {"name": f"token-{who}"}}}
        own.kubectl.apply(reset_manifest(f"reset-{who}", own.namespace, spec))
    for who in tokens:
        body = wait_phase(own.kubectl, own.namespace, f"reset-{who}", ("Succeeded", "Failed"))
        assert body["status"]["phase"] == "Succeeded"  # type: ignore[index]
    order = [
        next(w for w, t in tokens.items() if r.header("Authorization") == f"Bearer {t}")
        for r in stub.requests
        if "pooledSyncStage" in r.path or LDAP_SOURCE in r.path
    ]
    first = order[0]
    switch = order.index("b" if first == "a" else "a")
    assert set(order[switch:]) == {order[switch]}, f"interleaved: {order}"
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 2


def test_two_replicas_in_one_peering_never_both_act(
    own: Own, stub: IdmStub, tmp_path: Path
) -> None:
    root = Path(__file__).resolve().parents[2]
    own.kubectl("apply", "-k", str(root / "manifests/peering"))
    own.kubectl("create", "namespace", "idmsync-system", check=False)
    own.kubectl("apply", "-k", str(root / "manifests/rbac"))
    # as the manifests' ServiceAccount: its role must let a replica create the peering
    kubeconfig = own.control_plane.service_account_kubeconfig(
        "idmsync-system", "idmsync-operator", create=False
    )
    own.kubectl(
        "wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=30s"
    )
    logs = [tmp_path / "replica-a.log", tmp_path / "replica-b.log"]
    replicas = [
        OperatorProcess(
            kubeconfig,
            log,
            namespaces=own.namespace,
            settings={"IDMSYNC_PEERING": "idmsync"},
        ).start()
        for log in logs
    ]
    own.processes.extend(replicas)

    def active(log: Path) -> bool:
        """Each replica starts paused (mandatory peering); its last word says where it is."""
        text = log.read_text()
        return text.rfind("Resuming operations") > text.rfind("Pausing operations")

    def settled() -> bool:
        peers = own.kubectl.get_json("clusterkopfpeering", "idmsync").get("status") or {}
        return len(peers) == 2 and sum(active(log) for log in logs) == 1

    wait_for(settled, 60, "one active replica and one standing by")
    own.kubectl.apply(reset_manifest("peered", own.namespace, SPEC))
    body = wait_phase(own.kubectl, own.namespace, "peered", ("Succeeded", "Failed"))
    assert body["status"]["phase"] == "Succeeded"  # type: ignore[index]
    acted = [log for log in logs if f"{own.namespace}/peered:" in log.read_text()]
    assert len(acted) == 1, "exactly one replica handled the resource"
    assert [log for log in logs if active(log)] == acted, "the active one, not the standby"
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1
