"""The controller's service layer in milliseconds: reconcile against the IDM stub and an
in-memory fake of the Kubernetes calls (tests/harness/fake_kube.py), driven the way kopf
drives it (call again after ``retry_in``; the delays are recorded, not slept).

The real API server tests (tests/integration) stay for RBAC, the CRD and process kills.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from idmsync.controller.context import OperatorContext
from idmsync.controller.models import SyncTokenResetStatus
from idmsync.controller.reconcile import Outcome, _Run, check_drift_now, reconcile
from idmsync.controller.settings import OperatorSettings
from idmsync.engine import ChangelogRange, ChangelogReader, LdapDirectory
from tests.harness.fake_kube import FakeKube
from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER, LDAP_SOURCE, LDAP_STAGE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

NAMESPACE, NAME = "identity", "ldap"
RETRY_LIMIT = 2
SPEC = {
    "target": {"service": {"name": "idm", "port": "http"}},
    "auth": {"adminSecretRef": {"name": "idm-admin"}},
    "api": "IDM7",
    "stages": {"sources": [LDAP_SOURCE]},
}
RECORDED = {
    "id": LDAP_STAGE,
    "source": LDAP_SOURCE,
    "step": "Recorded",
    "previousRev": "1",
    "previousToken": 100,
}


class Operator:
    """reconcile() with a fake Kubernetes, the stub behind Service idm, and the Events."""

    def __init__(self, stub: IdmStub) -> None:
        self.kube = FakeKube()
        self.kube.add_service(NAMESPACE, "idm", stub.port)
        self.kube.add_secret(
            NAMESPACE, "idm-admin", {"username": ADMIN_USER, "password": ADMIN_PASSWORD}
        )
        settings = OperatorSettings(
            retry_limit=RETRY_LIMIT,
            retry_backoff=5.0,
            http_attempts=2,
            http_backoff=0.01,
            service_url_template="{scheme}://127.0.0.1:{port}",
        )
        self.context = OperatorContext(settings=settings, kube=self.kube)
        self.events: list[tuple[str, str, str]] = []
        self.delays: list[float] = []

    def post(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    async def reconcile(self) -> Outcome:
        return await reconcile(self.context, NAMESPACE, NAME, self.post)

    async def drive(self) -> Outcome:
        """As kopf: call again after each TemporaryError delay (recorded, not slept)."""
        for _ in range(20):
            outcome = await self.reconcile()
            if outcome.retry_in is None:
                return outcome
            self.delays.append(outcome.retry_in)
        raise AssertionError("reconcile never settled")

    @property
    def status(self) -> dict[str, Any]:
        return self.kube.status(NAMESPACE, NAME)

    def condition(self, type_: str) -> tuple[str, str]:
        found = next(c for c in self.status["conditions"] if c["type"] == type_)
        return found["status"], found["reason"]

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


@pytest.fixture
async def operator(stub: IdmStub) -> AsyncIterator[Operator]:
    harness = Operator(stub)
    yield harness
    await harness.context.close()


async def test_a_reset_succeeds_with_conditions_events_and_the_audit(
    operator: Operator, stub: IdmStub
) -> None:
    operator.kube.add_reset(NAMESPACE, NAME, SPEC)
    await operator.drive()
    status = operator.status
    assert status["phase"] == "Succeeded"
    assert status["attempts"] == 1
    assert "nextRetryTime" not in status
    (stage,) = status["stages"]
    assert (stage["step"], stage["result"], stage["previousRev"], stage["previousToken"]) == (
        "Done",
        "Deleted",
        "1",
        100,
    )
    assert operator.condition("Ready") == ("True", "Succeeded")
    assert operator.condition("Reconciling") == ("False", "Succeeded")
    assert operator.condition("Stalled") == ("False", "Succeeded")
    assert operator.reasons() == ["StageChanged", "Succeeded"]
    assert "(was rev 1, token 100)" in operator.events[0][2]
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1


async def test_the_outcome_event_mirrors_every_step_of_the_try(
    operator: Operator, stub: IdmStub
) -> None:
    """Two Events for a one-stage reset, and every step of the KB procedure is in them."""
    operator.kube.add_reset(NAMESPACE, NAME, SPEC)
    await operator.drive()
    _, reason, message = operator.events[-1]
    assert reason == "Succeeded"
    steps = message.split("[steps: ", 1)[1].rstrip("]").split(", ")
    assert steps == [
        "ServerResolved",
        "StagesSelected",
        f"StageRecorded {LDAP_STAGE}",
        f"StageChanged {LDAP_STAGE}",
        f"LiveSyncTriggered {LDAP_STAGE}",
        f"StageVerified {LDAP_STAGE}",
    ]


async def test_a_dry_run_posts_no_stage_changed_event(operator: Operator, stub: IdmStub) -> None:
    """Nothing changed: the audit Event StageChanged would say otherwise."""
    operator.kube.add_reset(NAMESPACE, NAME, {**SPEC, "dryRun": True})
    await operator.drive()
    assert operator.status["phase"] == "Succeeded"
    (stage,) = operator.status["stages"]
    assert (stage["step"], stage["result"]) == ("Done", "WouldDelete")
    assert operator.reasons() == ["Succeeded"]
    assert f"StageWouldChange {LDAP_STAGE}" in operator.events[-1][2]
    assert "StageChanged" not in operator.events[-1][2]
    assert {r.method for r in stub.requests} == {"GET"}


async def test_a_failure_event_says_how_far_the_try_got_within_an_events_length(
    operator: Operator, stub: IdmStub
) -> None:
    operator.kube.add_reset(NAMESPACE, NAME, SPEC)
    stub.fail_next(50, status=503, method="POST")  # the liveSync trigger
    await operator.drive()
    warnings = [(r, m) for t, r, m in operator.events if t == "Warning"]
    assert warnings, operator.events
    # the first try changed the stage; a later one resumes at the trigger
    assert f"StageChanged {LDAP_STAGE}" in warnings[0][1]
    for _, message in warnings:
        assert "[steps: ServerResolved, StagesSelected" in message
        assert len(message) <= 1024


async def test_a_one_stage_reset_writes_its_status_three_times(
    operator: Operator, stub: IdmStub
) -> None:
    """Before the DELETE, before the liveSync trigger, and the outcome: nothing else."""
    operator.kube.add_reset(NAMESPACE, NAME, SPEC)
    await operator.drive()
    patches = [patch for _, _, patch in operator.kube.patches]
    assert [(p["phase"], [s["step"] for s in p["stages"]]) for p in patches] == [
        ("Running", ["Recorded"]),
        ("Running", ["Changed"]),
        ("Succeeded", ["Done"]),
    ]
    first = patches[0]
    assert (first["attempts"], first["server"]["api"]) == (1, "IDM7")
    assert first["target"].startswith("service/idm:")


async def test_the_intent_is_persisted_before_the_delete_is_sent(
    operator: Operator, stub: IdmStub
) -> None:
    seen_at_delete: list[Any] = []
    stub.delay_after_next(
        1,
        0.0,
        method="DELETE",
        then=lambda: seen_at_delete.append(operator.status["stages"][0]["step"]),
    )
    operator.kube.add_reset(NAMESPACE, NAME, SPEC)
    await operator.drive()
    assert seen_at_delete == ["Recorded"]


async def test_a_finished_reset_runs_again_only_for_a_new_rerun_value(
    operator: Operator, stub: IdmStub
) -> None:
    operator.kube.add_reset(NAMESPACE, NAME, SPEC)
    await operator.drive()
    finished = operator.status
    outcome = await operator.drive()
    assert "already Succeeded" in outcome.message
    assert operator.status == finished
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1

    operator.kube.annotate(NAMESPACE, NAME, "idmsync.dev/rerun", "2")
    await operator.drive()
    assert (operator.status["phase"], operator.status["rerun"]) == ("Succeeded", "2")
    assert operator.status["stages"][0]["previousToken"] == 105
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 2
    assert await operator.drive() == Outcome(
        message="already Succeeded; set idmsync.dev/rerun to run again"
    )


async def test_a_running_status_is_resumed_not_restarted(operator: Operator, stub: IdmStub) -> None:
    running = {"phase": "Running", "startTime": "2026-01-01T00:00:00Z", "attempts": 1}
    operator.kube.add_reset(NAMESPACE, NAME, SPEC, status={**running, "stages": [RECORDED]})
    await operator.drive()
    assert operator.status["startTime"] == "2026-01-01T00:00:00Z"
    assert operator.status["attempts"] == 2, "the killed try counts"
    assert "Started" not in operator.reasons()
    assert [d.header("If-Match") for d in stub.requests_to(STAGE_PATH, "DELETE")] == ["1"]


async def test_a_resumed_reset_spares_a_stage_livesync_recreated(
    operator: Operator, stub: IdmStub
) -> None:
    with stub.lock:
        stub.stages.clear()
    stub.livesync(LDAP_SOURCE)  # recreated at rev "1", token 105
    running = {"phase": "Running", "startTime": "2026-01-01T00:00:00Z", "attempts": 1}
    operator.kube.add_reset(NAMESPACE, NAME, SPEC, status={**running, "stages": [RECORDED]})
    await operator.drive()
    assert stub.requests_to(STAGE_PATH, "DELETE") == []
    (stage,) = operator.status["stages"]
    assert stage["result"] == "Deleted"
    assert "by an earlier run" in stage["message"]


class TestRetryBudget:
    async def test_a_persistent_5xx_sends_one_delete_per_try_and_fails_at_the_limit(
        self, operator: Operator, stub: IdmStub
    ) -> None:
        stub.fail_next(99, 500, method="DELETE")
        operator.kube.add_reset(NAMESPACE, NAME, SPEC)
        await operator.drive()
        tries = RETRY_LIMIT + 1
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == tries
        assert operator.status["attempts"] == tries
        assert operator.status["phase"] == "Failed"
        assert operator.condition("Stalled") == ("True", "ServerError")
        assert operator.condition("Ready") == ("False", "ServerError")
        assert operator.delays == [5.0, 10.0], "backoff doubles per try"
        ready = next(c for c in operator.status["conditions"] if c["type"] == "Ready")
        assert "read back, the stage is unchanged: it was not" in ready["message"]

    async def test_a_waiting_retry_shows_the_try_and_when_the_next_is_due(
        self, operator: Operator, stub: IdmStub
    ) -> None:
        stub.fail_next(1, 500, method="DELETE")
        operator.kube.add_reset(NAMESPACE, NAME, SPEC)
        outcome = await operator.reconcile()
        assert outcome.retry_in == 5.0
        status = operator.status
        assert status["phase"] == "Running"
        assert status["attempts"] == 1
        assert status["nextRetryTime"].endswith("Z")
        reconciling = next(c for c in status["conditions"] if c["type"] == "Reconciling")
        assert (reconciling["status"], reconciling["reason"]) == ("True", "ServerError")
        assert f"try 1 of {RETRY_LIMIT + 1} failed; next at" in reconciling["message"]
        assert operator.events[-1][:2] == ("Warning", "ServerError")

        await operator.drive()
        assert operator.status["phase"] == "Succeeded"
        assert "nextRetryTime" not in operator.status
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 2

    async def test_a_lost_delete_answer_is_read_back_and_the_reset_succeeds(
        self, operator: Operator, stub: IdmStub
    ) -> None:
        stub.drop_after_next(1, method="DELETE", then=lambda: stub.livesync(LDAP_SOURCE))
        operator.kube.add_reset(NAMESPACE, NAME, SPEC)
        await operator.drive()
        assert operator.status["phase"] == "Succeeded"
        assert operator.status["attempts"] == 1
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1
        (stage,) = operator.status["stages"]
        assert stage["result"] == "Deleted"
        assert "answer was lost" in stage["message"]

    async def test_refused_credentials_fail_at_once(
        self, operator: Operator, stub: IdmStub
    ) -> None:
        operator.kube.add_secret(NAMESPACE, "idm-admin", {"username": ADMIN_USER, "password": "x"})
        operator.kube.add_reset(NAMESPACE, NAME, SPEC)
        await operator.drive()
        assert (operator.status["phase"], operator.status["attempts"]) == ("Failed", 1)
        assert operator.condition("Stalled") == ("True", "Unauthorized")
        assert operator.delays == []

    async def test_a_missing_secret_is_requeued_then_fails_without_a_request(
        self, operator: Operator, stub: IdmStub
    ) -> None:
        operator.kube.secrets.clear()
        operator.kube.add_reset(NAMESPACE, NAME, SPEC)
        await operator.drive()
        assert (operator.status["phase"], operator.status["attempts"]) == (
            "Failed",
            RETRY_LIMIT + 1,
        )
        assert operator.condition("Stalled") == ("True", "SecretNotFound")
        assert stub.requests == []


class TestInvalidStatus:
    @pytest.mark.parametrize(
        "status",
        [
            {"phase": "Running", "stages": [{**RECORDED, "step": "Verifying"}]},
            {"phase": "Running", "stages": [{**RECORDED, "previousRev": None}]},
            {"phase": "Running", "stages": [{**RECORDED, "step": "Changed"}]},
            {"phase": "Paused"},
            {"phase": "Running", "attempts": "many"},
            ["not", "an", "object"],
        ],
        ids=[
            "unknown-step",
            "recorded-without-rev",
            "changed-without-result",
            "unknown-phase",
            "bad-attempts",
            "not-an-object",
        ],
    )
    async def test_is_stalled_with_an_event_and_nothing_is_sent(
        self, operator: Operator, stub: IdmStub, status: Any
    ) -> None:
        operator.kube.add_reset(NAMESPACE, NAME, SPEC, status=status)
        outcome = await operator.drive()
        assert stub.requests == []
        assert outcome.retry_in is None
        (patch,) = [p for _, _, p in operator.kube.patches]
        assert set(patch) == {"conditions"}, "nothing but the conditions is touched"
        assert operator.condition("Stalled") == ("True", "InvalidStatus")
        assert operator.condition("Ready") == ("False", "InvalidStatus")
        assert operator.condition("Reconciling") == ("False", "InvalidStatus")
        (event,) = operator.events
        assert event[:2] == ("Warning", "InvalidStatus")
        assert "idmsync.dev/rerun" in event[2]

    async def test_a_new_rerun_value_starts_a_new_reset(
        self, operator: Operator, stub: IdmStub
    ) -> None:
        broken = {"phase": "Running", "stages": [{**RECORDED, "step": "Verifying"}]}
        operator.kube.add_reset(NAMESPACE, NAME, SPEC, status=broken)
        await operator.drive()
        assert stub.requests == []
        operator.kube.annotate(NAMESPACE, NAME, "idmsync.dev/rerun", "after-fix")
        await operator.drive()
        assert (operator.status["phase"], operator.status["rerun"]) == ("Succeeded", "after-fix")
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1

    async def test_unknown_fields_and_unreadable_conditions_are_read_leniently(
        self, operator: Operator, stub: IdmStub
    ) -> None:
        status = {
            "phase": "Running",
            "startTime": "2026-01-01T00:00:00Z",
            "fromANewerOperator": {"x": 1},
            "conditions": [{"type": "Ready"}],
            "stages": [{**RECORDED, "alsoNew": True}],
        }
        operator.kube.add_reset(NAMESPACE, NAME, SPEC, status=status)
        await operator.drive()
        assert operator.status["phase"] == "Succeeded"
        assert operator.status["startTime"] == "2026-01-01T00:00:00Z"
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1

    async def test_recorded_stages_without_a_start_time_are_resumed_not_dropped(
        self, operator: Operator, stub: IdmStub
    ) -> None:
        with stub.lock:
            stub.stages.clear()
        operator.kube.add_reset(
            NAMESPACE, NAME, SPEC, status={"phase": "Running", "stages": [RECORDED]}
        )
        await operator.drive()
        assert stub.requests_to(STAGE_PATH, "DELETE") == []
        assert operator.status["stages"][0]["result"] == "Deleted"
        assert operator.status["startTime"]


# --------------------------------------------------------------------------- drift and catch-up

LDAP_PASSWORD = "dj-Vq2x-never-print-me"
CHECKED_SPEC = {
    **SPEC,
    "when": "OutOfSync",
    "check": {
        "ldap": {"service": {"name": "ds", "port": 1389}, "bindSecretRef": {"name": "ds-reader"}},
        "intervalSeconds": 60,
    },
    "reconcile": {"mapping": "systemLdapAccounts_managedUser"},
}


class DirectoryOf:
    """A fake directory reader over the stub source's changelog; remembers what it was given."""

    def __init__(self, stub: IdmStub) -> None:
        self.stub = stub
        self.directories: list[LdapDirectory] = []

    def __call__(self, directory: LdapDirectory) -> ChangelogReader:
        self.directories.append(directory)
        stub = self.stub

        class Reader:
            where = directory.url

            async def read_range(self) -> ChangelogRange:
                state = stub.sources[LDAP_SOURCE]
                return ChangelogRange(first=state.first, last=state.latest)

            def secret_values(self) -> tuple[str, ...]:
                return (LDAP_PASSWORD,)

        return Reader()


