"""Drift check, conditional reset, reconciliation and the gentler pause, against the IDM stub.

The directory side is a fake :class:`ChangelogReader` that reads the stub source's changelog
range (``first``..``latest``), so a test moves the directory and IDM together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from idmsync.auth import AdminCredentials, Secret
from idmsync.engine import (
    ChangelogRange,
    Drift,
    Event,
    Flavour,
    IdmClient,
    LdapDirectory,
    ReconcileOptions,
    ReconProgress,
    ResetOptions,
    RetryPolicy,
    StageProgress,
    StageRef,
    StageResult,
    Step,
    TargetPolicy,
    When,
    classify,
    make_http_client,
    parse_ldap_url,
    run_reset,
)
from idmsync.errors import InvalidSpec, NotFound, ReconFailed, ReconTimeout, TargetNotAllowed
from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER, LDAP_SOURCE, LDAP_STAGE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
LDAP = StageRef(LDAP_STAGE, LDAP_SOURCE)
MAPPING = "systemLdapAccounts_managedUser"
ClientFactory = Callable[..., IdmClient]


class StubChangelog:
    """The stub source's changelog as a directory would publish it on its root DSE."""

    def __init__(self, stub: IdmStub, source: str = LDAP_SOURCE) -> None:
        self.stub, self.source = stub, source
        self.reads = 0

    @property
    def where(self) -> str:
        return "ldap://stub"

    async def read_range(self) -> ChangelogRange:
        self.reads += 1
        with self.stub.lock:
            state = self.stub.sources[self.source]
            return ChangelogRange(first=state.first, last=state.latest)

    def secret_values(self) -> tuple[str, ...]:
        return ()


@pytest.fixture
async def client_for(stub: IdmStub) -> AsyncIterator[ClientFactory]:
    async with make_http_client(timeout=2.0) as http:

        def make(flavour: Flavour = Flavour.IDM7) -> IdmClient:
            credentials = AdminCredentials(ADMIN_USER, Secret(ADMIN_PASSWORD))
            return IdmClient(stub.url, credentials, http, flavour=flavour, retry=FAST)

        yield make


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


# --------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("token", "first", "last", "state", "lag"),
    [
        (105, 1, 105, Drift.IN_SYNC, 0),
        (100, 1, 105, Drift.IN_SYNC, 5),
        (0, 0, 0, Drift.IN_SYNC, 0),  # an empty changelog (OpenDJ: first = last = 0)
        (6, 7, 7, Drift.IN_SYNC, 1),  # the next change needed (7) is the first one kept
        (5, 7, 7, Drift.TRIMMED, 2),  # change 6 was purged
        (5, 0, 0, Drift.AHEAD, -5),  # the changelog was rebuilt: it starts over
        (807, 1, 1, Drift.AHEAD, -806),
        ("42", 1, 105, Drift.IN_SYNC, 63),  # a token stored as a string of digits
        (1795802127707, 1, 105, Drift.AHEAD, 105 - 1795802127707),
        ("2026-11-29T00:00:00Z", 1, 105, Drift.UNKNOWN, None),
        ({"cookie": "x"}, 1, 105, Drift.UNKNOWN, None),
        (True, 1, 105, Drift.UNKNOWN, None),
    ],
)
def test_classify(token: object, first: int, last: int, state: Drift, lag: int | None) -> None:
    check = classify(token, ChangelogRange(first, last))
    assert (check.state, check.lag, check.first, check.last) == (state, lag, first, last)


def test_a_missing_stage_is_absent() -> None:
    check = classify(None, ChangelogRange(1, 5), present=False)
    assert (check.state, check.lag, check.out_of_sync) == (Drift.ABSENT, None, False)


# --------------------------------------------------------------------------- when


