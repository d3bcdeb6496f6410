"""The fault matrix against a real OpenIDM 6.1.0 (+ OpenDJ): the cells of
tests/harness/fault_matrix.py that involve the server, through the same fault proxy.

OpenIDM has no fault knobs, so everything the stub does by itself is done here over its REST
API, outside the proxy: a liveSync sneaking in (``POST system/ldap/account?_action=liveSync``),
someone else deleting the stage, the stage prepared before each cell (deleted, then created
with ``If-None-Match: *`` at rev "1" and a token one change behind OpenDJ's latest, so a
liveSync has something to replay and a recreated stage is told apart by its token). Whether
the scheduler was left paused is read from what reached the server (OpenIDM 6.1 cannot be
asked): the last scheduler action the proxy forwarded.

One OpenIDM for the session (tests/harness/idm_fixtures.py); the timed cells use a 5 s client
timeout against a 10 s injected delay, so the module costs about a minute.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness.fault_matrix import (
    CELLS,
    SOURCE,
    STAGE_ID,
    TABLE_HEADER,
    Cell,
    Row,
    run_cell,
    table_line,
)
from tests.harness.fault_proxy import FaultProxy
from tests.harness.openidm import RealIDM
from tests.harness.report import write_lines

pytestmark = [pytest.mark.openidm, pytest.mark.timeout(600)]

STAGES = "repo/synchronisation/pooledSyncStage"
REAL_CELLS = [c for c in CELLS if not c.stub_only and c.auth == "admin"]
ROWS: list[Row] = []


class OpenIdmBackend:
    name = "openidm"
    short_timeout = 5.0
    long_delay = 10.0
    verify_timeout = 60.0
    verify_interval = 0.2

    def __init__(self, real: RealIDM) -> None:
        self.real = real
        host, port = real.idm_url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.admin_user, self.admin_password = real.admin_user, real.admin_password
        self.secrets = (real.admin_password,)
        self.rest = httpx.Client(
            base_url=f"{real.idm_url}/openidm", headers=real.admin_headers, timeout=120
        )
        # a token one behind the latest and a Set two behind: the changelog needs three
        while real.last_change_number() < 3:
            dn = f"uid=bjensen,ou=People,{real.ldap_base_dn}"
            real.ldap_replace(dn, "description", f"fault matrix {secrets.token_hex(3)}")
        self.latest = real.last_change_number()

    def close(self) -> None:
        self.rest.close()

    def prepare(self) -> tuple[str, Any]:
        found = self.stage()
        if found is not None:
            self._ok(self.rest.delete(f"{STAGES}/{STAGE_ID}", headers={"If-Match": found["_rev"]}))
        body = {"connectorData": {"nativeType": "integer", "syncToken": self.latest - 1}}
        created = self._ok(
            self.rest.put(f"{STAGES}/{STAGE_ID}", json=body, headers={"If-None-Match": "*"})
        )
        assert created["_rev"] == "1", created
        return "1", self.latest - 1

    def livesync(self) -> None:
        self._ok(self.rest.post(SOURCE, params={"_action": "liveSync"}))

    def delete_stage(self) -> None:
        found = self.stage()
        assert found is not None, "the stage to delete is there"
        self._ok(self.rest.delete(f"{STAGES}/{STAGE_ID}", headers={"If-Match": found["_rev"]}))

    def stage(self) -> dict[str, Any] | None:
        answer = self.rest.get(f"{STAGES}/{STAGE_ID}")
        if answer.status_code == 404:
            return None
        body: dict[str, Any] = self._ok(answer)
        return body

    def latest_token(self) -> Any:
        return self.latest

    def set_token(self) -> Any:
        return self.latest - 2

    def scheduler_paused(self, proxy: FaultProxy) -> bool:
        actions = proxy.scheduler_actions()
        return bool(actions) and actions[-1] == "pauseJobs"

    def changes_seen(self, method: str) -> int | None:
        return None  # only the proxy counts: OpenIDM's own log mixes in our arranging requests

    def resume_scheduler(self) -> None:
        self._ok(self.rest.post("scheduler/job", params={"_action": "resumeJobs"}))

    @staticmethod
    def _ok(answer: httpx.Response) -> Any:
        assert answer.is_success, f"{answer.request.method} {answer.request.url}: {answer.text}"
        return answer.json()


@pytest.fixture(scope="module")
def backend(real_idm: RealIDM, request: pytest.FixtureRequest) -> Iterator[OpenIdmBackend]:
    server = OpenIdmBackend(real_idm)
    yield server
    server.close()
    if ROWS:
        title = f"fault matrix (backend: OpenIDM {real_idm.openidm_version})"
        write_lines(request, ("", title, TABLE_HEADER, *map(table_line, ROWS)))


@pytest.mark.parametrize("cell", REAL_CELLS, ids=[c.id for c in REAL_CELLS])
async def test_fault_matrix_on_openidm(backend: OpenIdmBackend, cell: Cell) -> None:
    row = await run_cell(backend, cell)
    ROWS.append(row)
    assert not row.failures, row.failures