@pytest.fixture
def checked(operator: Operator, stub: IdmStub) -> DirectoryOf:
    directory = DirectoryOf(stub)
    operator.context.changelog_reader = directory
    operator.kube.add_service(NAMESPACE, "ds", 1389)
    operator.kube.add_secret(
        NAMESPACE, "ds-reader", {"bindDN": "cn=Directory Manager", "password": LDAP_PASSWORD}
    )
    stub.add_mapping("systemLdapAccounts_managedUser", LDAP_SOURCE, polls=1)
    return directory


async def test_an_ahead_stage_is_checked_reset_and_caught_up_then_ready(
    operator: Operator, stub: IdmStub, checked: DirectoryOf
) -> None:
    stub.put_stage(LDAP_STAGE, 900)  # above the directory's last change (105)
    operator.kube.add_reset(NAMESPACE, NAME, CHECKED_SPEC)
    await operator.drive()
    status = operator.status
    assert status["phase"] == "Succeeded", status
    (stage,) = status["stages"]
    assert stage["result"] == "Deleted"
    assert stage["check"]["state"] == "Ahead"
    assert (stage["check"]["token"], stage["check"]["lastChangeNumber"]) == (900, 105)
    assert stage["check"]["lag"] == 105 - 900
    assert status["drift"][0]["state"] == "Ahead"
    assert status["lastCheckTime"]
    recon = status["reconciliation"]
    assert (recon["state"], recon["processed"], recon["failed"]) == ("SUCCESS", 3, 0)
    assert recon["situations"] == {"CONFIRMED": 2, "ABSENT": 1}
    assert operator.condition("Ready") == ("True", "Succeeded")
    reasons = operator.reasons()
    assert reasons.index("StageChecked") < reasons.index("StageChanged")
    assert reasons.index("StageChanged") < reasons.index("ReconStarted")
    assert reasons.index("ReconFinished") < reasons.index("Succeeded")
    # the verdict is in the status written before the DELETE
    first = operator.kube.patches[0][2]
    assert (first["stages"][0]["step"], first["drift"][0]["state"]) == ("Recorded", "Ahead")
    (directory,) = checked.directories
    assert directory.url == "ldap://127.0.0.1:1389"
    assert directory.bind_dn == "cn=Directory Manager"
    assert LDAP_PASSWORD not in repr(status) + repr(operator.events)


