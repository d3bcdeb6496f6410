"""Conformance against real OpenIDM 6.1.0: dialect x connector x path, each the whole KB procedure.

Every cell arranges a stage that liveSync made, resets it through one path (the CLI, or the
operator on the real API server) speaking one dialect (``Legacy``: ``_queryId`` and no API
version header; ``IDM7``: ``_queryFilter`` and ``Accept-API-Version``), and checks what the KB
checks, against the source itself rather than against our own report:

* the audit (previous rev and token) is what the stage held before;
* the stage came back at the source's latest position: OpenDJ's ``lastChangeNumber`` for the
  LDAP changelog connector, the newest snapshot token (``hr.csv.<token>``) for the CSV connector;
* the KB's last step: a change made in the source after the reset reaches the managed user
  through the next liveSync.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.controlplane import ControlPlane, Kubectl
from tests.harness.openidm import RealIDM
from tests.harness.operator_process import IDMSYNC, OperatorProcess
from tests.integration.conftest import (
    CRD,
    reset_manifest,
    secret_manifest,
    service_manifest,
    wait_phase,
)

pytestmark = [pytest.mark.openidm, pytest.mark.timeout(900)]

STAGES = "repo/synchronisation/pooledSyncStage"


@dataclass(frozen=True)
class Connector:
    """One liveSync source of the harness's OpenIDM and how to read and change its far side."""

    name: str
    source: str
    stage: str
    mapping: str
    user: str  # a userName the mapping correlates on

    def latest_token(self, real: RealIDM) -> int:
        if self.name == "ldap":
            return real.last_change_number()
        # The CSV connector keeps one snapshot of the file per token it handed out; a stage it
        # recreates starts at the newest one.
        return max(int(p.suffix[1:]) for p in csv_file(real).parent.glob("hr.csv.*"))

    def change(self, real: RealIDM) -> tuple[str, str]:
        """Change one attribute at the source; returns (managed attribute, new value)."""
        if self.name == "ldap":
            phone = f"+1 555 {secrets.randbelow(10**6):06d}"
            dn = f"uid={self.user},ou=People,{real.ldap_base_dn}"
            real.ldap_replace(dn, "telephoneNumber", phone)
            return "telephoneNumber", phone
        mail = f"ana.{secrets.token_hex(4)}@example.com"
        path = csv_file(real)
        rows = path.read_text().splitlines()
        changed = [
            ",".join([*r.split(",")[:3], f'"{mail}"', r.split(",")[4]])
            if r.startswith(f'"{self.user}"')
            else r
            for r in rows
        ]
        path.write_text("\n".join(changed) + "\n")
        return "mail", mail


LDAP = Connector(
    "ldap", "system/ldap/account", "SYSTEMLDAPACCOUNT", "systemLdapAccounts_managedUser", "bjensen"
)
CSV = Connector(
    "csv", "system/hr/account", "SYSTEMHRACCOUNT", "systemHrAccounts_managedUser", "hr.alvarez"
)


def csv_file(real: RealIDM) -> Path:
    assert real.openidm is not None
    return real.openidm.home / "data" / "hr.csv"


