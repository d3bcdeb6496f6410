"""The reset workflow against the IDM stub: each error class ends as documented."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from idmsync.auth import AdminCredentials, Secret
from idmsync.engine import (
    Action,
    Event,
    Flavour,
    IdmClient,
    ResetOptions,
    RetryPolicy,
    ServerVersions,
    StageProgress,
    StageRef,
    StageResult,
    Step,
    make_http_client,
    run_reset,
    select_stages,
    workflow,
)
from idmsync.errors import (
    Forbidden,
    InvalidSpec,
    LiveSyncFailed,
    NotFound,
    ProtocolError,
    RevisionConflict,
    ServerError,
    ServerUnreachable,
    Unauthorized,
    VerifyTimeout,
)
from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER, LDAP_SOURCE, LDAP_STAGE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
LDAP = StageRef(LDAP_STAGE, LDAP_SOURCE)
ClientFactory = Callable[..., IdmClient]


@pytest.fixture
async def client_for(stub: IdmStub) -> AsyncIterator[ClientFactory]:
    versions = ServerVersions()  # shared, as the operator's context shares it
    async with make_http_client(timeout=2.0) as http:

        def make(
            flavour: Flavour = Flavour.IDM7, password: str = ADMIN_PASSWORD, url: str = stub.url
        ) -> IdmClient:
            credentials = AdminCredentials(ADMIN_USER, Secret(password))
            return IdmClient(url, credentials, http, flavour=flavour, retry=FAST, versions=versions)

        yield make


async def test_a_reset_reads_deletes_with_the_read_rev_triggers_and_reads_back(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    events: list[Event] = []

    async def observe(event: Event) -> None:
        events.append(event)

    outcome = await run_reset(client_for(), [LDAP], ResetOptions(), observer=observe)

    assert stub.steps() == [
        f"GET {STAGE_PATH}",
        f"DELETE {STAGE_PATH}",
        f"POST {LDAP_SOURCE}",
        f"GET {STAGE_PATH}",
    ]
    assert stub.requests[1].header("If-Match") == "1"
    (stage,) = outcome.stages
    assert (stage.result, stage.previous_rev, stage.previous_token) == (
        StageResult.DELETED,
        "1",
        100,
    )
    assert (stage.new_token, stage.triggered, stage.step) == (105, True, Step.DONE)
    assert stub.sources[LDAP_SOURCE].applied == [], "a deleted stage restarts at latest, no replay"
    kinds = [e.kind for e in events]
    assert (
        kinds.index("StageRecorded")
        < kinds.index("StageChanged")
        < kinds.index("LiveSyncTriggered")
        < kinds.index("StageVerified")
    )
    recorded = next(e for e in events if e.kind == "StageRecorded")
    assert recorded.stage is not None
    assert recorded.stage.previous_token == 100


async def test_no_session_cookie_is_ever_sent_back(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    await run_reset(client_for(), [LDAP], ResetOptions())
    assert all(r.header("X-OpenIDM-NoSession") == "true" for r in stub.requests)
    assert [r.header("Cookie") for r in stub.requests] == [None] * len(stub.requests)


@pytest.mark.parametrize(
    ("flavour", "api_version"),
    [
        (Flavour.IDM7, "resource=1.0"),
        (Flavour.IDENTITY_CLOUD, "resource=1.0"),
        (Flavour.LEGACY, None),
    ],
)
async def test_each_flavour_sends_its_headers_and_list_query(
    stub: IdmStub, client_for: ClientFactory, flavour: Flavour, api_version: str | None
) -> None:
    refs = await select_stages(client_for(flavour), all_stages=True)
    await run_reset(client_for(flavour), refs, ResetOptions(trigger=False, verify=False))

    assert refs == [StageRef(LDAP_STAGE)]
    assert {r.header("Accept-API-Version") for r in stub.requests} == {api_version}
    query = stub.requests[0].query
    if flavour is Flavour.LEGACY:
        assert query == {"_queryId": "query-all-ids"}
    else:
        assert query == {"_queryFilter": "true", "_fields": "_id"}


async def test_auto_reads_info_version_once_per_server_and_picks_the_dialect(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.version = "6.5.0"
    for _ in range(3):
        info = await client_for(Flavour.AUTO).server_info()
    assert (info.flavour, info.version) == (Flavour.LEGACY, "6.5.0")
    assert len(stub.requests_to("info/version")) == 1

    # a client on its own (the CLI's run) has its own cache: it reads the version once
    stub.version = "7.1.0"
    async with make_http_client(timeout=2.0) as http:
        credentials = AdminCredentials(ADMIN_USER, Secret(ADMIN_PASSWORD))
        alone = IdmClient(stub.url, credentials, http, flavour=Flavour.AUTO, retry=FAST)
        for _ in range(3):
            info = await alone.server_info()
        assert await alone.version() == "7.1.0"
    assert (info.flavour, info.version) == (Flavour.IDM7, "7.1.0")
    assert len(stub.requests_to("info/version")) == 2


async def test_a_stale_rev_is_reread_and_retried(stub: IdmStub, client_for: ClientFactory) -> None:
    stub.bump_rev_before_next(1)
    outcome = await run_reset(client_for(), [LDAP], ResetOptions(verify=False))
    deletes = stub.requests_to(STAGE_PATH, "DELETE")
    assert [d.header("If-Match") for d in deletes] == ["1", "2"]
    assert outcome.stages[0].previous_rev == "2", "the record is of the rev actually deleted"
    assert outcome.stages[0].result is StageResult.DELETED


async def test_a_stage_that_keeps_changing_gives_up_after_a_bounded_number_of_tries(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.bump_rev_before_next(100)
    with pytest.raises(RevisionConflict, match="3 times"):
        await run_reset(client_for(), [LDAP], ResetOptions(max_stale_retries=2))
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 3
    assert stub.stage(LDAP_STAGE) is not None


async def test_409_is_a_protocol_error_and_not_retried(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.fail_next(1, 409, method="DELETE")
    with pytest.raises(ProtocolError, match="409"):
        await run_reset(client_for(), [LDAP], ResetOptions())
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1


@pytest.mark.parametrize(("status", "error"), [(401, Unauthorized), (403, Forbidden)])
async def test_auth_refusals_are_not_retried(
    stub: IdmStub, client_for: ClientFactory, status: int, error: type[Exception]
) -> None:
    stub.fail_next(5, status)
    with pytest.raises(error):
        await run_reset(client_for(), [LDAP], ResetOptions())
    assert len(stub.requests) == 1


async def test_a_wrong_password_is_unauthorized_and_the_message_holds_no_secret(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    with pytest.raises(Unauthorized) as caught:
        await run_reset(client_for(password="wrong-Pa55-value"), [LDAP], ResetOptions())
    assert "wrong-Pa55-value" not in str(caught.value)
    assert len(stub.requests) == 1


async def test_5xx_is_retried_with_backoff_then_succeeds(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.fail_next(2, 503, method="DELETE")
    outcome = await run_reset(client_for(), [LDAP], ResetOptions(verify=False))
    assert outcome.stages[0].result is StageResult.DELETED
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 3


async def test_5xx_that_persists_ends_as_server_error_after_the_retry_budget(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.fail_next(100, 500, method="GET")
    with pytest.raises(ServerError):
        await run_reset(client_for(), [LDAP], ResetOptions())
    assert len(stub.requests) == FAST.attempts


async def test_a_dropped_connection_is_retried(stub: IdmStub, client_for: ClientFactory) -> None:
    stub.drop_next(1, method="GET")
    outcome = await run_reset(client_for(), [LDAP], ResetOptions(verify=False))
    assert outcome.stages[0].result is StageResult.DELETED


async def test_a_refused_connection_is_server_unreachable(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    port = stub.port
    stub.stop()
    with pytest.raises(ServerUnreachable, match="ConnectError"):
        await run_reset(client_for(url=f"http://127.0.0.1:{port}"), [LDAP], ResetOptions())


async def test_a_slow_server_times_out_as_server_unreachable(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.delay_next(10, 1.0, method="GET")
    async with make_http_client(timeout=0.2) as http:
        credentials = AdminCredentials(ADMIN_USER, Secret(ADMIN_PASSWORD))
        client = IdmClient(stub.url, credentials, http, flavour=Flavour.IDM7, retry=FAST)
        with pytest.raises(ServerUnreachable, match="timed out"):
            await run_reset(client, [LDAP], ResetOptions())
    assert len(stub.requests) == FAST.attempts


async def test_malformed_json_names_what_was_wrong(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.malformed_next(1, method="GET")
    with pytest.raises(ProtocolError, match="not JSON"):
        await run_reset(client_for(), [LDAP], ResetOptions())


async def test_a_stage_without_a_rev_is_an_unexpected_shape(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    with stub.lock:
        del stub.stages[LDAP_STAGE]["_rev"]
    with pytest.raises(ProtocolError, match="no '_rev'"):
        await run_reset(client_for(), [LDAP], ResetOptions())


async def test_a_missing_stage_is_already_absent_and_livesync_still_recreates_it(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    with stub.lock:
        stub.stages.clear()
    outcome = await run_reset(client_for(), [LDAP], ResetOptions())
    (stage,) = outcome.stages
    assert (stage.result, stage.new_token) == (StageResult.ALREADY_ABSENT, 105)
    assert stub.requests_to(STAGE_PATH, "DELETE") == []


async def test_a_404_on_delete_is_already_absent(stub: IdmStub, client_for: ClientFactory) -> None:
    stub.fail_next(1, 404, method="DELETE")
    outcome = await run_reset(client_for(), [LDAP], ResetOptions(verify=False))
    assert outcome.stages[0].result is StageResult.ALREADY_ABSENT


async def test_dry_run_only_reads(stub: IdmStub, client_for: ClientFactory) -> None:
    outcome = await run_reset(
        client_for(), [LDAP], ResetOptions(dry_run=True, pause_schedules=True)
    )
    assert {r.method for r in stub.requests} == {"GET"}
    assert outcome.stages[0].result is StageResult.WOULD_DELETE
    assert stub.stage(LDAP_STAGE) is not None


async def test_a_dry_run_says_what_would_change_and_never_that_it_changed(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    events: list[Event] = []

    async def observe(event: Event) -> None:
        events.append(event)

    await run_reset(client_for(), [LDAP], ResetOptions(dry_run=True), observer=observe)
    kinds = [e.kind for e in events]
    assert "StageChanged" not in kinds
    (would,) = [e for e in events if e.kind == "StageWouldChange"]
    assert would.stage is not None
    assert (would.stage.result, would.stage.previous_token) == (StageResult.WOULD_DELETE, 100)


async def test_set_writes_the_token_and_livesync_replays_from_it(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    outcome = await run_reset(client_for(), [LDAP], ResetOptions(action=Action.SET, token=102))
    put = stub.requests_to(STAGE_PATH, "PUT")[0]
    assert put.header("If-Match") == "1"
    assert put.body["connectorData"] == {"nativeType": "integer", "syncToken": 102}
    assert stub.sources[LDAP_SOURCE].applied == [103, 104, 105]
    assert (outcome.stages[0].result, outcome.stages[0].new_token) == (StageResult.SET, 105)


async def test_set_without_a_token_and_a_token_without_set_are_refused(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    with pytest.raises(InvalidSpec):
        await run_reset(client_for(), [LDAP], ResetOptions(action=Action.SET))
    with pytest.raises(InvalidSpec):
        await run_reset(client_for(), [LDAP], ResetOptions(token=5))
    assert stub.requests == []


async def test_livesync_reporting_an_exception_fails_the_stage(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    stub.sources[LDAP_SOURCE].livesync_error = "Connection refused to ldap://dj:1389"
    with pytest.raises(LiveSyncFailed, match="Connection refused"):
        await run_reset(client_for(), [LDAP], ResetOptions())


async def test_an_unknown_source_is_not_found(stub: IdmStub, client_for: ClientFactory) -> None:
    with pytest.raises(NotFound, match="404"):
        await run_reset(client_for(), [StageRef("SYSTEMXY", "system/x/y")], ResetOptions())


async def test_verify_times_out_when_nothing_recreates_the_stage(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    options = ResetOptions(trigger=False, verify=True, verify_timeout=0.3, verify_interval=0.1)
    with pytest.raises(VerifyTimeout, match="not triggered"):
        await run_reset(client_for(), [LDAP], options)


async def test_without_a_trigger_the_stage_goes_from_changed_to_done_never_triggered(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    """Step Triggered means liveSync was asked to run: without a trigger it is never set."""
    steps: list[Step] = []

    async def observe(event: Event) -> None:
        if event.stage is not None:
            steps.append(event.stage.step)
        if event.kind == "StageChanged":  # a scheduled liveSync recreates the stage
            stub.put_stage(LDAP_STAGE, 105)

    options = ResetOptions(trigger=False, verify=True, verify_timeout=2.0, verify_interval=0.05)
    outcome = await run_reset(client_for(), [LDAP], options, observer=observe)
    (stage,) = outcome.stages
    assert (stage.step, stage.triggered, stage.new_token) == (Step.DONE, False, 105)
    assert steps == [Step.RECORDED, Step.CHANGED, Step.DONE]
    assert stub.requests_to(LDAP_SOURCE, "POST") == []
    # the trigger step itself, which posts no Event when it is skipped: the stage stays Changed
    changed = StageProgress(LDAP_STAGE, LDAP_SOURCE, Step.CHANGED, result=StageResult.DELETED)
    after = await workflow._trigger(client_for(), changed, options, observe)
    assert (after.step, after.triggered) == (Step.CHANGED, False)


async def test_ids_without_a_source_are_reset_but_not_triggered(
    stub: IdmStub, client_for: ClientFactory
) -> None:
    outcome = await run_reset(client_for(), [StageRef(LDAP_STAGE)], ResetOptions())
    (stage,) = outcome.stages
    assert (stage.result, stage.triggered, stage.step) == (StageResult.DELETED, False, Step.DONE)
    assert stub.requests_to(LDAP_SOURCE, "POST") == []


class TestPauseSchedules:
    async def test_paused_around_the_reset_and_resumed(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        await run_reset(client_for(), [LDAP], ResetOptions(pause_schedules=True))
        assert stub.scheduler_calls == ["pauseJobs", "resumeJobs"]
        steps = stub.steps()
        first_stage_call = next(i for i, step in enumerate(steps) if STAGE_PATH in step)
        assert "POST scheduler/job" in steps[:first_stage_call]
        assert steps[-1] == "POST scheduler/job"

    async def test_resumed_when_the_reset_fails(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.fail_next(1, 409, method="DELETE")
        with pytest.raises(ProtocolError):
            await run_reset(client_for(), [LDAP], ResetOptions(pause_schedules=True))
        assert stub.scheduler_calls == ["pauseJobs", "resumeJobs"]
        assert not stub.scheduler_paused

    async def test_a_failed_reset_whose_resume_fails_too_says_the_scheduler_may_be_paused(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        """Found by the fault matrix (token-refused-endpoint-down): the reset's error was
        raised alone and the still-paused scheduler was only logged."""
        stub.fail_next(1, 409, method="DELETE")

        async def scheduler_fails_once_paused(event: Event) -> None:
            if event.kind == "SchedulerPaused":
                stub.fail_next(99, 503, method="POST", path="scheduler")

        with pytest.raises(ProtocolError, match=r"409.*; the IDM scheduler may still be paused"):
            await run_reset(
                client_for(),
                [LDAP],
                ResetOptions(pause_schedules=True),
                observer=scheduler_fails_once_paused,
            )
        assert stub.scheduler_paused

    async def test_a_refused_pause_is_not_followed_by_a_resume(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.fail_next(1, 401, method="POST", path="scheduler")
        with pytest.raises(Unauthorized):
            await run_reset(client_for(), [LDAP], ResetOptions(pause_schedules=True))
        assert stub.scheduler_calls == []

    async def test_resumed_when_the_reset_is_cancelled(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.delay_next(1, 5.0, method="POST", path=LDAP_SOURCE)
        task = asyncio.create_task(
            run_reset(client_for(), [LDAP], ResetOptions(pause_schedules=True))
        )
        while not stub.requests_to(LDAP_SOURCE, "POST"):  # noqa: ASYNC110 - the stub runs in another thread
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stub.scheduler_calls == ["pauseJobs", "resumeJobs"]


class TestResume:
    """Recorded progress makes a second run skip what the first already did."""

    async def test_recorded_with_the_same_rev_means_the_delete_did_not_happen(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        progress = StageProgress(LDAP_STAGE, LDAP_SOURCE, Step.RECORDED, "1", 100)
        outcome = await run_reset(
            client_for(), [LDAP], ResetOptions(), progress={LDAP_STAGE: progress}
        )
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1
        assert outcome.stages[0].result is StageResult.DELETED

    async def test_recorded_but_recreated_by_livesync_is_not_deleted_again(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        # the first run deleted rev 0 and died; a scheduled liveSync recreated the stage
        with stub.lock:
            stub.stages.clear()
        stub.put_stage(LDAP_STAGE, 105)
        stub.put_stage(LDAP_STAGE, 105)  # now at rev 1
        progress = StageProgress(LDAP_STAGE, LDAP_SOURCE, Step.RECORDED, "1", 100)
        outcome = await run_reset(
            client_for(), [LDAP], ResetOptions(), progress={LDAP_STAGE: progress}
        )
        assert stub.requests_to(STAGE_PATH, "DELETE") == []
        (stage,) = outcome.stages
        assert (stage.result, stage.previous_token, stage.step) == (
            StageResult.DELETED,
            100,
            Step.DONE,
        )

    async def test_recreated_with_the_same_rev_but_a_new_token_is_not_deleted_again(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        # deleted, then recreated by liveSync at rev 0 again: only the token differs
        with stub.lock:
            stub.stages.clear()
        stub.put_stage(LDAP_STAGE, 105)
        progress = StageProgress(LDAP_STAGE, LDAP_SOURCE, Step.RECORDED, "1", 100)
        outcome = await run_reset(
            client_for(), [LDAP], ResetOptions(), progress={LDAP_STAGE: progress}
        )
        assert stub.requests_to(STAGE_PATH, "DELETE") == []
        assert outcome.stages[0].result is StageResult.DELETED

    async def test_recorded_and_absent_means_the_delete_happened(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        with stub.lock:
            stub.stages.clear()
        progress = StageProgress(LDAP_STAGE, LDAP_SOURCE, Step.RECORDED, "1", 100)
        outcome = await run_reset(
            client_for(), [LDAP], ResetOptions(), progress={LDAP_STAGE: progress}
        )
        assert stub.requests_to(STAGE_PATH, "DELETE") == []
        assert outcome.stages[0].result is StageResult.DELETED
        assert outcome.stages[0].new_token == 105

    async def test_changed_goes_straight_to_the_trigger(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        progress = StageProgress(
            LDAP_STAGE, LDAP_SOURCE, Step.CHANGED, "1", 100, result=StageResult.DELETED
        )
        await run_reset(client_for(), [LDAP], ResetOptions(), progress={LDAP_STAGE: progress})
        assert stub.steps() == [f"POST {LDAP_SOURCE}", f"GET {STAGE_PATH}"]

    async def test_done_stages_are_left_alone(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        progress = StageProgress(LDAP_STAGE, LDAP_SOURCE, Step.DONE, "1", 100, StageResult.DELETED)
        outcome = await run_reset(
            client_for(), [LDAP], ResetOptions(), progress={LDAP_STAGE: progress}
        )
        assert stub.requests == []
        assert outcome.stages[0] == progress


class TestLostAnswers:
    """A change whose answer never came is read back, recorded as what happened, never resent
    blindly."""

    async def test_a_delete_carried_out_but_unanswered_is_recorded_deleted_and_not_resent(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.drop_after_next(1, method="DELETE")
        outcome = await run_reset(client_for(), [LDAP], ResetOptions())
        assert stub.steps() == [
            f"GET {STAGE_PATH}",
            f"DELETE {STAGE_PATH}",
            f"GET {STAGE_PATH}",
            f"POST {LDAP_SOURCE}",
            f"GET {STAGE_PATH}",
        ]
        (stage,) = outcome.stages
        assert (stage.result, stage.previous_rev, stage.previous_token, stage.step) == (
            StageResult.DELETED,
            "1",
            100,
            Step.DONE,
        )
        assert stage.message is not None
        assert "answer was lost" in stage.message

    async def test_a_stage_livesync_recreated_at_rev_1_after_a_lost_delete_is_spared(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        # the scheduler's liveSync runs between our DELETE and its (lost) answer: the new
        # stage has rev "1" again, so a blind retry with If-Match "1" would delete it
        stub.drop_after_next(1, method="DELETE", then=lambda: stub.livesync(LDAP_SOURCE))
        outcome = await run_reset(client_for(), [LDAP], ResetOptions(trigger=False, verify=False))
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1
        assert stub.stage(LDAP_STAGE) == {
            "_id": LDAP_STAGE,
            "_rev": "1",
            "connectorData": {"nativeType": "integer", "syncToken": 105},
        }
        assert outcome.stages[0].result is StageResult.DELETED
        assert "rev 1 with token 105" in (outcome.stages[0].message or "")

    async def test_a_delete_dropped_before_it_was_carried_out_is_sent_again(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.drop_next(1, method="DELETE")
        outcome = await run_reset(client_for(), [LDAP], ResetOptions(verify=False))
        deletes = stub.requests_to(STAGE_PATH, "DELETE")
        assert [d.header("If-Match") for d in deletes] == ["1", "1"]
        assert stub.steps()[:4] == [
            f"GET {STAGE_PATH}",
            f"DELETE {STAGE_PATH}",
            f"GET {STAGE_PATH}",
            f"DELETE {STAGE_PATH}",
        ], "read back before sending it again"
        assert outcome.stages[0].result is StageResult.DELETED
        assert outcome.stages[0].message is None

    async def test_a_delete_that_timed_out_after_it_was_carried_out_is_recorded_deleted(
        self, stub: IdmStub
    ) -> None:
        stub.delay_after_next(1, 1.0, method="DELETE")
        async with make_http_client(timeout=0.2) as http:
            credentials = AdminCredentials(ADMIN_USER, Secret(ADMIN_PASSWORD))
            client = IdmClient(stub.url, credentials, http, flavour=Flavour.IDM7, retry=FAST)
            outcome = await run_reset(client, [LDAP], ResetOptions(verify=False))
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1
        assert outcome.stages[0].result is StageResult.DELETED
        assert "answer was lost (ServerUnreachable)" in (outcome.stages[0].message or "")

    async def test_a_5xx_on_delete_is_read_back_before_it_is_sent_again(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.fail_next(1, 503, method="DELETE")
        await run_reset(client_for(), [LDAP], ResetOptions(trigger=False, verify=False))
        assert stub.steps() == [
            f"GET {STAGE_PATH}",
            f"DELETE {STAGE_PATH}",
            f"GET {STAGE_PATH}",
            f"DELETE {STAGE_PATH}",
        ]

    async def test_one_try_per_run_means_one_delete_per_run(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        """The operator's setting: the controller, not the engine, decides to try again."""
        stub.fail_next(99, 500, method="DELETE")
        with pytest.raises(ServerError, match=r"unchanged: it was not \(tried 1 time\)") as caught:
            await run_reset(client_for(), [LDAP], ResetOptions(change_attempts=1))
        assert caught.value.requeue
        assert not caught.value.outcome_unknown
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1

    async def test_changes_that_keep_failing_unchanged_stop_at_the_budget(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.drop_next(99, method="DELETE")
        with pytest.raises(ServerUnreachable, match=r"tried 2 times"):
            await run_reset(client_for(), [LDAP], ResetOptions(change_attempts=2))
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 2
        assert stub.stage(LDAP_STAGE) is not None

    async def test_a_lost_answer_whose_read_back_fails_says_so(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.drop_after_next(1, method="DELETE", then=lambda: stub.fail_next(99, 503, method="GET"))
        with pytest.raises(ServerError, match=r"answer was lost .* reading the stage back failed"):
            await run_reset(client_for(), [LDAP], ResetOptions())
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1

    async def test_a_set_carried_out_but_unanswered_is_recorded_set_and_not_resent(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.drop_after_next(1, method="PUT")
        outcome = await run_reset(client_for(), [LDAP], ResetOptions(action=Action.SET, token=102))
        assert len(stub.requests_to(STAGE_PATH, "PUT")) == 1
        assert outcome.stages[0].result is StageResult.SET
        assert stub.sources[LDAP_SOURCE].applied == [103, 104, 105]

    async def test_a_livesync_trigger_carried_out_but_unanswered_is_not_resent(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.drop_after_next(1, method="POST", path=LDAP_SOURCE)
        outcome = await run_reset(client_for(), [LDAP], ResetOptions())
        assert len(stub.requests_to(LDAP_SOURCE, "POST")) == 1
        (stage,) = outcome.stages
        assert (stage.triggered, stage.new_token, stage.step) == (True, 105, Step.DONE)

    async def test_a_livesync_trigger_after_a_set_whose_answer_is_lost_is_not_resent(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.drop_after_next(1, method="POST", path=LDAP_SOURCE)
        await run_reset(client_for(), [LDAP], ResetOptions(action=Action.SET, token=102))
        assert len(stub.requests_to(LDAP_SOURCE, "POST")) == 1
        assert stub.sources[LDAP_SOURCE].applied == [103, 104, 105], "replayed once"

    async def test_a_livesync_trigger_dropped_before_it_ran_is_sent_again(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.drop_next(1, method="POST", path=LDAP_SOURCE)
        outcome = await run_reset(client_for(), [LDAP], ResetOptions())
        assert len(stub.requests_to(LDAP_SOURCE, "POST")) == 2
        assert outcome.stages[0].new_token == 105

    async def test_a_pause_whose_answer_is_lost_is_sent_again_and_always_resumed(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.drop_after_next(1, method="POST", path="scheduler")
        await run_reset(client_for(), [LDAP], ResetOptions(pause_schedules=True))
        assert stub.scheduler_calls == ["pauseJobs", "pauseJobs", "resumeJobs"]
        assert not stub.scheduler_paused

    async def test_a_pause_that_fails_for_good_is_still_followed_by_a_resume(
        self, stub: IdmStub, client_for: ClientFactory
    ) -> None:
        stub.drop_after_next(FAST.attempts, method="POST", path="scheduler")
        with pytest.raises(ServerUnreachable):
            await run_reset(client_for(), [LDAP], ResetOptions(pause_schedules=True))
        assert stub.scheduler_calls == ["pauseJobs"] * FAST.attempts + ["resumeJobs"]
        assert not stub.scheduler_paused
        assert stub.requests_to(STAGE_PATH, "DELETE") == []
