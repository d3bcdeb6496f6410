"""The operator with OAuth: an Identity Cloud tenant Secret, and client credentials (AM)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.harness.controlplane import Kubectl
from tests.harness.operator_process import OperatorProcess
from tests.integration.conftest import (
    condition,
    get_reset,
    reset_manifest,
    secret_manifest,
    wait_phase,
)
from tests.stub.fixtures import LDAP_SOURCE
from tests.stub.idm_stub import IdmStub
from tests.stub.token_endpoint import TokenEndpoint, new_rsa_key, private_jwk

pytestmark = pytest.mark.controlplane

CLIENT_SECRET = "client-Secret-Pz4-never-print-me"


@pytest.fixture
def am(stub: IdmStub) -> Iterator[TokenEndpoint]:
    with TokenEndpoint(idm=stub) as endpoint:
        yield endpoint


def client_credentials_spec(url: str, token_url: str) -> dict[str, object]:
    return {
        "target": {"url": url},
        "auth": {
            "clientCredentials": {"tokenUrl": token_url, "secretRef": {"name": "idm-provisioning"}}
        },
        "stages": {"sources": [LDAP_SOURCE]},
    }


def client_secret(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        secret_manifest(
            "idm-provisioning",
            namespace,
            {"clientId": "idm-provisioning", "clientSecret": CLIENT_SECRET},
        )
    )


def assert_nothing_leaked(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, *secrets: str
) -> None:
    dumped = kubectl("get", "synctokenresets,events", "-n", namespace, "-o", "yaml").stdout
    log = operator.log()
    for secret in secrets:
        assert secret not in dumped
        assert secret not in log


def test_a_tenant_secret_alone_resets_an_identity_cloud_stage(
    operator: OperatorProcess,
    stub: IdmStub,
    am: TokenEndpoint,
    kubectl: Kubectl,
    shared_namespace: str,
) -> None:
    key = new_rsa_key()
    jwk = private_jwk(key, kid="sa-key")
    am.add_service_account("sa-0001", key.public_key())
    kubectl.apply(
        secret_manifest(
            "aic-tenant",
            shared_namespace,
            {
                "tenantUrl": stub.url,
                "tokenUrl": am.token_url(),
                "serviceAccountId": "sa-0001",
                "privateJwk": jwk,
            },
        )
    )
    spec = {
        "target": {"tenantSecretRef": {"name": "aic-tenant"}},
        "stages": {"sources": [LDAP_SOURCE]},
    }
    kubectl.apply(reset_manifest("tenant", shared_namespace, spec))
    body = wait_phase(kubectl, shared_namespace, "tenant", ("Succeeded", "Failed"))
    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert body["status"]["server"]["api"] == "IdentityCloud"
    assert am.token_requests == 1
    assert {r.header("Accept-API-Version") for r in stub.requests} == {"resource=1.0"}
    assert all((r.header("Authorization") or "").startswith("Bearer ") for r in stub.requests)
    private_d = json.loads(jwk)["d"]
    assert_nothing_leaked(
        kubectl, shared_namespace, operator, private_d, *[t.value for t in am.issued]
    )


def test_client_credentials_reset_idm_behind_am(
    operator: OperatorProcess,
    stub: IdmStub,
    am: TokenEndpoint,
    kubectl: Kubectl,
    shared_namespace: str,
) -> None:
    am.add_client("idm-provisioning", CLIENT_SECRET)
    client_secret(kubectl, shared_namespace)
    spec = client_credentials_spec(stub.url, am.token_url("/am/oauth2/realms/root/access_token"))
    kubectl.apply(reset_manifest("behind-am", shared_namespace, spec))
    body = wait_phase(kubectl, shared_namespace, "behind-am", ("Succeeded", "Failed"))
    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert am.token_requests == 1
    assert_nothing_leaked(
        kubectl, shared_namespace, operator, CLIENT_SECRET, *[t.value for t in am.issued]
    )


def test_a_refused_client_is_unauthorized_with_the_endpoints_description(
    operator: OperatorProcess,
    stub: IdmStub,
    am: TokenEndpoint,
    kubectl: Kubectl,
    shared_namespace: str,
) -> None:
    am.add_client("idm-provisioning", "the-real-secret")
    client_secret(kubectl, shared_namespace)
    spec = client_credentials_spec(stub.url, am.token_url("/am/oauth2/realms/root/access_token"))
    kubectl.apply(reset_manifest("refused", shared_namespace, spec))
    body = wait_phase(kubectl, shared_namespace, "refused", ("Succeeded", "Failed"))
    ready = condition(body, "Ready")
    assert ready is not None
    assert (body["status"]["phase"], ready["reason"]) == ("Failed", "Unauthorized")
    assert stub.requests == [], "IDM never saw a request"
    assert_nothing_leaked(kubectl, shared_namespace, operator, CLIENT_SECRET)
    assert get_reset(kubectl, shared_namespace, "refused")["status"]["attempts"] == 1


def test_a_token_endpoint_outside_the_allow_list_is_refused(
    operator: OperatorProcess, stub: IdmStub, kubectl: Kubectl, shared_namespace: str
) -> None:
    client_secret(kubectl, shared_namespace)
    spec = client_credentials_spec(stub.url, "https://am.elsewhere.example/am/oauth2/access_token")
    kubectl.apply(reset_manifest("far-am", shared_namespace, spec))
    body = wait_phase(kubectl, shared_namespace, "far-am", ("Succeeded", "Failed"))
    assert condition(body, "Ready")["reason"] == "TargetNotAllowed"  # type: ignore[index]