class Rest:
    """Raw REST access for arranging and checking (no project code)."""

    def __init__(self, real: RealIDM) -> None:
        self.http = httpx.Client(
            base_url=f"{real.idm_url}/openidm", headers=real.admin_headers, timeout=120
        )

    def stage(self, stage_id: str) -> dict[str, Any] | None:
        r = self.http.get(f"{STAGES}/{stage_id}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def livesync(self, source: str) -> None:
        self.http.post(source, params={"_action": "liveSync"}).raise_for_status()

    def recon(self, mapping: str) -> None:
        params = {"_action": "recon", "mapping": mapping, "waitForCompletion": "true"}
        self.http.post("recon", params=params).raise_for_status()

    def managed(self, user: str, attribute: str) -> Any:
        found = self.http.get(
            "managed/user", params={"_queryFilter": f'userName eq "{user}"'}
        ).json()["result"]
        return found[0].get(attribute) if found else None


@pytest.fixture(scope="module")
def rest(real_idm: RealIDM) -> Iterator[Rest]:
    client = Rest(real_idm)
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def operator_namespace(
    control_plane: ControlPlane, real_idm: RealIDM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    kubectl = control_plane.kubectl
    kubectl("apply", "--server-side", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/synctokenresets.idmsync.dev")
    namespace = f"conformance-{secrets.token_hex(3)}"
    kubectl("create", "namespace", namespace)
    kubectl.apply(service_manifest("idm", namespace, port_of(real_idm)))
    credentials = {"username": real_idm.admin_user, "password": real_idm.admin_password}
    kubectl.apply(secret_manifest("idm-admin", namespace, credentials))
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    operator = OperatorProcess(control_plane.kubeconfig, log, namespaces=namespace).start()
    try:
        yield namespace
    finally:
        operator.stop()
    assert real_idm.admin_password not in operator.log()


def port_of(real: RealIDM) -> int:
    return int(real.idm_url.rsplit(":", 1)[1])


@dataclass
class Outcome:
    api: str
    result: str
    previous_rev: str
    previous_token: Any
    new_token: Any


def reset_with_cli(real: RealIDM, connector: Connector, dialect: str) -> Outcome:
    env = {**os.environ, "IDM_USERNAME": real.admin_user, "IDM_PASSWORD": real.admin_password}
    run = subprocess.run(
        [IDMSYNC, "reset", "--url", real.idm_url, "--api", dialect.lower(),
         "--source", connector.source, "--output", "json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert real.admin_password not in run.stdout + run.stderr
    body = json.loads(run.stdout)
    (stage,) = body["stages"]
    return Outcome(
        body["server"]["api"],
        stage["result"],
        stage["previous_rev"],
        stage["previous_token"],
        stage["new_token"],
    )


def reset_with_operator(
    kubectl: Kubectl, namespace: str, real: RealIDM, connector: Connector, dialect: str
) -> Outcome:
    name = f"{connector.name}-{dialect.lower()}-{secrets.token_hex(2)}"
    spec = {
        "target": {"service": {"name": "idm", "port": port_of(real)}},
        "auth": {"adminSecretRef": {"name": "idm-admin"}},
        "api": dialect,
        "stages": {"sources": [connector.source]},
    }
    kubectl.apply(reset_manifest(name, namespace, spec))
    status = wait_phase(kubectl, namespace, name, ("Succeeded", "Failed"), timeout=240)["status"]
    assert status["phase"] == "Succeeded", status
    (stage,) = status["stages"]
    return Outcome(
        status["server"]["api"],
        stage["result"],
        stage["previousRev"],
        stage["previousToken"],
        stage["liveSync"]["newToken"],
    )


@pytest.mark.parametrize("path", ["cli", "operator"])
@pytest.mark.parametrize("connector", [LDAP, CSV], ids=["ldap", "csv"])
@pytest.mark.parametrize("dialect", ["Legacy", "IDM7"])
def test_the_kb_procedure(
    request: pytest.FixtureRequest,
    real_idm: RealIDM,
    rest: Rest,
    dialect: str,
    connector: Connector,
    path: str,
) -> None:
    # Arrange what the KB starts from: liveSync has run (a stage exists) and the users are linked.
    # Twice: the CSV connector's first run on a new stage hands out the current time and writes
    # no snapshot; from the second on, its token is the newest snapshot of the file.
    rest.livesync(connector.source)
    rest.livesync(connector.source)
    rest.recon(connector.mapping)
    before = rest.stage(connector.stage)
    assert before is not None

    if path == "cli":
        outcome = reset_with_cli(real_idm, connector, dialect)
    else:
        namespace = request.getfixturevalue("operator_namespace")
        kubectl = request.getfixturevalue("control_plane").kubectl
        outcome = reset_with_operator(kubectl, namespace, real_idm, connector, dialect)

    assert outcome.api == dialect
    assert outcome.result == "Deleted"
    assert (outcome.previous_rev, outcome.previous_token) == (
        before["_rev"],
        before["connectorData"]["syncToken"],
    )
    after = rest.stage(connector.stage)
    assert after is not None
    assert outcome.new_token == after["connectorData"]["syncToken"]
    assert outcome.new_token == connector.latest_token(real_idm), "back at the source's latest"

    attribute, value = connector.change(real_idm)
    rest.livesync(connector.source)
    assert rest.managed(connector.user, attribute) == value, "liveSync picks up changes again"
