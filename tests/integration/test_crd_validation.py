"""The SyncTokenReset CRD on a real kube-apiserver: OpenAPI + CEL rejections, defaults,
immutability, printer columns, the status subresource, the kustomize layout and RBAC."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from idmsync.controller.models import (
    GROUP,
    KIND,
    PLURAL,
    RERUN_ANNOTATION,
    VERSION,
    SyncTokenResetSpec,
    SyncTokenResetStatus,
)
from tests.harness.controlplane import ControlPlane, Kubectl

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
CRD_PATH = MANIFESTS / "crd" / "synctokenresets.idmsync.dev.yaml"
SAMPLES = MANIFESTS / "samples"
CRD_NAME = f"{PLURAL}.{GROUP}"
OPERATOR_NAMESPACE = "idmsync-system"
OPERATOR_ACCOUNT = "idmsync-operator"

VALID_SPEC: dict[str, Any] = {
    "target": {"service": {"name": "idm"}},
    "auth": {"adminSecretRef": {"name": "idm-admin"}},
    "stages": {"sources": ["system/ldap/account"]},
}

TARGET_MSG = "target: set exactly one of service, url, tenantSecretRef"
AUTH_MSG = (
    "auth: set exactly one of adminSecretRef, bearerTokenSecretRef, clientCredentials, "
    "serviceAccount"
)
URL_MSG = "url must be http(s)://host[:port] with no path, query, user-info or fragment"
PORT_MSG = "port must be a number 1-65535 or an IANA port name"
STAGES_MSG = "stages: name at least one of sources, ids, or all: true"
SEGMENT_MSG = "a source must not contain a '.' or '..' path segment"
CONTEXT_PATH_MSG = "contextPath must be one or more /segments of letters, digits, _ or -"
DNS_MSG = "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'"


def _eventually(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _resource(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, **metadata},
        "spec": spec,
    }


def _with(**changes: Any) -> dict[str, Any]:
    """VALID_SPEC with top-level keys replaced (None removes the key)."""
    spec = copy.deepcopy(VALID_SPEC)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def _service(**fields: Any) -> dict[str, Any]:
    return _with(target={"service": {"name": "idm", **fields}})


@pytest.fixture(scope="module")
def crd(kubectl: Kubectl) -> str:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    # Discovery (short names, categories) follows Established by a moment.
    assert _eventually(lambda: kubectl("get", "tokenreset", "-A", check=False).returncode == 0)
    return CRD_NAME


@pytest.fixture
def ns(crd: str, namespace: str) -> str:
    return namespace


# --------------------------------------------------------------------------- rejections

# (id, spec, message the API server must give, do the pydantic models reject it too?)
# The models re-check the same rules for the engine; where they do not (yet), the case
# says so: the API server is then the only guard.
INVALID: list[tuple[str, dict[str, Any], str, bool]] = [
    (
        "two-targets",
        _with(target={"service": {"name": "idm"}, "url": "https://idm.example.com"}),
        TARGET_MSG,
        True,
    ),
    ("empty-target", _with(target={}), TARGET_MSG, True),
    ("no-target", _with(target=None), "spec.target: Required value", True),
    (
        "all-three-targets",
        _with(
            target={
                "service": {"name": "idm"},
                "url": "https://idm.example.com",
                "tenantSecretRef": {"name": "aic"},
            }
        ),
        TARGET_MSG,
        True,
    ),
    (
        "two-auths",
        _with(
            auth={
                "adminSecretRef": {"name": "idm-admin"},
                "bearerTokenSecretRef": {"name": "idm-token"},
            }
        ),
        AUTH_MSG,
        True,
    ),
    ("empty-auth", _with(auth={}), AUTH_MSG, True),
    (
        "no-auth-without-tenant",
        _with(auth=None),
        "auth is required unless target.tenantSecretRef is set",
        True,
    ),
    (
        "token-without-set",
        _with(token={"value": 100}),
        "token is only allowed with action Set",
        True,
    ),
    (
        "token-with-delete",
        _with(action="Delete", token={"value": "abc"}),
        "token is only allowed with action Set",
        True,
    ),
    ("set-without-token", _with(action="Set"), "action Set needs a token", True),
    ("no-stages", _with(stages={}), STAGES_MSG, True),
    ("empty-stages", _with(stages={"sources": [], "ids": [], "all": False}), STAGES_MSG, True),
    ("stages-missing", _with(stages=None), "spec.stages: Required value", True),
    ("dotdot-source", _with(stages={"sources": ["system/../repo"]}), SEGMENT_MSG, True),
    ("dot-source", _with(stages={"sources": ["system/ldap/."]}), SEGMENT_MSG, True),
    (
        "source-not-system",
        _with(stages={"sources": ["repo/synchronisation/pooledSyncStage"]}),
        "a source must be system/<connector>/<type>",
        True,
    ),
    (
        "source-extra-segment",
        _with(stages={"sources": ["system/ldap/account/x"]}),
        "a source must be system/<connector>/<type>",
        True,
    ),
    (
        "bad-id",
        _with(stages={"ids": ["SYSTEM-LDAP"]}),
        "spec.stages.ids[0] in body should match '^[A-Za-z0-9_]{1,256}$'",
        True,
    ),
    (
        "too-many-ids",
        _with(stages={"ids": [f"ID{i}" for i in range(65)]}),
        "spec.stages.ids: Too many: 65: must have at most 64 items",
        True,
    ),
    ("url-with-path", _with(target={"url": "https://idm.example.com/openidm"}), URL_MSG, True),
    ("url-trailing-slash", _with(target={"url": "https://idm.example.com/"}), URL_MSG, True),
    ("url-user-info", _with(target={"url": "https://admin:pw@idm.example.com"}), URL_MSG, True),
    ("url-query", _with(target={"url": "https://idm.example.com?x=1"}), URL_MSG, True),
    ("url-fragment", _with(target={"url": "https://idm.example.com#x"}), URL_MSG, True),
    ("url-not-http", _with(target={"url": "ftp://idm.example.com"}), URL_MSG, True),
    (
        "url-port-out-of-range",
        _with(target={"url": "https://idm.example.com:99999"}),
        "the port in url must be 1-65535",
        True,  # the model's regex allows 5 digits; the engine's URL check (applied) does not
    ),
    (
        "bad-context-path",
        _with(target={"service": {"name": "idm"}, "contextPath": "openidm"}),
        CONTEXT_PATH_MSG,
        True,
    ),
    (
        "context-path-dotdot",
        _with(target={"service": {"name": "idm"}, "contextPath": "/openidm/../admin"}),
        CONTEXT_PATH_MSG,
        True,
    ),
    (
        "timeout-zero",
        _with(liveSync={"timeoutSeconds": 0}),
        "spec.liveSync.timeoutSeconds in body should be greater than or equal to 1",
        True,
    ),
    (
        "timeout-too-long",
        _with(liveSync={"timeoutSeconds": 3601}),
        "spec.liveSync.timeoutSeconds in body should be less than or equal to 3600",
        True,
    ),
    ("port-70000", _service(port=70000), PORT_MSG, True),
    ("port-zero", _service(port=0), PORT_MSG, True),
    ("port-name-upper-case", _service(port="HTTP"), PORT_MSG, True),
    ("port-name-too-long", _service(port="a-very-long-port-name"), PORT_MSG, True),
    ("port-name-digits-only", _service(port="8080"), PORT_MSG, True),
    (
        "scheme-ftp",
        _service(scheme="ftp"),
        'spec.target.service.scheme: Unsupported value: "ftp"',
        True,
    ),
    ("service-name-upper-case", _service(name="IDM"), DNS_MSG, True),
    (
        "service-name-too-long",
        _service(name="a" * 64),
        "spec.target.service.name: Too long: may not be more than 63 bytes",
        True,
    ),
    ("unknown-api", _with(api="IDM6"), 'spec.api: Unsupported value: "IDM6"', True),
    ("unknown-action", _with(action="Reset"), 'spec.action: Unsupported value: "Reset"', True),
    (
        "secret-key-with-slash",
        _with(auth={"adminSecretRef": {"name": "idm-admin", "usernameKey": "a/b"}}),
        "should match '^[-._a-zA-Z0-9]+$'",
        True,
    ),
    (
        "token-url-not-http",
        _with(auth={"clientCredentials": {"tokenUrl": "ftp://am", "secretRef": {"name": "c"}}}),
        "spec.auth.clientCredentials.tokenUrl in body should match",
        True,
    ),
    (
        "client-credentials-without-secret",
        _with(auth={"clientCredentials": {"tokenUrl": "https://am.example.com/token"}}),
        "spec.auth.clientCredentials.secretRef: Required value",
        True,
    ),
    (
        "unknown-auth-method",
        _with(
            auth={
                "clientCredentials": {
                    "tokenUrl": "https://am.example.com/token",
                    "secretRef": {"name": "c"},
                    "authMethod": "jwt",
                }
            }
        ),
        'Unsupported value: "jwt"',
        True,
    ),
    (
        "ca-secret-without-key",
        _with(tls={"caSecretRef": {"name": "idm-ca"}}),
        "spec.tls.caSecretRef.key: Required value",
        True,
    ),
    (
        "token-without-value",
        _with(action="Set", token={}),
        "spec.token.value: Required value",
        True,
    ),
    ("unknown-field", _with(bogus=True), 'unknown field "spec.bogus"', True),
    (
        "out-of-sync-without-check",
        _with(when="OutOfSync"),
        "when OutOfSync needs check",
        True,
    ),
    ("unknown-when", _with(when="Sometimes"), 'spec.when: Unsupported value: "Sometimes"', True),
    (
        "check-with-service-and-url",
        _with(check={"ldap": {"service": {"name": "ds"}, "url": "ldaps://ds.example.com"}}),
        "check.ldap: set exactly one of service, url",
        True,
    ),
    ("check-without-directory", _with(check={"ldap": {}}), "set exactly one of service", True),
    (
        "check-url-not-ldap",
        _with(check={"ldap": {"url": "https://ds.example.com"}}),
        "spec.check.ldap.url in body should match",
        True,
    ),
    (
        "check-interval-too-short",
        _with(check={"ldap": {"url": "ldaps://ds.example.com"}, "intervalSeconds": 5}),
        "spec.check.intervalSeconds: Invalid value: 5",
        True,
    ),
    (
        "reconcile-mapping-with-slash",
        _with(reconcile={"mapping": "a/b"}),
        "spec.reconcile.mapping in body should match",
        True,
    ),
]


@pytest.mark.parametrize(
    ("spec", "message", "models_reject"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_api_server_rejects_malformed_spec(
    kubectl: Kubectl, ns: str, spec: dict[str, Any], message: str, models_reject: bool
) -> None:
    result = kubectl.apply(yaml.safe_dump(_resource("malformed", spec)), namespace=ns, check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert message in result.stderr
    assert kubectl("get", PLURAL, "-n", ns, "-o", "name").stdout.strip() == ""
    if models_reject:
        with pytest.raises(ValidationError):
            SyncTokenResetSpec.model_validate(spec)


def test_at_least_fifteen_distinct_rejections() -> None:
    assert len(INVALID) >= 15
    assert len({message for _, _, message, _ in INVALID}) >= 15


# --------------------------------------------------------------------------- acceptance

VALID: list[tuple[str, dict[str, Any]]] = [
    ("minimal", VALID_SPEC),
    ("port-name", _service(port="http-api")),
    ("https-service", _service(port=8443, scheme="https")),
    ("url-with-port", _with(target={"url": "https://idm.example.com:8443"})),
    ("url-ipv6", _with(target={"url": "http://[fd00::1]:8080"})),
    ("url-ipv6-no-port", _with(target={"url": "http://[fd00::1]"})),
    ("tenant-without-auth", _with(target={"tenantSecretRef": {"name": "aic"}}, auth=None)),
    ("set-string-token", _with(action="Set", token={"value": "0000018c-0001"})),
    ("ids-and-all", _with(stages={"ids": ["SYSTEMLDAPACCOUNT"], "all": True})),
    (
        "client-credentials",
        _with(
            auth={
                "clientCredentials": {
                    "tokenUrl": "https://am.example.com/am/oauth2/access_token",
                    "secretRef": {"name": "idm-client"},
                    "authMethod": "basic",
                }
            }
        ),
    ),
    ("service-account", _with(auth={"serviceAccount": {"secretRef": {"name": "aic-sa"}}})),
    ("source-with-dots", _with(stages={"sources": ["system/ldap.v2/inet.org-person"]})),
]


@pytest.mark.parametrize("spec", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_api_server_accepts_and_defaults_like_the_models(
    kubectl: Kubectl, ns: str, spec: dict[str, Any]
) -> None:
    kubectl.apply(yaml.safe_dump(_resource("valid", spec)), namespace=ns)
    stored = kubectl.get_json(PLURAL, "valid", "-n", ns)["spec"]
    # The API server's defaults are the models' defaults, field for field.
    expected = SyncTokenResetSpec.model_validate(spec)
    assert stored == expected.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert SyncTokenResetSpec.model_validate(stored) == expected


def _sample_documents() -> list[tuple[str, Path]]:
    return [(path.stem, path) for path in sorted(SAMPLES.glob("*.yaml"))]


@pytest.mark.parametrize(
    "path", [p for _, p in _sample_documents()], ids=[n for n, _ in _sample_documents()]
)
def test_samples_are_accepted(kubectl: Kubectl, ns: str, path: Path) -> None:
    dry_run = kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(path))
    assert "(server dry run)" in dry_run.stdout
    kubectl("create", "-n", ns, "-f", str(path))
    for document in yaml.safe_load_all(path.read_text()):
        if document["kind"] != KIND:
            continue
        stored = kubectl.get_json(PLURAL, document["metadata"]["name"], "-n", ns)["spec"]
        expected = SyncTokenResetSpec.model_validate(document["spec"])
        assert stored == expected.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- immutability


def test_spec_is_immutable_but_rerun_annotation_and_reapply_are_not(
    kubectl: Kubectl, ns: str
) -> None:
    manifest = yaml.safe_dump(_resource("once", VALID_SPEC))
    kubectl.apply(manifest, namespace=ns)

    changed = kubectl(
        "patch",
        PLURAL,
        "once",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"dryRun":true}}',
        check=False,
    )
    assert changed.returncode != 0
    assert "spec is immutable" in changed.stderr
    assert RERUN_ANNOTATION in changed.stderr

    reapplied_changed = kubectl.apply(
        yaml.safe_dump(_resource("once", _with(stages={"ids": ["OTHER"]}))),
        namespace=ns,
        check=False,
    )
    assert reapplied_changed.returncode != 0
    assert "spec is immutable" in reapplied_changed.stderr

    # GitOps re-applying the same manifest, and a new rerun value, are fine.
    kubectl.apply(manifest, namespace=ns)
    kubectl("annotate", PLURAL, "once", "-n", ns, f"{RERUN_ANNOTATION}=2")
    stored = kubectl.get_json(PLURAL, "once", "-n", ns)
    assert stored["metadata"]["annotations"][RERUN_ANNOTATION] == "2"
    assert stored["metadata"]["generation"] == 1
    assert stored["spec"]["stages"]["sources"] == ["system/ldap/account"]


# --------------------------------------------------------------------------- get, columns


def _status_document() -> dict[str, Any]:
    status = SyncTokenResetStatus.model_validate(
        {
            "phase": "Succeeded",
            "observedGeneration": 1,
            "startTime": "2026-01-01T00:00:00Z",
            "completionTime": "2026-01-01T00:00:05Z",
            "target": "service/idm:8080",
            "stageSummary": "1/1",
            "server": {"url": "http://idm.ns.svc:8080/openidm", "api": "IDM7", "version": "7.3.0"},
            "stages": [
                {
                    "id": "SYSTEMLDAPACCOUNT",
                    "source": "system/ldap/account",
                    "step": "Done",
                    "previousRev": "000000001ade755f",
                    "previousToken": {"cookie": "abc", "changeNumber": 100},
                    "result": "Deleted",
                    "liveSync": {"triggered": True, "newToken": 105},
                }
            ],
            "attempts": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Succeeded",
                    "message": "1 stage reset",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2026-01-01T00:00:05Z",
                }
            ],
        }
    )
    # Nulls included on purpose: the operator may patch a whole model_dump().
    return status.model_dump(mode="json", by_alias=True)


def test_status_subresource_and_printer_columns(kubectl: Kubectl, ns: str) -> None:
    kubectl.apply(yaml.safe_dump(_resource("done", VALID_SPEC)), namespace=ns)
    header = kubectl("get", PLURAL, "-n", ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "TARGET", "STAGES", "READY", "AGE"]

    status = _status_document()
    kubectl(
        "patch",
        PLURAL,
        "done",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    stored = kubectl.get_json(PLURAL, "done", "-n", ns)
    assert SyncTokenResetStatus.model_validate(
        stored["status"]
    ) == SyncTokenResetStatus.model_validate(status)
    assert stored["status"]["stages"][0]["previousToken"] == {"cookie": "abc", "changeNumber": 100}
    assert stored["metadata"]["generation"] == 1  # status writes never bump generation

    for resource in (PLURAL, "tokenreset", "synctokenreset", f"{PLURAL}.{GROUP}", "idmsync"):
        lines = kubectl("get", resource, "-n", ns).stdout.splitlines()
        assert lines[0].split() == ["NAME", "PHASE", "TARGET", "STAGES", "READY", "AGE"], resource
        name, *columns = lines[1].split()
        assert name.split("/")[-1] == "done", resource  # a category prefixes the kind
        assert columns[:4] == ["Succeeded", "service/idm:8080", "1/1", "Succeeded"], resource

    kubectl("wait", "--for=condition=Ready", f"{PLURAL}/done", "-n", ns, "--timeout=10s")

    # A status written through the main resource is ignored; a spec change through the
    # status subresource is ignored as well.
    kubectl(
        "patch", PLURAL, "done", "-n", ns, "--type=merge", "-p", '{"status":{"phase":"Failed"}}'
    )
    assert kubectl.get_json(PLURAL, "done", "-n", ns)["status"]["phase"] == "Succeeded"
    kubectl(
        "patch",
        PLURAL,
        "done",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"spec":{"dryRun":true},"status":{"attempts":2}}',
    )
    after = kubectl.get_json(PLURAL, "done", "-n", ns)
    assert (after["spec"]["dryRun"], after["status"]["attempts"]) == (False, 2)


@pytest.mark.parametrize(
    "field",
    ["spec.liveSync", "spec.tls", "spec.tls.caSecretRef.key", "spec.auth.adminSecretRef.name"],
)
def test_kubectl_explain_describes_every_field(kubectl: Kubectl, crd: str, field: str) -> None:
    """As the API server publishes the schema: the field and its children are described
    (tests/unit/test_crd_matches_models.py walks the whole schema for a description)."""
    # the OpenAPI document follows Established by a moment
    assert _eventually(
        lambda: kubectl("explain", f"synctokenreset.{field}", check=False).returncode == 0
    )
    explained = kubectl("explain", f"synctokenreset.{field}").stdout
    assert "DESCRIPTION:" in explained, explained
    # the field's own description ("<empty>" when missing), then its children's
    assert "<empty>" not in explained, explained
    assert "<no description>" not in explained, explained


def test_status_replace_with_nulls_and_free_form_tokens(kubectl: Kubectl, ns: str) -> None:
    kubectl.apply(yaml.safe_dump(_resource("replaced", VALID_SPEC)), namespace=ns)
    current = kubectl.get_json(PLURAL, "replaced", "-n", ns)
    status = SyncTokenResetStatus.model_validate(
        {"phase": "Running", "stages": [{"id": "SYSTEMLDAPACCOUNT", "previousToken": "opaque"}]}
    )
    current["status"] = status.model_dump(mode="json", by_alias=True)
    assert current["status"]["stages"][0]["liveSync"]["newToken"] is None
    kubectl("replace", "--subresource=status", "-f", "-", stdin=json.dumps(current))
    stored = kubectl.get_json(PLURAL, "replaced", "-n", ns)["status"]
    assert stored["phase"] == "Running"
    assert stored["stages"][0]["previousToken"] == "opaque"
    assert SyncTokenResetStatus.model_validate(stored) == status

    bad = kubectl(
        "patch",
        PLURAL,
        "replaced",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Done"}}',
        check=False,
    )
    assert bad.returncode != 0
    assert 'status.phase: Unsupported value: "Done"' in bad.stderr


# --------------------------------------------------------------------------- kustomize, RBAC


def _ensure_namespace(kubectl: Kubectl, name: str) -> None:
    if kubectl("get", "namespace", name, check=False).returncode != 0:
        kubectl("create", "namespace", name)


def test_kustomize_layout_applies_with_server_dry_run(kubectl: Kubectl, crd: str) -> None:
    _ensure_namespace(kubectl, OPERATOR_NAMESPACE)
    result = kubectl("apply", "-k", str(MANIFESTS), "--dry-run=server")
    applied = {line.split()[0] for line in result.stdout.splitlines()}
    assert {
        f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME}",
        "customresourcedefinition.apiextensions.k8s.io/clusterkopfpeerings.kopf.dev",
        "customresourcedefinition.apiextensions.k8s.io/kopfpeerings.kopf.dev",
        f"serviceaccount/{OPERATOR_ACCOUNT}",
        f"clusterrole.rbac.authorization.k8s.io/{OPERATOR_ACCOUNT}",
        f"clusterrolebinding.rbac.authorization.k8s.io/{OPERATOR_ACCOUNT}",
        f"deployment.apps/{OPERATOR_ACCOUNT}",
    } <= applied
    # Server-side apply too (what GitOps tools use).
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(MANIFESTS), "--dry-run=server")


@pytest.fixture(scope="module")
def operator_kubectl(control_plane: ControlPlane, kubectl: Kubectl, crd: str) -> Kubectl:
    """kubectl as the operator's ServiceAccount, bound only by manifests/rbac."""
    _ensure_namespace(kubectl, OPERATOR_NAMESPACE)
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(MANIFESTS / "peering"))
    for peering in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        kubectl("wait", "--for=condition=Established", f"crd/{peering}", "--timeout=60s")
    kubectl("apply", "-k", str(MANIFESTS / "rbac"))
    path = control_plane.service_account_kubeconfig(
        OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, create=False
    )
    operator = kubectl.with_kubeconfig(path)
    assert _eventually(
        lambda: (
            operator("auth", "can-i", "get", "secrets", "-n", "default", check=False).stdout.strip()
            == "yes"
        )
    ), "the ClusterRoleBinding never took effect"
    return operator


