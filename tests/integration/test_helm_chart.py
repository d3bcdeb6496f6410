"""The Helm chart: lints, renders in both RBAC modes, grants what manifests/rbac grants, and
what it renders is accepted by a real kube-apiserver."""

from __future__ import annotations

import json
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


def _refused(helm: Path, *args: str) -> str:
    completed = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode != 0, f"helm accepted {args}:\n{completed.stdout[:2000]}"
    return completed.stderr + completed.stdout


#: Values a platform team could get wrong, and how the schema answers.
BAD_VALUES = {
    "replicas=two": "at '/replicas': got string, want integer",
    "replikas=2": "additional properties 'replikas' not allowed",
    "image.tagg=1.0": "at '/image': additional properties 'tagg' not allowed",
    "image.pullPolicy=Sometimes": "at '/image/pullPolicy': value must be one of",
    "image.digest=latest": "at '/image/digest': 'latest' does not match pattern",
    "metrics.port=70000": "at '/metrics/port': maximum",
    "metrics.service.enabled=yes": "at '/metrics/service/enabled': got string, want boolean",
    "logFormat=xml": "at '/logFormat': value must be one of 'text', 'json'",
    "watchNamespaces=team-a": "at '/watchNamespaces': got string, want array",
    "watchNamespaces={Team_A}": "at '/watchNamespaces/0': 'Team_A' does not match pattern",
    "allowedTargets={idm.example.com/path}": "at '/allowedTargets/0'",
    "networkPolicy.enabled=true,networkPolicy.apiServer.cidrs={10.0.0.1}": (
        "at '/networkPolicy/apiServer/cidrs/0'"
    ),
    "serviceMonitor.interval=often": "at '/serviceMonitor/interval'",
    "podDisruptionBudget.maxUnavailable=1": "additional properties 'maxUnavailable' not allowed",
    "nodeSelector.disk=1": "at '/nodeSelector/disk': got number, want string",
}


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


@pytest.mark.parametrize("value", sorted(BAD_VALUES))
def test_values_schema_rejects_wrong_types_and_unknown_keys(helm: Path, value: str) -> None:
    for command in (["template", "x"], ["lint", "--strict"]):
        error = _refused(helm, *command, str(CHART), "--set", value)
        assert BAD_VALUES[value] in error, error
        assert "values don't meet the specifications of the schema" in error


def test_values_yaml_itself_is_what_the_schema_describes() -> None:
    """Every default is in the schema (and the reverse): no key the schema forgot to forbid."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], value: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        properties = node.get("properties")
        if properties is None:
            return
        assert node.get("additionalProperties") is False, f"{path}: open to unknown keys"
        assert set(value) <= set(properties), f"{path}: {set(value) - set(properties)}"
        for key, child in value.items():
            if isinstance(child, dict):
                walk(properties[key], child, f"{path}.{key}")

    walk(schema, values, "values")
    assert set(values) == set(schema["properties"]) - {"global"}


def test_pod_disruption_budget_only_with_standby_replicas(helm: Path) -> None:
    assert not _of_kind(_render(helm, "idmsync", "idmsync-system"), "PodDisruptionBudget")
    documents = _render(helm, "idmsync", "idmsync-system", "replicas=2")
    (budget,) = _of_kind(documents, "PodDisruptionBudget")
    (deployment,) = _of_kind(documents, "Deployment")
    assert budget["spec"]["minAvailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_network_policy_allows_only_the_api_server_dns_idm_and_allowed_targets(
    helm: Path,
) -> None:
    assert not _of_kind(_render(helm, "idmsync", "idmsync-system"), "NetworkPolicy")
    error = _refused(helm, "template", "x", str(CHART), "--set", "networkPolicy.enabled=true")
    assert "networkPolicy.apiServer.cidrs" in error
    documents = _render(
        helm,
        "idmsync",
        "idmsync-system",
        "networkPolicy.enabled=true",
        "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
        "networkPolicy.externalTargets.cidrs={203.0.113.0/24}",
        "watchNamespaces={team-a,team-b}",
    )
    (policy,) = _of_kind(documents, "NetworkPolicy")
    (deployment,) = _of_kind(documents, "Deployment")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert [rule["ports"][0]["port"] for rule in spec["ingress"]] == ["metrics", "health"]
    api, dns, idm, external = spec["egress"]
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert {p["port"] for p in api["ports"]} == {443, 6443}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    (watched,) = idm["to"][0]["namespaceSelector"]["matchExpressions"]
    assert watched["values"] == ["team-a", "team-b"]
    assert external["to"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    assert external["ports"] == [{"port": 443, "protocol": "TCP"}]


def test_service_monitor_scrapes_the_metrics_service(helm: Path) -> None:
    assert not _of_kind(_render(helm, "idmsync", "idmsync-system"), "ServiceMonitor")
    documents = _render(
        helm, "idmsync", "idmsync-system", "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prometheus",
    )  # fmt: skip
    (monitor,) = _of_kind(documents, "ServiceMonitor")
    (service,) = _of_kind(documents, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["idmsync-system"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    error = _refused(
        helm, "template", "x", str(CHART),
        "--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false",
    )  # fmt: skip
    assert "serviceMonitor.enabled needs metrics.service.enabled" in error


def test_image_digest_pins_the_image(helm: Path) -> None:
    digest = "sha256:" + "ab" * 32
    container = _container(_render(helm, "idmsync", "idmsync-system", f"image.digest={digest}"))
    assert container["image"] == f"idmsync/idmsync-operator@{digest}"


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


#: Everything optional switched on (the ServiceMonitor aside: see below).
ALL_OPTIONS = (
    "replicas=2",
    "networkPolicy.enabled=true",
    "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
    "networkPolicy.externalTargets.cidrs={203.0.113.0/24}",
    "allowedTargets={idm.example.com,*.corp}",
)


def test_rendered_chart_is_accepted_by_the_api_server(
    helm: Path, kubectl: Kubectl, chart_crds: None, namespace: str
) -> None:
    for sets in [
        (),
        (f"watchNamespaces={{{namespace}}}",),
        ALL_OPTIONS,
        (*ALL_OPTIONS, f"watchNamespaces={{{namespace}}}"),
    ]:
        documents = _render(helm, "dry", namespace, *sets)
        rendered = yaml.safe_dump_all(documents)
        result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
        created = {line.split(" ", 1)[0] for line in result.stdout.splitlines()}
        expected = {f"{d['kind'].lower()}" for d in documents}
        assert {c.split("/")[0].split(".")[0] for c in created} == expected, result.stdout
        assert "deployment.apps/dry-idmsync created (server dry run)" in result.stdout
        if "replicas=2" in sets:
            assert (
                "poddisruptionbudget.policy/dry-idmsync created (server dry run)" in result.stdout
            )
            assert "networkpolicy.networking.k8s.io/dry-idmsync created" in result.stdout


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
