"""Hostile specs, generated (hypothesis), against the real API server's validation and the
operator: no 5xx, every rejection says why, everything admitted ends with a reason.

A third of the specs are well-formed (pointing at the stub, at loopback, link-local and
metadata addresses, numeric spellings of them, hosts outside the allow-list, missing Secrets);
the rest have one or two fields replaced: sources and ids that reach for another endpoint,
user-info and paths in URLs, another namespace's Secret, two targets, wrong types, unknown
fields, out-of-range numbers, empty and very long strings, any text. Each is created as the
user would (the admin kubeconfig). A rejection must be a 4xx whose message is not empty. An
admitted one goes to the session's operator (namespace ``shared-*``, a Service ``idm`` in
front of the IDM stub, Secrets with every key a spec may name) and must end a try with a
documented reason in its Ready condition (never InternalError), and no secret in its status.

``make test`` runs 60 examples; ``make soak`` sets ``IDMSYNC_HYPOTHESIS_EXAMPLES`` (500).
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.harness.controlplane import Kubectl
from tests.harness.operator_process import OperatorProcess
from tests.harness.report import write_lines
from tests.integration.conftest import (
    admin_secret,
    secret_manifest,
    service_manifest,
    wait_for,
)
from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER, LDAP_SOURCE
from tests.stub.idm_stub import IdmStub

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(1800)]

EXAMPLES = int(os.environ.get("IDMSYNC_HYPOTHESIS_EXAMPLES") or 60)
REASONS = {
    "Succeeded", "InvalidSpec", "InvalidStatus", "TargetNotAllowed", "SecretNotFound",
    "SecretKeyMissing", "ServiceNotFound", "Unauthorized", "Forbidden", "ServerUnreachable",
    "ServerError", "RevisionConflict", "ProtocolError", "NotFound", "LiveSyncFailed",
    "VerifyTimeout", "KubernetesUnavailable",
}  # fmt: skip
SUMMARY: Counter[str] = Counter()

# --- the parts of a spec ---------------------------------------------------------------------
# A well-formed spec (whose values may still point somewhere forbidden), then, in most examples,
# one or two of its fields replaced with something crafted or arbitrary.

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
any_text = st.text(max_size=300)
secret_names = st.sampled_from(["idm-admin", "tenant", "missing"])
# nothing listens on loopback ports 1-9: each its own server, so their retries do not queue
# behind one another's stage lock
closed_ports = st.integers(1, 9)
well_formed_urls = closed_ports.map(lambda port: f"http://127.0.0.1:{port}") | st.sampled_from([
    "https://idm.allowed.example", "https://10.0.0.1",
    "https://169.254.169.254", "https://[fe80::1]:8443", "https://[::ffff:169.254.169.254]",
    "https://2852039166", "https://0xa9fea9fe", "https://metadata.google.internal",
    "https://idm.allowed.example.attacker.test", "http://idm.allowed.example", "https://localhost",
])  # fmt: skip
token_urls = st.sampled_from([
    "https://am.allowed.example/am/oauth2/access_token", "http://127.0.0.1:1/token",
    "https://169.254.169.254/token", "http://am/token", "https://am.elsewhere.test/token",
])  # fmt: skip
targets = st.one_of(
    st.fixed_dictionaries(
        {"service": st.fixed_dictionaries(
            {"name": st.sampled_from(["idm", "missing"])},
            optional={"port": st.sampled_from(["http", "nosuchport"]) | closed_ports},
        )}
    ),
    st.fixed_dictionaries({"url": well_formed_urls}),
    st.fixed_dictionaries({"tenantSecretRef": st.fixed_dictionaries({"name": secret_names})}),
)  # fmt: skip
auths = st.one_of(
    st.fixed_dictionaries(
        {"adminSecretRef": st.fixed_dictionaries(
            {"name": secret_names}, optional={"passwordKey": st.sampled_from(["password", "x"])}
        )}
    ),
    st.fixed_dictionaries({"bearerTokenSecretRef": st.fixed_dictionaries({"name": secret_names})}),
    st.fixed_dictionaries(
        {"clientCredentials": st.fixed_dictionaries(
            {"tokenUrl": token_urls, "secretRef": st.fixed_dictionaries({"name": secret_names})}
        )}
    ),
)  # fmt: skip
well_formed = st.fixed_dictionaries(
    {
        "target": targets,
        "auth": auths,
        "stages": st.fixed_dictionaries(
            {"sources": st.lists(
                st.sampled_from([LDAP_SOURCE, "system/csv/account", "system/ldap/nosuchtype"]),
                min_size=1, max_size=2,
            )},
            optional={
                "ids": st.lists(st.sampled_from(["SYSTEMLDAPACCOUNT", "OTHER_1"]), max_size=2),
                "all": st.booleans(),
            },
        ),
    },
    optional={
        "api": st.sampled_from(["Auto", "IDM7", "Legacy", "IdentityCloud"]),
        "liveSync": st.fixed_dictionaries(
            {}, optional={"trigger": st.booleans(), "verify": st.booleans(),
                          "timeoutSeconds": st.integers(1, 3)},  # an admitted one may wait so
        ),
        "pauseSchedules": st.booleans(),
        "dryRun": st.booleans(),
    },
)  # fmt: skip
#: what may replace a field: crafted values first, then anything
hostile = st.one_of(
    st.sampled_from([
        "system/ldap/..", "system/../repo", "system/ldap/account/x", "repo/a/b", "A/B", "",
        "a" * 257, "/a/../b", "http://u:p@idm.allowed.example", "https://idm.allowed.example/x",
        "ftp://idm.allowed.example", 0, -1, 65536, 3601, 10**12, None, [], {}, True,
        ["system/../x"], ["A/B"], {"namespace": "kube-system", "name": "idm-admin"},
        {"service": {"name": "idm"}, "url": "https://idm.allowed.example"},
        {"adminSecretRef": {"name": "a"}, "bearerTokenSecretRef": {"name": "b"}},
    ]),
    any_text,
    junk,
)  # fmt: skip
PATHS = [
    ("target",), ("target", "url"), ("target", "service"), ("target", "service", "name"),
    ("target", "service", "port"), ("target", "contextPath"), ("target", "tenantSecretRef"),
    ("auth",), ("auth", "adminSecretRef"), ("auth", "adminSecretRef", "name"),
    ("auth", "clientCredentials", "tokenUrl"), ("stages",), ("stages", "sources"),
    ("stages", "ids"), ("stages", "all"), ("api",), ("action",), ("token",),
    ("liveSync", "timeoutSeconds"), ("pauseSchedules",), ("tls",), ("tls", "caSecretRef"),
    ("unknownField",),
]  # fmt: skip


def _replace(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(spec))
    node = changed
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return changed


mutation = st.tuples(st.sampled_from(PATHS), hostile)
specs = st.one_of(
    well_formed,
    st.builds(
        lambda spec, changes: _replace_all(spec, changes),
        well_formed,
        st.lists(mutation, min_size=1, max_size=2),
    ),
    st.builds(
        lambda spec, changes: _replace_all(spec, changes),
        well_formed,
        st.lists(mutation, min_size=1, max_size=2),
    ),
)


def _replace_all(spec: dict[str, Any], changes: list[tuple[tuple[str, ...], Any]]) -> Any:
    for path, value in changes:
        spec = _replace(spec, path, value)
    return spec


@pytest.fixture
def resources(
    operator: OperatorProcess, kubectl: Kubectl, shared_namespace: str, stub: IdmStub
) -> tuple[client.CustomObjectsApi, str]:
    kubectl.apply(service_manifest("idm", shared_namespace, stub.port))
    kubectl.apply(admin_secret(shared_namespace))  # username, password
    # every key a spec may name, so the reset gets past its Secret to the target's rules
    credentials = {"token": ADMIN_PASSWORD, "clientId": "c", "clientSecret": ADMIN_PASSWORD}
    kubectl.apply(
        secret_manifest("idm-admin", shared_namespace, {
            "username": ADMIN_USER, "password": ADMIN_PASSWORD, **credentials,
        })
    )  # fmt: skip
    tenant = {"tenantUrl": "https://2852039166", "serviceAccountId": "sa", "privateJwk": "{}"}
    kubectl.apply(secret_manifest("tenant", shared_namespace, {**tenant, **credentials}))
    api = client.CustomObjectsApi(config.new_client_from_config(str(kubectl.kubeconfig)))
    return api, shared_namespace


def test_generated_specs_are_rejected_with_a_message_or_end_with_a_reason(
    resources: tuple[client.CustomObjectsApi, str], request: pytest.FixtureRequest
) -> None:
    api, namespace = resources
    numbers = itertools.count()
    admitted: list[str] = []
    problems: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(spec=specs)
    def submit(spec: dict[str, Any]) -> None:
        name = f"h-{next(numbers):04d}"
        body = {
            "apiVersion": "idmsync.dev/v1alpha1",
            "kind": "SyncTokenReset",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        try:
            api.create_namespaced_custom_object(
                "idmsync.dev", "v1alpha1", namespace, "synctokenresets", body
            )
        except ApiException as exc:
            rejected = exc
        else:
            SUMMARY["admitted"] += 1
            admitted.append(name)
            return
        status = rejected.status or 0
        message = (json.loads(rejected.body or "{}") or {}).get("message", "")
        SUMMARY[f"rejected {status}"] += 1
        assert 400 <= status < 500, f"{status} for {spec!r}: {rejected.body}"
        assert message.strip(), f"a rejection without a message for {spec!r}"

    submit()

    def tried(name: str) -> dict[str, Any] | None:
        status = (
            api.get_namespaced_custom_object(
                "idmsync.dev", "v1alpha1", namespace, "synctokenresets", name
            ).get("status")
            or {}
        )
        ended = status.get("phase") in ("Succeeded", "Failed") or status.get("nextRetryTime")
        return status if ended else None

    for name in admitted:
        status = wait_for(lambda name=name: tried(name), 120, f"{name} to end a try")  # type: ignore[misc]
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
        reason = ready["reason"] if ready else "(no Ready condition)"
        SUMMARY[f"admitted, ended {reason}"] += 1
        if reason not in REASONS:
            problems.append(f"{name}: {reason}: {ready and ready.get('message')}")
        elif reason != "Succeeded" and not (ready and ready.get("message", "").strip()):
            problems.append(f"{name}: {reason} without a message")
        if ADMIN_PASSWORD in json.dumps(status):
            problems.append(f"{name}: the Secret's value is in its status")

    write_lines(
        request,
        (
            "",
            f"hostile specs (hypothesis, {EXAMPLES} examples)",
            *(f"  {outcome:<40} {count:>5}" for outcome, count in sorted(SUMMARY.items())),
        ),
    )
    assert not problems, "\n".join(problems)
