"""The contract suite's server fixture: the same tests against the stub and real OpenIDM."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER, LDAP_SOURCE
from tests.stub.idm_stub import IdmStub

#: the sync mapping whose source is the liveSync source (both servers have it)
MAPPING = "systemLdapAccounts_managedUser"


@dataclass
class ContractServer:
    """An IDM with one liveSync source, however it is provided."""

    kind: str
    url: str  # without /openidm
    username: str
    password: str
    source: str
    #: make ``n`` changes in the source's changelog
    make_changes: Callable[[int], None]
    #: the source's latest change position (the token a fresh stage starts at)
    latest_token: Callable[[], int]

    @property
    def stage_id(self) -> str:
        return self.source.replace("/", "").upper()

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"X-OpenIDM-Username": self.username, "X-OpenIDM-Password": self.password}


def _stub_server() -> Iterator[ContractServer]:
    stub = IdmStub(username=ADMIN_USER, password=ADMIN_PASSWORD).start()
    stub.add_source(LDAP_SOURCE, latest=100)
    # as tests/e2e/idm/openidm/conf configures the real one
    stub.add_mapping(MAPPING, LDAP_SOURCE)
    stub.add_livesync_job("liveSync-ldap", LDAP_SOURCE)
    try:
        yield ContractServer(
            kind="stub",
            url=stub.url,
            username=ADMIN_USER,
            password=ADMIN_PASSWORD,
            source=LDAP_SOURCE,
            make_changes=lambda n: stub.add_changes(LDAP_SOURCE, n),
            latest_token=lambda: stub.sources[LDAP_SOURCE].latest,
        )
    finally:
        stub.stop()


@pytest.fixture(params=["stub", pytest.param("openidm", marks=pytest.mark.openidm)])
def idm_server(request: pytest.FixtureRequest) -> Iterator[ContractServer]:
    if request.param == "stub":
        yield from _stub_server()
        return
    real = request.getfixturevalue("real_idm")
    counter = iter(range(10**6))

    def make_changes(n: int) -> None:
        for _ in range(n):
            real.ldap_replace(
                f"uid=bjensen,ou=People,{real.ldap_base_dn}", "description", f"c{next(counter)}"
            )

    yield ContractServer(  # noqa: PT022 - the stub branch above has a teardown
        kind="openidm",
        url=real.idm_url,
        username=real.admin_user,
        password=real.admin_password,
        source=real.ldap_source,
        make_changes=make_changes,
        latest_token=real.last_change_number,
    )
