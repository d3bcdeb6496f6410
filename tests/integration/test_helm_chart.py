"""The Helm chart: lints, renders in both RBAC modes, grants what manifests/rbac grants, and
what it renders is accepted by a real kube-apiserver."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import Binaries, ControlPlane, Kubectl

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "idmsync"
MANIFESTS = REPO / "manifests"

Triple = tuple[str, str, str]

#: Rules only a cluster-wide operator needs.
CLUSTER_ONLY: set[Triple] = {
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("kopf.dev", "clusterkopfpeerings", "get"),
    ("kopf.dev", "clusterkopfpeerings", "list"),
    ("kopf.dev", "clusterkopfpeerings", "watch"),
    ("kopf.dev", "clusterkopfpeerings", "patch"),
    ("kopf.dev", "clusterkopfpeerings", "create"),
}


@pytest.fixture(scope="module")
def helm() -> Path:
    path = Binaries.locate().helm
    if not os.access(path, os.X_OK):
        pytest.fail(f"helm not built: {path}. Run `make tools`.", pytrace=False)
    return path


@pytest.fixture(scope="module")
def chart_crds(kubectl: Kubectl) -> None:
    """The chart's crds/ installed, as `helm install` would."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for crd in ("synctokenresets.idmsync.dev", "kopfpeerings.kopf.dev"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


def _helm(helm: Path, *args: str) -> str:
    completed = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    return completed.stdout


def _render(helm: Path, release: str, namespace: str, *sets: str) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for value in sets:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(_helm(helm, *args)) if d]


def _triples(rules: list[dict[str, Any]]) -> set[Triple]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def _manifest_rules() -> set[Triple]:
    role = yaml.safe_load((MANIFESTS / "rbac" / "cluster-role.yaml").read_text())
    return _triples(role["rules"])


def _container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = _of_kind(documents, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["name"]) == ("v2", "idmsync")
    assert (chart["version"], chart["appVersion"]) == ("0.1.0", "0.1.0")


@pytest.mark.parametrize(
    "sets",
    [(), ("watchNamespaces={team-a,team-b}", "allowedTargets={idm.example.com}")],
    ids=["defaults", "namespaced"],
)
def test_helm_lint_strict(helm: Path, sets: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for value in sets:
        args += ["--set", value]
    assert "0 chart(s) failed" in _helm(helm, *args)


def test_cluster_mode_grants_exactly_what_the_manifests_grant(helm: Path) -> None:
    documents = _render(helm, "idmsync", "idmsync-system")
    assert not _of_kind(documents, "Role")
    (role,) = _of_kind(documents, "ClusterRole")
    assert _triples(role["rules"]) == _manifest_rules()
    (binding,) = _of_kind(documents, "ClusterRoleBinding")
    (account,) = _of_kind(documents, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": "idmsync-system",
        }
    ]


def test_namespaced_mode_uses_a_role_per_namespace(helm: Path) -> None:
    documents = _render(helm, "idmsync", "idmsync-system", "watchNamespaces={team-a,team-b}")
    roles = _of_kind(documents, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert _triples(role["rules"]) == _manifest_rules() - CLUSTER_ONLY
    (cluster_role,) = _of_kind(documents, "ClusterRole")
    assert _triples(cluster_role["rules"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        *{
            ("kopf.dev", "clusterkopfpeerings", v)
            for v in ("get", "list", "watch", "patch", "create")
        },
    }
    bindings = _of_kind(documents, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert _env(_container(documents))["IDMSYNC_NAMESPACES"] == "team-a,team-b"


def test_deployment_matches_the_manifests_deployment(helm: Path) -> None:
    documents = _render(helm, "idmsync", "idmsync-system", "allowedTargets={a.example.com,*.corp}")
    container = _container(documents)
    manifest = yaml.safe_load((MANIFESTS / "operator" / "deployment.yaml").read_text())
    (expected,) = manifest["spec"]["template"]["spec"]["containers"]
    for key in ("image", "args", "ports", "livenessProbe", "readinessProbe", "securityContext"):
        assert container[key] == expected[key], key
    assert container["resources"] == expected["resources"]
    env = _env(container)
    assert set(env) == {item["name"] for item in expected["env"]}
    assert env["IDMSYNC_ALLOWED_TARGETS"] == "a.example.com,*.corp"
    assert env["IDMSYNC_NAMESPACES"] == ""
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    (deployment,) = _of_kind(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (service,) = _of_kind(documents, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_rendered_chart_is_accepted_by_the_api_server(
    helm: Path, kubectl: Kubectl, chart_crds: None, namespace: str
) -> None:
    for sets in [(), (f"watchNamespaces={{{namespace}}}",)]:
        rendered = yaml.safe_dump_all(_render(helm, "dry", namespace, *sets))
        result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
        assert "deployment.apps/dry-idmsync created (server dry run)" in result.stdout


def test_namespaced_rbac_reaches_only_the_watched_namespace(
    helm: Path, control_plane: ControlPlane, kubectl: Kubectl, chart_crds: None, namespace: str
) -> None:
    watched = namespace
    other = f"{namespace[:50]}-other"
    kubectl("create", "namespace", other)
    documents = _render(helm, f"r{namespace[-6:]}", namespace, f"watchNamespaces={{{watched}}}")
    rbac = [d for d in documents if d["kind"] not in {"Deployment", "Service"}]
    kubectl.apply(yaml.safe_dump_all(rbac))
    (account,) = _of_kind(documents, "ServiceAccount")
    operator = kubectl.with_kubeconfig(
        control_plane.service_account_kubeconfig(
            namespace, account["metadata"]["name"], create=False
        )
    )

    def can_i(verb: str, resource: str, where: str | None) -> str:
        scope = ["-n", where] if where else []
        return operator("auth", "can-i", verb, resource, *scope, check=False).stdout.strip()

    deadline = time.monotonic() + 15
    while can_i("get", "secrets", watched) != "yes" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert can_i("get", "secrets", watched) == "yes"
    assert can_i("patch", "synctokenresets.idmsync.dev", watched) == "yes"
    assert can_i("get", "secrets", other) == "no"
    assert can_i("list", "secrets", watched) == "no"
    assert can_i("patch", "synctokenresets.idmsync.dev", other) == "no"
    assert can_i("list", "namespaces", None) == "no"
