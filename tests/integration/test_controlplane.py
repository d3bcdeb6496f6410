"""The test control plane is a real Kubernetes API server: CEL, subresources, RBAC, watches."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config, watch

from tests.harness.controlplane import ControlPlane, Kubectl, pinned_versions

# a self-test of the harness (`make harness-check`), not of idmsync
pytestmark = [pytest.mark.controlplane, pytest.mark.harness]


def _eventually(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll until condition() holds: RBAC and CRD changes reach the server's caches async."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _install_widget_crd(kubectl: Kubectl) -> tuple[str, str]:
    """A namespaced CRD with a CEL rule and a status subresource; returns (plural, group)."""
    group = f"t{secrets.token_hex(4)}.test.idmsync.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["replicas", "maxReplicas"],
                                    "properties": {
                                        "replicas": {"type": "integer"},
                                        "maxReplicas": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.replicas <= self.maxReplicas",
                                            "message": "replicas must not exceed maxReplicas",
                                        }
                                    ],
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    kubectl.apply(yaml.safe_dump(crd))
    kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=30s")
    return "widgets", group


def _widget(group: str, name: str, replicas: int, max_replicas: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "maxReplicas": max_replicas},
        }
    )


def test_crd_cel_rule_rejects_invalid_object_with_its_message(
    kubectl: Kubectl, namespace: str
) -> None:
    _, group = _install_widget_crd(kubectl)

    kubectl.apply(_widget(group, "fits", 2, 3), namespace=namespace)
    rejected = kubectl.apply(_widget(group, "too-many", 5, 3), namespace=namespace, check=False)

    assert rejected.returncode != 0
    assert "replicas must not exceed maxReplicas" in rejected.stderr
    names = kubectl("get", f"widgets.{group}", "-n", namespace, "-o", "name").stdout.split()
    assert names == [f"widget.{group}/fits"]


def test_status_subresource_is_separate_from_the_main_resource(
    kubectl: Kubectl, namespace: str
) -> None:
    plural, group = _install_widget_crd(kubectl)
    resource = f"{plural}.{group}/w1"
    kubectl.apply(_widget(group, "w1", 1, 3), namespace=namespace)

    kubectl(
        "patch", resource, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "Ready"}, "spec": {"replicas": 2}}),
    )  # fmt: skip
    after_status_patch = kubectl.get_json(resource, "-n", namespace)
    kubectl(
        "patch", resource, "-n", namespace, "--type=merge",
        "-p", json.dumps({"status": {"phase": "Overwritten"}, "spec": {"replicas": 3}}),
    )  # fmt: skip
    after_main_patch = kubectl.get_json(resource, "-n", namespace)

    assert after_status_patch["status"] == {"phase": "Ready"}
    assert after_status_patch["spec"]["replicas"] == 1  # spec ignored on /status
    assert after_main_patch["spec"]["replicas"] == 3
    assert after_main_patch["status"] == {"phase": "Ready"}  # status ignored on the main resource


def test_rbac_bare_service_account_gains_secret_access_only_through_a_binding(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    sa_kubeconfig = control_plane.service_account_kubeconfig(namespace, "bare")
    as_sa = kubectl.with_kubeconfig(sa_kubeconfig)
    impersonated = f"--as=system:serviceaccount:{namespace}:bare"

    def can_get_secrets() -> str:
        return kubectl(
            "auth", "can-i", "get", "secrets", "-n", namespace, impersonated, check=False
        ).stdout.strip()

    assert can_get_secrets() == "no"
    denied = as_sa("get", "secrets", "-n", namespace, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert as_sa("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout == (
        f"system:serviceaccount:{namespace}:bare"
    )

    kubectl("create", "role", "secret-reader", "-n", namespace, "--verb=get,list",
            "--resource=secrets")  # fmt: skip
    control_plane.bind("role/secret-reader", service_account=f"{namespace}:bare",
                       namespace=namespace)  # fmt: skip

    assert _eventually(lambda: can_get_secrets() == "yes")
    assert as_sa("get", "secrets", "-n", namespace).returncode == 0
    other = f"{namespace}-other"
    kubectl("create", "namespace", other)
    assert as_sa("get", "secrets", "-n", other, check=False).returncode != 0


def test_user_certificate_kubeconfig_has_only_bound_roles(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    user = f"operator-{secrets.token_hex(3)}"
    as_user = kubectl.with_kubeconfig(control_plane.user_kubeconfig(user, groups=["idmsync"]))

    def can(verb: str, resource: str, in_namespace: str = namespace) -> str:
        return as_user(
            "auth", "can-i", verb, resource, "-n", in_namespace, check=False
        ).stdout.strip()

    assert can("list", "configmaps") == "no"
    # Not the built-in `view`: it is an aggregated role, and aggregation is done by
    # kube-controller-manager, which this control plane does not run (`view` has no rules).
    configmap_reader = f"configmap-reader-{user}"
    kubectl("create", "clusterrole", configmap_reader, "--verb=get,list", "--resource=configmaps")
    control_plane.bind(f"clusterrole/{configmap_reader}", user=user, namespace=namespace)

    assert _eventually(lambda: can("list", "configmaps") == "yes")
    assert can("create", "configmaps") == "no"
    assert can("list", "configmaps", in_namespace="default") == "no"


def test_watch_receives_an_added_event(kubeconfig: Path, namespace: str) -> None:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    api = client.CoreV1Api(api_client)
    listing = api.list_namespaced_config_map(namespace)
    assert listing.metadata is not None
    api.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"))
    )

    events = watch.Watch().stream(  # type: ignore[no-untyped-call]
        api.list_namespaced_config_map,
        namespace,
        resource_version=listing.metadata.resource_version,
        timeout_seconds=20,
    )
    first = next(event for event in events if event["object"].metadata.name == "watched")

    assert first["type"] == "ADDED"


def test_servers_report_the_pinned_versions(control_plane: ControlPlane, kubectl: Kubectl) -> None:
    pinned = pinned_versions()
    via_kubectl = json.loads(kubectl("get", "--raw", "/version").stdout)

    assert via_kubectl["gitVersion"] == pinned["KUBE_VERSION"]
    assert via_kubectl["major"] == "1"
    assert via_kubectl["minor"] == pinned["KUBE_VERSION"].split(".")[1]
    assert control_plane.etcd_version()["etcdserver"] == pinned["ETCD_VERSION"].removeprefix("v")


def test_pinned_helm_installs_a_chart(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-probe\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )

    control_plane.helm(
        "install", "rel", str(chart), "-n", namespace, "--set", "greeting=hello", "--wait"
    )

    configmap = kubectl.get_json("configmap", "rel-probe", "-n", namespace)
    assert configmap["data"] == {"greeting": "hello"}
    releases = json.loads(control_plane.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("rel", "deployed")]
    version = control_plane.helm("version", "--short").stdout
    assert version.startswith(pinned_versions()["HELM_VERSION"])
