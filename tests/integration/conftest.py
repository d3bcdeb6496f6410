"""Fixtures for operator tests: the CRD installed, a running operator, an IDM stub per test."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import ControlPlane, Kubectl
from tests.harness.operator_process import OperatorProcess
from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests" / "crd" / "synctokenresets.idmsync.dev.yaml"
SHARED_PREFIX = "shared-"


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(CRD))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/synctokenresets.idmsync.dev",
    )


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane, crd: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for the session, watching namespaces named shared-*.

    It authenticates as the manifests' ServiceAccount, bound only to the manifests'
    ClusterRole: every operator test also proves that role is enough.
    """
    kubectl = control_plane.kubectl
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(
        operator_kubeconfig(control_plane),
        log,
        namespaces=f"{SHARED_PREFIX}*",
        settings={"IDMSYNC_ALLOWED_TARGETS": "http://127.0.0.1:*,https://*.allowed.example"},
    ).start()
    # kopf finds namespaces by watching them: prove that watch is live before any test
    # creates one (a namespace made while kopf starts up can otherwise go unnoticed)
    for _attempt in range(6):
        sentinel = f"{SHARED_PREFIX}sentinel-{secrets.token_hex(3)}"
        kubectl("create", "namespace", sentinel)
        deadline = time.monotonic() + 10
        seen = f"synctokenresets.v1alpha1.idmsync.dev in '{sentinel}'"
        while seen not in process.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        if seen in process.log():
            break
    else:
        raise RuntimeError(f"the operator watches no new namespace:\n{process.log()[-3000:]}")
    yield process
    process.stop()
    assert ADMIN_PASSWORD not in process.log(), "a secret reached the operator's log"


def operator_kubeconfig(control_plane: ControlPlane) -> Path:
    """The manifests' RBAC applied (namespace idmsync-system, ServiceAccount idmsync-operator
    and its ClusterRole); returns a kubeconfig authenticating as that ServiceAccount."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "idmsync-system"}}
    control_plane.kubectl.apply(yaml.safe_dump(namespace))
    control_plane.kubectl("apply", "-k", str(ROOT / "manifests" / "rbac"))
    return control_plane.service_account_kubeconfig(
        "idmsync-system", "idmsync-operator", create=False
    )


@pytest.fixture
def shared_namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> str:
    name = f"{SHARED_PREFIX}{request.node.name[:30].lower().replace('_', '-').strip('-')}"
    name = f"{name.rstrip('-')}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    return name


def secret_manifest(name: str, namespace: str, data: dict[str, str]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
    )


def service_manifest(name: str, namespace: str, port: int, port_name: str = "http") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": port_name, "port": port}], "selector": {"app": name}},
        }
    )


def admin_secret(namespace: str, password: str = ADMIN_PASSWORD) -> str:
    return secret_manifest("idm-admin", namespace, {"username": ADMIN_USER, "password": password})


def reset_manifest(name: str, namespace: str, spec: dict[str, Any], **meta: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "idmsync.dev/v1alpha1",
            "kind": "SyncTokenReset",
            "metadata": {"name": name, "namespace": namespace, **meta},
            "spec": spec,
        }
    )


def get_reset(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = kubectl.get_json("synctokenreset", name, "-n", namespace)
    return body


def condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for item in body.get("status", {}).get("conditions", []):
        if item["type"] == type_:
            return dict(item)
    return None


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def wait_phase(
    kubectl: Kubectl, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 60.0
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = get_reset(kubectl, namespace, name)
        return body if body.get("status", {}).get("phase") in phases else None

    result: dict[str, Any] = wait_for(check, timeout, f"{name} to reach {phases}")
    return result


def events(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    )["items"]
    return items


class Resets:
    """SyncTokenResets read in-process (no kubectl per poll): for tests that poll a lot."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        from kubernetes import client, config

        self.api = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))
        self.namespace = namespace

    def get(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.api.get_namespaced_custom_object(
            "idmsync.dev", "v1alpha1", self.namespace, "synctokenresets", name
        )
        return body

    def all(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api.list_namespaced_custom_object(
            "idmsync.dev", "v1alpha1", self.namespace, "synctokenresets"
        )["items"]
        return items

    def wait_phase(
        self, name: str, phases: tuple[str, ...] = ("Succeeded", "Failed"), timeout: float = 120
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            body = self.get(name)
            return body if body.get("status", {}).get("phase") in phases else None

        found: dict[str, Any] = wait_for(check, timeout, f"{name} to reach {phases}")
        return found