async def test_an_in_sync_stage_is_left_alone_and_nothing_is_reconciled(
    operator: Operator, stub: IdmStub, checked: DirectoryOf
) -> None:
    stub.put_stage(LDAP_STAGE, 105)
    operator.kube.add_reset(NAMESPACE, NAME, CHECKED_SPEC)
    await operator.drive()
    status = operator.status
    assert status["phase"] == "Succeeded"
    (stage,) = status["stages"]
    assert (stage["result"], stage["check"]["state"]) == ("Skipped", "InSync")
    assert status.get("reconciliation") is None
    assert stub.requests_to(STAGE_PATH, "DELETE") == []
    assert stub.requests_to("/openidm/recon") == []


async def test_a_failed_reconciliation_is_retried_alone_then_fails_with_its_reason(
    operator: Operator, stub: IdmStub, checked: DirectoryOf
) -> None:
    stub.add_mapping("systemLdapAccounts_managedUser", LDAP_SOURCE, polls=0, state="FAILED")
    stub.put_stage(LDAP_STAGE, 900)
    operator.kube.add_reset(NAMESPACE, NAME, CHECKED_SPEC)
    await operator.drive()
    status = operator.status
    assert status["phase"] == "Failed"
    assert operator.condition("Stalled") == ("True", "ReconFailed")
    assert status["reconciliation"]["state"] == "FAILED"
    assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1, "the stage is reset once"
    assert len(stub.requests_to("/openidm/recon", "POST")) == RETRY_LIMIT + 1