ALLOWED = [
    ("get", "secrets", ""),
    ("get", "services", ""),
    ("get", f"{PLURAL}.{GROUP}", ""),
    ("list", f"{PLURAL}.{GROUP}", ""),
    ("watch", f"{PLURAL}.{GROUP}", ""),
    ("patch", f"{PLURAL}.{GROUP}", ""),
    ("patch", f"{PLURAL}.{GROUP}", "status"),
    ("update", f"{PLURAL}.{GROUP}", "status"),
    ("create", "events", ""),
    ("patch", "events", ""),
    ("create", "events.events.k8s.io", ""),
    ("list", "namespaces", ""),
    ("watch", "namespaces", ""),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("patch", "clusterkopfpeerings.kopf.dev", ""),
    ("create", "clusterkopfpeerings.kopf.dev", ""),
]
DENIED = [
    ("list", "secrets", ""),
    ("watch", "secrets", ""),
    ("create", "secrets", ""),
    ("update", "secrets", ""),
    ("delete", f"{PLURAL}.{GROUP}", ""),
    ("create", f"{PLURAL}.{GROUP}", ""),
    ("update", f"{PLURAL}.{GROUP}", ""),
    ("list", "services", ""),
    ("create", "pods", ""),
    ("delete", "events", ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("delete", "namespaces", ""),
    ("create", "clusterroles.rbac.authorization.k8s.io", ""),
]


def _can_i(operator: Kubectl, verb: str, resource: str, subresource: str) -> str:
    args = ["auth", "can-i", verb, resource, "-n", "some-namespace"]
    if subresource:
        args.append(f"--subresource={subresource}")
    return operator(*args, check=False).stdout.strip()


@pytest.mark.parametrize(
    ("verb", "resource", "subresource"),
    ALLOWED,
    ids=[f"{v}-{r}{'/' + s if s else ''}" for v, r, s in ALLOWED],
)
def test_operator_account_may(
    operator_kubectl: Kubectl, verb: str, resource: str, subresource: str
) -> None:
    assert _can_i(operator_kubectl, verb, resource, subresource) == "yes"


@pytest.mark.parametrize(
    ("verb", "resource", "subresource"),
    DENIED,
    ids=[f"{v}-{r}{'/' + s if s else ''}" for v, r, s in DENIED],
)
def test_operator_account_may_not(
    operator_kubectl: Kubectl, verb: str, resource: str, subresource: str
) -> None:
    assert _can_i(operator_kubectl, verb, resource, subresource) == "no"


def test_operator_reads_a_secret_by_name_but_cannot_enumerate(
    kubectl: Kubectl, operator_kubectl: Kubectl, ns: str
) -> None:
    kubectl("create", "secret", "generic", "idm-admin", "-n", ns, "--from-literal=username=a")
    secret = operator_kubectl.get_json("secret", "idm-admin", "-n", ns)
    assert secret["data"]["username"]
    listed = operator_kubectl("get", "secrets", "-n", ns, check=False)
    assert listed.returncode != 0
    assert "Forbidden" in listed.stderr

    kubectl.apply(yaml.safe_dump(_resource("by-operator", VALID_SPEC)), namespace=ns)
    operator_kubectl(
        "patch",
        PLURAL,
        "by-operator",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Running"}}',
    )
    deleted = operator_kubectl("delete", PLURAL, "by-operator", "-n", ns, check=False)
    assert deleted.returncode != 0
    assert "Forbidden" in deleted.stderr