async def test_out_of_sync_leaves_an_in_sync_stage_alone_and_records_why(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.put_stage(LDAP_STAGE, 105)  # latest is 105: in sync
    before = stub.stage(LDAP_STAGE)
    recorder = Recorder()
    outcome = await run_reset(
        client_for(),
        [LDAP],
        ResetOptions(when=When.OUT_OF_SYNC, pause_schedules=True),
        observer=recorder,
        changelog=StubChangelog(stub),
    )
    (stage,) = outcome.stages
    assert (stage.result, stage.step) == (StageResult.SKIPPED, Step.DONE)
    assert stage.check is not None
    assert (stage.check.state, stage.check.lag) == (Drift.IN_SYNC, 0)
    assert stub.stage(LDAP_STAGE) == before
    assert stub.requests_to(STAGE_PATH, "DELETE") == []
    assert stub.scheduler_calls == [], "nothing to change: nothing paused"
    assert "StageChecked" in recorder.kinds()


@pytest.mark.parametrize(("first", "token", "state"), [(1, 500, "Ahead"), (150, 120, "Trimmed")])
async def test_out_of_sync_resets_an_ahead_or_trimmed_stage_after_recording_the_check(
    stub: IdmStub, client_for: ClientFactory, first: int, token: int, state: str
) -> None:
    stub.sources[LDAP_SOURCE].latest = 200
    stub.sources[LDAP_SOURCE].first = first
    stub.put_stage(LDAP_STAGE, token)
    recorder = Recorder()
    outcome = await run_reset(
        client_for(),
        [LDAP],
        ResetOptions(when=When.OUT_OF_SYNC),
        observer=recorder,
        changelog=StubChangelog(stub),
    )
    (stage,) = outcome.stages
    assert stage.result is StageResult.DELETED
    assert stage.check is not None
    assert stage.check.state == state
    assert stage.new_token == 200
    kinds = recorder.kinds()
    assert kinds.index("StageChecked") < kinds.index("StageRecorded") < kinds.index("StageChanged")


async def test_always_with_a_check_records_it_and_resets_anyway(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    outcome = await run_reset(client_for(), [LDAP], ResetOptions(), changelog=StubChangelog(stub))
    (stage,) = outcome.stages
    assert stage.result is StageResult.DELETED
    assert stage.check is not None
    assert (stage.check.state, stage.check.lag) == (Drift.IN_SYNC, 5)


async def test_out_of_sync_without_a_check_is_refused_before_any_request(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    with pytest.raises(InvalidSpec, match="OutOfSync needs a drift check"):
        await run_reset(client_for(), [LDAP], ResetOptions(when=When.OUT_OF_SYNC))
    assert stub.requests == []


async def test_a_resumed_run_keeps_its_verdict_and_does_not_check_again(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    # the first run found the stage Ahead, recorded it, and died before the delete
    first_run = classify(500, ChangelogRange(1, 105))
    progress = StageProgress(LDAP_STAGE, LDAP_SOURCE, Step.RECORDED, "1", 100, check=first_run)
    changelog = StubChangelog(stub)
    outcome = await run_reset(
        client_for(),
        [LDAP],
        ResetOptions(when=When.OUT_OF_SYNC),
        progress={LDAP_STAGE: progress},
        changelog=changelog,
    )
    assert changelog.reads == 0
    (stage,) = outcome.stages
    assert stage.result is StageResult.DELETED
    assert stage.check == first_run


# --------------------------------------------------------------------------- reconcile


async def test_a_reconciliation_runs_after_the_reset_and_is_followed_to_success(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.add_mapping(MAPPING, LDAP_SOURCE, polls=2)
    recorder = Recorder()
    outcome = await run_reset(
        client_for(),
        [LDAP],
        ResetOptions(reconcile=ReconcileOptions(MAPPING, interval=0.01)),
        observer=recorder,
    )
    recon = outcome.reconciliation
    assert recon is not None
    assert (recon.state, recon.processed, recon.created, recon.failed) == ("SUCCESS", 3, 1, 0)
    assert recon.situations == {"CONFIRMED": 2, "ABSENT": 1}
    assert stub.reconciled == [MAPPING]
    steps = stub.steps()
    assert steps.index("POST recon") > steps.index(f"POST {LDAP_SOURCE}")
    kinds = recorder.kinds()
    assert kinds.index("StageVerified") < kinds.index("ReconStarted") < kinds.index("ReconFinished")


async def test_no_reconciliation_when_no_stage_was_changed(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.add_mapping(MAPPING, LDAP_SOURCE)
    stub.put_stage(LDAP_STAGE, 105)
    outcome = await run_reset(
        client_for(),
        [LDAP],
        ResetOptions(when=When.OUT_OF_SYNC, reconcile=ReconcileOptions(MAPPING)),
        changelog=StubChangelog(stub),
    )
    assert outcome.reconciliation is None
    assert stub.requests_to("/openidm/recon") == []


async def test_a_failed_reconciliation_is_a_failure_with_its_state(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.add_mapping(MAPPING, LDAP_SOURCE, polls=1, state="FAILED")
    recorder = Recorder()
    with pytest.raises(ReconFailed, match="FAILED") as failed:
        await run_reset(
            client_for(),
            [LDAP],
            ResetOptions(reconcile=ReconcileOptions(MAPPING, interval=0.01)),
            observer=recorder,
        )
    assert failed.value.requeue, "a new try runs only the reconciliation"
    finished = [e for e in recorder.events if e.kind == "ReconFinished"]
    assert finished[0].recon is not None
    assert finished[0].recon.state == "FAILED"


async def test_an_unknown_mapping_is_not_found(stub: IdmStub, client_for: ClientFactory) -> None:
    with pytest.raises(NotFound, match="No such mapping"):
        await run_reset(client_for(), [LDAP], ResetOptions(reconcile=ReconcileOptions("nope")))


async def test_a_reconciliation_that_does_not_finish_times_out_and_is_left_running(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.add_mapping(MAPPING, LDAP_SOURCE, polls=10_000)
    with pytest.raises(ReconTimeout, match="left running"):
        await run_reset(
            client_for(),
            [LDAP],
            ResetOptions(reconcile=ReconcileOptions(MAPPING, timeout=0.2, interval=0.05)),
        )
    assert len(stub.requests_to("/openidm/recon", "POST")) == 1


async def test_a_recorded_reconciliation_is_followed_not_started_again(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.add_mapping(MAPPING, LDAP_SOURCE, polls=1)
    client = client_for()
    started = await client.start_recon(MAPPING)
    done = StageProgress(
        LDAP_STAGE, LDAP_SOURCE, Step.DONE, "1", 100, StageResult.DELETED, True, 105
    )
    outcome = await run_reset(
        client,
        [LDAP],
        ResetOptions(reconcile=ReconcileOptions(MAPPING, interval=0.01)),
        progress={LDAP_STAGE: done},
        recon=ReconProgress(MAPPING, id=started["_id"], state="ACTIVE"),
    )
    assert outcome.reconciliation is not None
    assert outcome.reconciliation.id == started["_id"]
    assert len(stub.requests_to("/openidm/recon", "POST")) == 1


async def test_a_reconciliation_idm_forgot_is_started_once_more(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.add_mapping(MAPPING, LDAP_SOURCE, polls=0)
    done = StageProgress(
        LDAP_STAGE, LDAP_SOURCE, Step.DONE, "1", 100, StageResult.DELETED, True, 105
    )
    outcome = await run_reset(
        client_for(),
        [LDAP],
        ResetOptions(reconcile=ReconcileOptions(MAPPING, interval=0.01)),
        progress={LDAP_STAGE: done},
        recon=ReconProgress(MAPPING, id="lost-in-a-restart", state="ACTIVE"),
    )
    assert outcome.reconciliation is not None
    assert outcome.reconciliation.state == "SUCCESS"
    assert len(stub.requests_to("/openidm/recon", "POST")) == 1


# --------------------------------------------------------------------------- pause


async def test_idm7_pauses_only_the_livesync_job_of_the_stage(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.add_livesync_job("liveSync-ldap", LDAP_SOURCE)
    stub.add_livesync_job("liveSync-hr", "system/hr/account")
    recorder = Recorder()
    await run_reset(client_for(), [LDAP], ResetOptions(pause_schedules=True), observer=recorder)
    assert stub.scheduler_calls == ["pause:liveSync-ldap", "resume:liveSync-ldap"]
    assert not stub.jobs["liveSync-ldap"]["paused"]
    paused = next(e for e in recorder.events if e.kind == "SchedulerPaused")
    assert paused.jobs == ("liveSync-ldap",)


async def test_before_7_every_job_is_paused_and_no_per_job_call_is_sent(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.version = "6.1.0"
    stub.add_livesync_job("liveSync-ldap", LDAP_SOURCE)
    await run_reset(client_for(Flavour.LEGACY), [LDAP], ResetOptions(pause_schedules=True))
    assert stub.scheduler_calls == ["pauseJobs", "resumeJobs"]
    assert stub.requests_to("/openidm/scheduler/job/") == []


async def test_a_server_that_refuses_per_job_pause_gets_every_job_paused(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.version = "6.1.0"  # answers the per-job call with 500, as OpenIDM 6.1 does
    stub.add_livesync_job("liveSync-ldap", LDAP_SOURCE)
    await run_reset(client_for(Flavour.IDM7), [LDAP], ResetOptions(pause_schedules=True))
    assert stub.scheduler_calls == ["pauseJobs", "resumeJobs"]
    assert len(stub.requests_to("/openidm/scheduler/job/liveSync-ldap")) == 1, "sent once"


async def test_the_delete_waits_until_the_running_livesync_of_the_stage_ended(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.livesync_running(LDAP_SOURCE, polls=3)
    stub.livesync_running("system/hr/account", polls=1000)  # another stage's: not waited for
    recorder = Recorder()
    await run_reset(
        client_for(),
        [LDAP],
        ResetOptions(pause_schedules=True, pause_wait_interval=0.01),
        observer=recorder,
    )
    listed = [
        i
        for i, r in enumerate(stub.requests)
        if r.query.get("_action") == "listCurrentlyExecutingJobs"
    ]
    deleted = next(i for i, r in enumerate(stub.requests) if r.method == "DELETE")
    assert len(listed) == 4
    assert max(listed) < deleted
    idle = next(e for e in recorder.events if e.kind == "LiveSyncIdle")
    assert "no liveSync of these stages is running" in idle.message


async def test_the_wait_is_bounded_and_the_reset_goes_on(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.livesync_running(LDAP_SOURCE, polls=10_000)
    recorder = Recorder()
    outcome = await run_reset(
        client_for(),
        [LDAP],
        ResetOptions(pause_schedules=True, pause_wait_timeout=0.1, pause_wait_interval=0.02),
        observer=recorder,
    )
    assert outcome.stages[0].result is StageResult.DELETED
    idle = next(e for e in recorder.events if e.kind == "LiveSyncIdle")
    assert "still running" in idle.message
    assert stub.scheduler_calls[-1] == "resumeJobs"


# --------------------------------------------------------------------------- the directory


@pytest.mark.parametrize(
    "url",
    [
        "ldap://ds.example.com/dc=example",
        "http://ds.example.com",
        "ldap://user:pw@ds.example.com",
        "ldap://ds.example.com:99999",
        "ldap://",
    ],
)
def test_a_directory_url_is_ldap_or_ldaps_host_and_port_only(url: str) -> None:
    with pytest.raises(InvalidSpec):
        parse_ldap_url(url)


def test_the_bind_password_goes_where_an_idm_credential_may() -> None:
    policy = TargetPolicy.from_patterns("ds.example.com", allow_loopback=False)
    LdapDirectory("ldaps://ds.example.com").check_policy(policy)
    LdapDirectory("ldap://ds.example.com", start_tls=True).check_policy(policy)
    LdapDirectory("ldap://ds.identity.svc:389").check_policy(policy, in_cluster_service=True)
    with pytest.raises(TargetNotAllowed, match="in clear"):
        LdapDirectory("ldap://ds.example.com").check_policy(policy)
    with pytest.raises(TargetNotAllowed, match="not in"):
        LdapDirectory("ldaps://other.example.com").check_policy(policy)
    with pytest.raises(TargetNotAllowed, match="metadata"):
        LdapDirectory("ldaps://169.254.169.254").check_policy(policy)
    assert parse_ldap_url("ldaps://DS.example.com") == ("ldaps", "ds.example.com", 636)
    assert parse_ldap_url("ldap://ds:1389") == ("ldap", "ds", 1389)