async def test_the_periodic_check_refreshes_drift_only_when_due(
    operator: Operator, stub: IdmStub, checked: DirectoryOf
) -> None:
    stub.put_stage(LDAP_STAGE, 105)
    operator.kube.add_reset(NAMESPACE, NAME, CHECKED_SPEC)
    await operator.drive()
    assert "checked recently" in await check_drift_now(
        operator.context, NAMESPACE, NAME, operator.post
    )
    await operator.kube.patch_status(NAMESPACE, NAME, {"lastCheckTime": "2000-01-01T00:00:00Z"})
    stub.add_changes(LDAP_SOURCE, 7)
    outcome = await check_drift_now(operator.context, NAMESPACE, NAME, operator.post)
    assert outcome == f"checked: {LDAP_STAGE} InSync"
    (drift,) = operator.status["drift"]
    assert (drift["state"], drift["lag"]) == ("InSync", 7)
    assert operator.status["lastCheckTime"] != "2000-01-01T00:00:00Z"
    assert stub.requests_to(STAGE_PATH, "DELETE") == [], "a check never resets"


def test_the_steps_of_a_long_try_are_cut_to_an_events_length_and_counted(
    operator: Operator,
) -> None:
    run = _Run(operator.context, NAMESPACE, NAME, SyncTokenResetStatus())
    run.steps = [f"StageVerified source{i}_managedUser" for i in range(100)]
    message = run.with_steps("3 of 100 stages failed: ServerError")
    assert len(message) <= 1024
    shown = message.split("[steps: ", 1)[1].rstrip("]").split(", ")
    left = int(shown[-1].split()[1])
    assert shown[-1] == f"and {left} more"
    assert len(shown) - 1 + left == 100
