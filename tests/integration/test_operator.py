"""The operator end to end: real API server, real operator process, IDM stub."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.harness.controlplane import Kubectl
from tests.harness.operator_process import OperatorProcess
from tests.integration.conftest import (
    admin_secret,
    condition,
    events,
    get_reset,
    reset_manifest,
    secret_manifest,
    service_manifest,
    wait_for,
    wait_phase,
)
from tests.stub.fixtures import ADMIN_PASSWORD, LDAP_SOURCE, LDAP_STAGE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

pytestmark = pytest.mark.controlplane

BEARER = "bearer-Qm2x-never-print-me"


def service_spec(port: int | str = "http", **extra: object) -> dict[str, object]:
    return {
        "target": {"service": {"name": "idm", "port": port}},
        "auth": {"adminSecretRef": {"name": "idm-admin"}},
        "api": "IDM7",
        "stages": {"sources": [LDAP_SOURCE]},
        **extra,
    }


@pytest.fixture
def idm(stub: IdmStub, kubectl: Kubectl, shared_namespace: str) -> Iterator[IdmStub]:
    """The stub behind a Service named idm, with its admin Secret, in the test's namespace."""
    kubectl.apply(service_manifest("idm", shared_namespace, stub.port))
    kubectl.apply(admin_secret(shared_namespace))
    return stub


def assert_no_secret_anywhere(kubectl: Kubectl, namespace: str, *secrets: str) -> None:
    dumped = kubectl("get", "synctokenresets,events", "-n", namespace, "-o", "yaml").stdout
    for secret in secrets:
        assert secret not in dumped


