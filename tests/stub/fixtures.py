"""pytest fixtures for the IDM stub."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stub.idm_stub import IdmStub

LDAP_SOURCE = "system/ldap/account"
LDAP_STAGE = "SYSTEMLDAPACCOUNT"
STAGE_PATH = f"repo/synchronisation/pooledSyncStage/{LDAP_STAGE}"
ADMIN_USER = "openidm-admin"
# a distinctive value so tests can prove it never appears in any output
ADMIN_PASSWORD = "pw-Zq8v-never-print-me"


@pytest.fixture
def stub() -> Iterator[IdmStub]:
    """A running stub with one LDAP-like source: stage at token 100, changelog at 105."""
    server = IdmStub(username=ADMIN_USER, password=ADMIN_PASSWORD).start()
    server.add_source(LDAP_SOURCE, latest=105)
    server.put_stage(LDAP_STAGE, 100)
    try:
        yield server
    finally:
        server.stop()
