"""Fixtures and helpers of the e2e tests: the session's real OpenIDM arranged and checked over
raw REST (no project code), and the namespace an operator needs to reach it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.openidm import RealIDM
from tests.integration.conftest import CRD, secret_manifest, service_manifest

STAGE = "SYSTEMLDAPACCOUNT"
MAPPING = "systemLdapAccounts_managedUser"


class Idm:
    """Raw REST access to the real OpenIDM, for arranging and checking."""

    def __init__(self, real: RealIDM) -> None:
        self.real = real
        self.http = httpx.Client(
            base_url=f"{real.idm_url}/openidm", headers=real.admin_headers, timeout=120
        )

    def stage(self) -> dict[str, Any] | None:
        response = self.http.get(f"repo/synchronisation/pooledSyncStage/{STAGE}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def token(self) -> Any:
        stage = self.stage()
        return stage["connectorData"]["syncToken"] if stage else None

    def livesync(self) -> None:
        self.http.post(self.real.ldap_source, params={"_action": "liveSync"}).raise_for_status()

    def recon(self) -> None:
        params = {"_action": "recon", "mapping": MAPPING, "waitForCompletion": "true"}
        self.http.post("recon", params=params).raise_for_status()

    def managed_phone(self, user: str) -> str | None:
        found = self.http.get(
            "managed/user", params={"_queryFilter": f'userName eq "{user}"'}
        ).json()["result"]
        return found[0].get("telephoneNumber") if found else None

    def resync(self) -> None:
        """Leave the stage at the directory's latest change, as every other test expects."""
        stage = self.stage()
        if stage is not None:
            self.http.delete(
                f"repo/synchronisation/pooledSyncStage/{STAGE}",
                headers={"If-Match": stage["_rev"]},
            )
        self.livesync()


@pytest.fixture
def idm(real_idm: RealIDM) -> Iterator[Idm]:
    """The stage there and the managed users reconciled; the stage in sync again after."""
    client = Idm(real_idm)
    if client.stage() is None:
        client.livesync()
    client.recon()
    try:
        yield client
    finally:
        client.resync()
        client.http.close()


def change_phone(real: RealIDM, user: str) -> tuple[str, int]:
    phone = f"+1 555 {secrets.randbelow(10**6):06d}"
    change = real.ldap_replace(
        f"uid={user},ou=People,{real.ldap_base_dn}", "telephoneNumber", phone
    )
    return phone, change


def operator_namespace(
    control_plane: ControlPlane, real: RealIDM, prefix: str, *, ldap: bool = False
) -> tuple[str, int]:
    """The CRD installed and a new namespace with Service ``idm`` and Secret ``idm-admin``
    (with ``ldap``, also Service ``ds`` with port ``ldap`` and Secret ``ds-reader``); returns
    the namespace and OpenIDM's port."""
    kubectl = control_plane.kubectl
    kubectl("apply", "--server-side", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/synctokenresets.idmsync.dev")
    namespace = f"{prefix}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", namespace)
    idm_port = int(real.idm_url.rsplit(":", 1)[1])
    kubectl.apply(service_manifest("idm", namespace, idm_port))
    admin = {"username": real.admin_user, "password": real.admin_password}
    kubectl.apply(secret_manifest("idm-admin", namespace, admin))
    if ldap:
        ldap_port = int(real.ldap_url.rsplit(":", 1)[1])
        kubectl.apply(service_manifest("ds", namespace, ldap_port, port_name="ldap"))
        reader = {"bindDN": real.ldap_bind_dn, "password": real.ldap_bind_password}
        kubectl.apply(secret_manifest("ds-reader", namespace, reader))
    return namespace, idm_port