class TestHappyPath:
    def test_service_target_resets_and_kubectl_wait_sees_ready(
        self, operator: OperatorProcess, idm: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(reset_manifest("ldap", shared_namespace, service_spec()))
        kubectl(
            "wait",
            "--for=condition=Ready",
            "--timeout=60s",
            "synctokenreset/ldap",
            "-n",
            shared_namespace,
        )
        body = get_reset(kubectl, shared_namespace, "ldap")
        status = body["status"]
        assert status["phase"] == "Succeeded"
        assert status["observedGeneration"] == body["metadata"]["generation"]
        assert status["startTime"] <= status["completionTime"]
        assert status["server"] == {
            "url": f"http://127.0.0.1:{idm.port}/openidm",
            "api": "IDM7",
            "version": "7.0.2",
        }
        (stage,) = status["stages"]
        assert stage["id"] == LDAP_STAGE
        assert stage["source"] == LDAP_SOURCE
        assert (stage["previousRev"], stage["previousToken"]) == ("1", 100)
        assert stage["result"] == "Deleted"
        assert stage["liveSync"] == {"triggered": True, "newToken": 105}
        assert status["target"] == f"service/idm:{idm.port}"
        assert status["stageSummary"] == LDAP_STAGE
        ready = condition(body, "Ready")
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("True", "Succeeded")
        assert condition(body, "Reconciling")["status"] == "False"  # type: ignore[index]
        assert condition(body, "Stalled")["status"] == "False"  # type: ignore[index]
        assert idm.steps() == [
            "GET info/version",
            f"GET {STAGE_PATH}",
            f"DELETE {STAGE_PATH}",
            f"POST {LDAP_SOURCE}",
            f"GET {STAGE_PATH}",
        ]
        reasons = {e["reason"] for e in events(kubectl, shared_namespace)}
        # the change (with what it replaced) and the outcome; every other step is in the log
        assert reasons == {"StageChanged", "Succeeded"}
        assert_no_secret_anywhere(kubectl, shared_namespace, ADMIN_PASSWORD)
        columns = kubectl("get", "tokenreset", "ldap", "-n", shared_namespace).stdout
        assert "Succeeded" in columns
        assert LDAP_STAGE in columns

    def test_metrics_and_health_endpoints_answer(
        self, operator: OperatorProcess, idm: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(reset_manifest("measured", shared_namespace, service_spec()))
        wait_phase(kubectl, shared_namespace, "measured", ("Succeeded",))
        url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        metrics = httpx.get(url).text
        assert 'idmsync_resets_total{reason="Succeeded",result="Succeeded"}' in metrics
        assert "idmsync_reset_duration_seconds_count" in metrics
        # the gauge is the shared operator's: another test's reset may still be retrying
        # (test_gitops_health leaves one against a stopped server); it drains to 0
        wait_for(lambda: "idmsync_resets_in_flight 0.0" in httpx.get(url).text, 120, "no reset")
        health = httpx.get(f"http://127.0.0.1:{operator.health_port}/healthz")
        assert health.status_code == 200
        assert health.json()["ready"] is True

    def test_url_target_with_a_bearer_token(
        self, operator: OperatorProcess, stub: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        stub.bearer_tokens.add(BEARER)
        kubectl.apply(secret_manifest("idm-token", shared_namespace, {"token": BEARER}))
        spec = {
            "target": {"url": stub.url},
            "auth": {"bearerTokenSecretRef": {"name": "idm-token"}},
            "stages": {"sources": [LDAP_SOURCE]},
        }
        kubectl.apply(reset_manifest("by-url", shared_namespace, spec))
        body = wait_phase(kubectl, shared_namespace, "by-url", ("Succeeded", "Failed"))
        assert body["status"]["phase"] == "Succeeded", body["status"]
        assert body["status"]["server"]["api"] == "IDM7", "Auto read info/version"
        assert all(r.header("Authorization") == f"Bearer {BEARER}" for r in stub.requests)
        assert_no_secret_anywhere(kubectl, shared_namespace, BEARER)
        assert BEARER not in operator.log()

    def test_dry_run_records_but_changes_nothing(
        self, operator: OperatorProcess, idm: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(reset_manifest("dry", shared_namespace, service_spec(dryRun=True)))
        body = wait_phase(kubectl, shared_namespace, "dry", ("Succeeded", "Failed"))
        (stage,) = body["status"]["stages"]
        assert (stage["result"], stage["previousToken"]) == ("WouldDelete", 100)
        assert {r.method for r in idm.requests} == {"GET"}


class TestOneShot:
    def test_reapplying_the_same_manifest_does_not_run_again_but_a_new_rerun_value_does(
        self, operator: OperatorProcess, idm: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        manifest = reset_manifest("once", shared_namespace, service_spec())
        kubectl.apply(manifest)
        wait_phase(kubectl, shared_namespace, "once", ("Succeeded",))
        assert len(idm.requests_to(STAGE_PATH, "DELETE")) == 1

        kubectl.apply(manifest)
        kubectl("label", "synctokenreset/once", "-n", shared_namespace, "touched=yes")
        first = get_reset(kubectl, shared_namespace, "once")["status"]
        wait_for(
            lambda: (
                "last-handled"
                in json.dumps(
                    get_reset(kubectl, shared_namespace, "once")["metadata"].get("annotations", {})
                )
            ),
            10,
        )
        assert len(idm.requests_to(STAGE_PATH, "DELETE")) == 1
        assert get_reset(kubectl, shared_namespace, "once")["status"] == first

        kubectl("annotate", "synctokenreset/once", "-n", shared_namespace, "idmsync.dev/rerun=2")
        wait_for(
            lambda: (
                get_reset(kubectl, shared_namespace, "once")["status"].get("rerun") == "2"
                and get_reset(kubectl, shared_namespace, "once")["status"]["phase"] == "Succeeded"
            ),
            60,
            "the rerun to finish",
        )
        assert len(idm.requests_to(STAGE_PATH, "DELETE")) == 2
        (stage,) = get_reset(kubectl, shared_namespace, "once")["status"]["stages"]
        assert stage["previousToken"] == 105, "the second run recorded the token the first left"

    def test_the_spec_is_immutable(
        self, operator: OperatorProcess, idm: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(reset_manifest("fixed", shared_namespace, service_spec()))
        changed = kubectl.apply(
            reset_manifest("fixed", shared_namespace, service_spec(dryRun=True)), check=False
        )
        assert changed.returncode != 0
        assert "spec is immutable" in changed.stderr


def failed(kubectl: Kubectl, namespace: str, name: str, reason: str) -> dict[str, object]:
    """Wait for Failed; assert Ready=False and Stalled=True carry ``reason``."""
    body = wait_phase(kubectl, namespace, name, ("Failed", "Succeeded"), timeout=90)
    assert body["status"]["phase"] == "Failed", body["status"]
    ready, stalled = condition(body, "Ready"), condition(body, "Stalled")
    assert ready is not None
    assert stalled is not None
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert ready["message"]
    assert any(e["reason"] == reason and e["type"] == "Warning" for e in events(kubectl, namespace))
    return body


class TestFailureReasons:
    """Every failure a user can cause ends with a clear reason on the resource."""

    def test_secret_not_found_is_retried_then_fails(
        self, operator: OperatorProcess, stub: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(service_manifest("idm", shared_namespace, stub.port))
        kubectl.apply(reset_manifest("nosecret", shared_namespace, service_spec()))
        wait_for(
            lambda: (
                (condition(get_reset(kubectl, shared_namespace, "nosecret"), "Ready") or {}).get(
                    "reason"
                )
                == "SecretNotFound"
            ),
            30,
            "Ready=SecretNotFound",
        )
        body = failed(kubectl, shared_namespace, "nosecret", "SecretNotFound")
        assert body["status"]["attempts"] == 4, "first try + IDMSYNC_RETRY_LIMIT=3 retries"
        assert stub.requests == []

    def test_a_secret_created_while_retrying_lets_the_reset_succeed(
        self, operator: OperatorProcess, stub: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(service_manifest("idm", shared_namespace, stub.port))
        kubectl.apply(reset_manifest("late", shared_namespace, service_spec()))
        wait_for(
            lambda: (
                (condition(get_reset(kubectl, shared_namespace, "late"), "Ready") or {}).get(
                    "reason"
                )
                == "SecretNotFound"
            ),
            30,
            "Ready=SecretNotFound",
        )
        kubectl.apply(admin_secret(shared_namespace))
        body = wait_phase(kubectl, shared_namespace, "late", ("Succeeded", "Failed"), 60)
        assert body["status"]["phase"] == "Succeeded"

    def test_secret_key_missing(
        self, operator: OperatorProcess, stub: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(service_manifest("idm", shared_namespace, stub.port))
        kubectl.apply(secret_manifest("idm-admin", shared_namespace, {"username": "x"}))
        kubectl.apply(reset_manifest("nokey", shared_namespace, service_spec()))
        body = failed(kubectl, shared_namespace, "nokey", "SecretKeyMissing")
        assert "password" in condition(body, "Ready")["message"]  # type: ignore[index]

    def test_service_not_found(
        self, operator: OperatorProcess, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(admin_secret(shared_namespace))
        kubectl.apply(reset_manifest("nosvc", shared_namespace, service_spec()))
        failed(kubectl, shared_namespace, "nosvc", "ServiceNotFound")

    def test_a_url_outside_the_allow_list_is_refused_at_once(
        self, operator: OperatorProcess, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(admin_secret(shared_namespace))
        spec = service_spec()
        spec["target"] = {"url": "https://idm.elsewhere.example"}
        kubectl.apply(reset_manifest("far", shared_namespace, spec))
        body = failed(kubectl, shared_namespace, "far", "TargetNotAllowed")
        assert body["status"]["attempts"] == 1, "not worth a retry"

    def test_plain_http_to_an_allowed_https_host_is_refused(
        self, operator: OperatorProcess, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(admin_secret(shared_namespace))
        spec = service_spec()
        spec["target"] = {"url": "http://idm.allowed.example"}
        kubectl.apply(reset_manifest("clear", shared_namespace, spec))
        body = failed(kubectl, shared_namespace, "clear", "TargetNotAllowed")
        assert "in clear" in condition(body, "Ready")["message"]  # type: ignore[index]

    def test_a_wrong_password_is_unauthorized(
        self, operator: OperatorProcess, stub: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(service_manifest("idm", shared_namespace, stub.port))
        kubectl.apply(admin_secret(shared_namespace, password="Wrong-Xy7-never-print-me"))
        kubectl.apply(reset_manifest("badpw", shared_namespace, service_spec()))
        failed(kubectl, shared_namespace, "badpw", "Unauthorized")
        # the informational info/version read, then the stage read: refused, not retried
        assert stub.steps() == ["GET info/version", f"GET {STAGE_PATH}"]
        assert_no_secret_anywhere(kubectl, shared_namespace, "Wrong-Xy7-never-print-me")
        assert "Wrong-Xy7-never-print-me" not in operator.log()

    def test_forbidden(
        self, operator: OperatorProcess, idm: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        idm.fail_next(99, 403)
        kubectl.apply(reset_manifest("nope", shared_namespace, service_spec()))
        failed(kubectl, shared_namespace, "nope", "Forbidden")

    def test_an_unreachable_server_is_retried_then_fails(
        self, operator: OperatorProcess, idm: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        idm.stop()
        kubectl.apply(reset_manifest("down", shared_namespace, service_spec()))
        wait_for(
            lambda: (
                (condition(get_reset(kubectl, shared_namespace, "down"), "Reconciling") or {}).get(
                    "reason"
                )
                == "ServerUnreachable"
            ),
            60,
            "retrying",
        )
        body = failed(kubectl, shared_namespace, "down", "ServerUnreachable")
        assert body["status"]["attempts"] == 4

    def test_verify_timeout(
        self, operator: OperatorProcess, idm: IdmStub, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        spec = service_spec(liveSync={"trigger": False, "verify": True, "timeoutSeconds": 1})
        kubectl.apply(reset_manifest("noverify", shared_namespace, spec))
        body = failed(kubectl, shared_namespace, "noverify", "VerifyTimeout")
        (stage,) = body["status"]["stages"]
        assert stage["result"] == "Deleted", "what was done stays recorded"
        assert stage["previousToken"] == 100

    def test_invalid_spec_for_what_cel_cannot_see(
        self, operator: OperatorProcess, kubectl: Kubectl, shared_namespace: str
    ) -> None:
        kubectl.apply(secret_manifest("tenant", shared_namespace, {"tenantUrl": "not a url"}))
        kubectl.apply(secret_manifest("idm-token", shared_namespace, {"token": BEARER}))
        spec = {
            "target": {"tenantSecretRef": {"name": "tenant"}},
            "auth": {"bearerTokenSecretRef": {"name": "idm-token"}},
            "stages": {"all": True},
        }
        kubectl.apply(reset_manifest("badtenant", shared_namespace, spec))
        body = failed(kubectl, shared_namespace, "badtenant", "InvalidSpec")
        assert "not a url" in condition(body, "Ready")["message"]  # type: ignore[index]
