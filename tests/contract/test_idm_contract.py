"""What idmsync relies on in IDM's REST API, checked against the stub AND real OpenIDM.

Where the two disagree, the stub is wrong. Findings: docs/notes/openidm-rest-facts.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from idmsync.auth import AdminCredentials, Secret
from idmsync.engine import (
    Flavour,
    IdmClient,
    ResetOptions,
    RetryPolicy,
    Stage,
    StageRef,
    StageResult,
    make_http_client,
    run_reset,
)
from idmsync.engine.recon import parse_recon
from idmsync.engine.schedules import livesync_stage
from idmsync.errors import NotFound, RevisionConflict, ServerError, Unauthorized
from tests.contract.conftest import MAPPING, ContractServer

STAGES = "openidm/repo/synchronisation/pooledSyncStage"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(timeout=60) as client:
        yield client


def client(
    server: ContractServer, http: httpx.AsyncClient, flavour: Flavour = Flavour.AUTO, **kw: str
) -> IdmClient:
    credentials = AdminCredentials(server.username, Secret(kw.get("password", server.password)))
    return IdmClient(server.url, credentials, http, flavour=flavour, retry=RetryPolicy(attempts=2))


async def fresh_stage(server: ContractServer, http: httpx.AsyncClient) -> tuple[IdmClient, Stage]:
    """Start every test from 'the stage exists at the latest token' (after a liveSync);
    returns a client and the stage as read then."""
    idm = client(server, http)
    stage = await idm.read_stage(server.stage_id)
    if stage is not None:
        await idm.delete_stage(server.stage_id, stage.rev)
    await idm.trigger_livesync(server.source)
    stage = await idm.read_stage(server.stage_id)
    assert stage is not None, "liveSync creates a missing stage"
    return idm, stage


async def test_info_version_names_the_product_version(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    info = await client(idm_server, http).server_info()
    assert info.version
    assert info.version[0].isdigit()
    assert info.flavour in (Flavour.IDM7, Flavour.LEGACY)


async def test_livesync_on_a_missing_stage_creates_it_at_the_latest_token(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    _, stage = await fresh_stage(idm_server, http)
    assert isinstance(stage.rev, str)
    assert stage.rev
    assert int(stage.sync_token) == idm_server.latest_token()


@pytest.mark.parametrize("flavour", [Flavour.IDM7, Flavour.LEGACY])
async def test_both_list_queries_list_the_stage(
    idm_server: ContractServer, http: httpx.AsyncClient, flavour: Flavour
) -> None:
    await fresh_stage(idm_server, http)
    ids = await client(idm_server, http, flavour).list_stage_ids()
    assert idm_server.stage_id in ids


async def test_a_stale_rev_is_refused_with_412_and_the_stage_is_kept(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    idm, stage = await fresh_stage(idm_server, http)
    idm_server.make_changes(1)
    await idm.trigger_livesync(idm_server.source)  # liveSync writes the stage: a new rev
    with pytest.raises(RevisionConflict) as refused:
        await idm.delete_stage(idm_server.stage_id, stage.rev)
    assert refused.value.status == 412
    response = await http.delete(
        f"{idm_server.url}/{STAGES}/{idm_server.stage_id}",
        headers={**idm_server.admin_headers, "If-Match": stage.rev},
    )
    assert (response.status_code, response.json()["code"]) == (412, 412)
    assert await idm.read_stage(idm_server.stage_id) is not None


async def test_delete_without_if_match_is_a_409(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    idm, _ = await fresh_stage(idm_server, http)
    response = await http.delete(
        f"{idm_server.url}/{STAGES}/{idm_server.stage_id}", headers=idm_server.admin_headers
    )
    assert response.status_code == 409
    assert response.json()["code"] == 409
    assert await idm.read_stage(idm_server.stage_id) is not None, "nothing deleted"


@pytest.mark.parametrize("quoted", [False, True], ids=["bare-rev", "quoted-etag"])
async def test_the_current_rev_in_if_match_bare_or_as_a_quoted_etag_deletes(
    idm_server: ContractServer, http: httpx.AsyncClient, quoted: bool
) -> None:
    idm, stage = await fresh_stage(idm_server, http)
    response = await http.delete(
        f"{idm_server.url}/{STAGES}/{idm_server.stage_id}",
        headers={
            **idm_server.admin_headers,
            "If-Match": f'"{stage.rev}"' if quoted else stage.rev,
            "Accept-API-Version": "resource=1.0",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["_id"] == idm_server.stage_id
    assert body["connectorData"]["syncToken"] == stage.sync_token, "the deleted stage"
    assert await idm.read_stage(idm_server.stage_id) is None


async def test_read_and_delete_of_a_missing_stage_are_404(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    idm, stage = await fresh_stage(idm_server, http)
    await idm.delete_stage(idm_server.stage_id, stage.rev)
    assert await idm.read_stage(idm_server.stage_id) is None
    with pytest.raises(NotFound):
        await idm.delete_stage(idm_server.stage_id, stage.rev)


async def test_the_kb_procedure_end_to_end(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    idm, before = await fresh_stage(idm_server, http)
    idm_server.make_changes(2)
    ref = StageRef(idm_server.stage_id, idm_server.source)
    outcome = await run_reset(idm, [ref], ResetOptions(verify_timeout=60))
    (stage,) = outcome.stages
    assert stage.result is StageResult.DELETED
    assert (stage.previous_rev, stage.previous_token) == (before.rev, before.sync_token)
    assert int(stage.new_token) == idm_server.latest_token(), "restarts at the latest change"


async def test_set_writes_an_earlier_token_and_livesync_moves_it_to_the_latest(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    idm, stage = await fresh_stage(idm_server, http)
    idm_server.make_changes(3)
    earlier = int(stage.sync_token)
    written = await idm.write_stage_token(stage, earlier)
    assert written.sync_token == earlier
    assert written.rev != stage.rev
    await idm.trigger_livesync(idm_server.source)
    after = await idm.read_stage(idm_server.stage_id)
    assert after is not None
    assert int(after.sync_token) == idm_server.latest_token()


async def test_a_wrong_password_is_a_401(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    with pytest.raises(Unauthorized) as refused:
        await client(idm_server, http, Flavour.IDM7, password="not-the-password").read_stage(
            idm_server.stage_id
        )
    assert refused.value.status == 401
    response = await http.get(
        f"{idm_server.url}/{STAGES}",
        params={"_queryFilter": "true"},
        headers={**idm_server.admin_headers, "X-OpenIDM-Password": "not-the-password"},
    )
    assert response.status_code == 401
    assert (response.json()["code"], response.json()["reason"]) == (401, "Unauthorized")


async def test_the_scheduler_pauses_and_resumes(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    """Both actions answer ``{"success": true}``, which the client takes as done."""
    for action in ("pauseJobs", "resumeJobs"):
        response = await http.post(
            f"{idm_server.url}/openidm/scheduler/job",
            params={"_action": action},
            headers=idm_server.admin_headers,
        )
        assert (response.status_code, response.json()) == (200, {"success": True}), action
    idm = client(idm_server, http)
    await idm.pause_scheduler()
    await idm.resume_scheduler()


async def test_a_reconciliation_starts_in_the_background_and_reports_until_success(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    idm = client(idm_server, http)
    started = await idm.start_recon(MAPPING)
    assert set(started) >= {"_id", "state"}
    assert started["state"] in ("ACTIVE", "SUCCESS")
    for _ in range(600):  # bounded: 600 reads
        body = await idm.read_recon(started["_id"])
        assert body is not None
        progress = parse_recon(MAPPING, body)
        if progress.finished:
            break
        assert progress.state == "ACTIVE"
        assert (progress.stage or "").startswith("ACTIVE")
        await asyncio.sleep(0.1)
    assert (progress.id, progress.mapping) == (started["_id"], MAPPING)
    assert (progress.state, progress.stage) == ("SUCCESS", "COMPLETED_SUCCESS")
    assert progress.failed == 0
    assert progress.processed is not None
    assert progress.processed >= 1
    assert progress.started
    assert progress.ended
    assert any(run.get("_id") == started["_id"] for run in await idm.list_recons())


async def test_an_unknown_mapping_or_recon_id_is_not_found(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    idm = client(idm_server, http)
    with pytest.raises(NotFound, match="No such mapping: nosuchmapping") as refused:
        await idm.start_recon("nosuchmapping")
    assert refused.value.status == 409  # OpenIDM's word for it
    assert await idm.read_recon("nosuchid") is None


async def test_scheduled_jobs_name_their_livesync_source_and_none_runs_now(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    idm = client(idm_server, http)
    jobs = await idm.list_jobs()
    ours = [job for job in jobs if livesync_stage(job) == idm_server.stage_id]
    assert [job["_id"] for job in ours] == ["liveSync-ldap"]
    assert ours[0]["invokeContext"] == {"action": "liveSync", "source": idm_server.source}
    assert await idm.running_jobs() == []


async def test_per_job_pause_exists_from_idm_7_only(
    idm_server: ContractServer, http: httpx.AsyncClient
) -> None:
    idm = client(idm_server, http)
    version = await idm.version()
    assert version is not None
    if int(version.split(".")[0]) >= 7:
        await idm.pause_job("liveSync-ldap")
        await idm.resume_job("liveSync-ldap")
        return
    with pytest.raises(ServerError, match="pauseJobs resumeJobs") as refused:
        await idm.pause_job("liveSync-ldap")
    assert refused.value.status == 500
