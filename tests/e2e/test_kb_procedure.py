"""The KB article end to end against real OpenIDM and OpenDJ: operator and CLI.

A liveSync has made stage SYSTEMLDAPACCOUNT with token N (an OpenDJ change
number). A reset records N and the rev, deletes the stage with If-Match, and
liveSync recreates it at the directory's latest change number; a change made
in OpenDJ afterwards reaches the managed user on the next liveSync.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import STAGE, Idm, change_phone, operator_namespace
from tests.harness.controlplane import ControlPlane
from tests.harness.openidm import RealIDM
from tests.harness.operator_process import IDMSYNC, OperatorProcess
from tests.integration.conftest import get_reset, reset_manifest, wait_phase

pytestmark = pytest.mark.openidm


def assert_the_change_flows_after_the_reset(idm: Idm, real: RealIDM, new_token: int) -> None:
    assert new_token == real.last_change_number(), "recreated at the latest change number"
    phone, _ = change_phone(real, "bjensen")
    idm.livesync()
    assert idm.managed_phone("bjensen") == phone, "liveSync picks up changes again"


def test_the_operator_resets_a_real_stage(
    idm: Idm, real_idm: RealIDM, control_plane: ControlPlane, tmp_path: Path
) -> None:
    namespace, port = operator_namespace(control_plane, real_idm, "kb")
    kubectl = control_plane.kubectl
    before = idm.stage()
    assert before is not None
    operator = OperatorProcess(
        control_plane.kubeconfig, tmp_path / "operator.log", namespaces=namespace
    ).start()
    try:
        spec = {
            "target": {"service": {"name": "idm", "port": port}},
            "auth": {"adminSecretRef": {"name": "idm-admin"}},
            "stages": {"sources": [real_idm.ldap_source]},
        }
        kubectl.apply(reset_manifest("kb", namespace, spec))
        body = wait_phase(kubectl, namespace, "kb", ("Succeeded", "Failed"), timeout=180)
    finally:
        operator.stop()
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    assert status["server"]["api"] == "Legacy"
    assert status["server"]["version"] == real_idm.openidm_version
    (stage,) = status["stages"]
    assert stage["previousRev"] == before["_rev"]
    assert stage["previousToken"] == before["connectorData"]["syncToken"]
    assert stage["result"] == "Deleted"
    assert_the_change_flows_after_the_reset(idm, real_idm, stage["liveSync"]["newToken"])
    assert get_reset(kubectl, namespace, "kb")["status"]["phase"] == "Succeeded"


def cli(real: RealIDM, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IDM_USERNAME": real.admin_user, "IDM_PASSWORD": real.admin_password}
    return subprocess.run(
        [IDMSYNC, *args, "--url", real.idm_url, "--output", "json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("api", ["idm7", "legacy", "auto"])
def test_the_cli_resets_a_real_stage_in_each_dialect(idm: Idm, real_idm: RealIDM, api: str) -> None:
    before = idm.stage()
    assert before is not None
    result = cli(real_idm, "reset", "--api", api, "--source", real_idm.ldap_source)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    expected_api = {"idm7": "IDM7", "legacy": "Legacy", "auto": "Legacy"}[api]
    assert outcome["server"]["api"] == expected_api
    (stage,) = outcome["stages"]
    assert (stage["previous_rev"], stage["previous_token"]) == (
        before["_rev"],
        before["connectorData"]["syncToken"],
    )
    assert_the_change_flows_after_the_reset(idm, real_idm, stage["new_token"])
    assert real_idm.admin_password not in result.stdout + result.stderr


def test_set_to_an_earlier_change_number_replays_the_changes_since(
    idm: Idm, real_idm: RealIDM
) -> None:
    idm.livesync()
    earlier = real_idm.last_change_number()
    phones = [change_phone(real_idm, user)[0] for user in ("scarter", "tmorris")]
    # wind the stage back as if the changes had been missed, then replay from there
    result = cli(real_idm, "reset", "--source", real_idm.ldap_source, "--set-token", str(earlier))
    assert result.returncode == 0, result.stderr
    assert [idm.managed_phone(u) for u in ("scarter", "tmorris")] == phones


def test_dry_run_changes_nothing(idm: Idm, real_idm: RealIDM) -> None:
    before = idm.stage()
    result = cli(real_idm, "reset", "--source", real_idm.ldap_source, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stages"][0]["result"] == "WouldDelete"
    assert idm.stage() == before


def test_pause_schedules_pauses_and_always_resumes(idm: Idm, real_idm: RealIDM) -> None:
    # a reset that fails after the pause (an unknown source) must still resume the scheduler
    failed = cli(
        real_idm, "reset", "-v", "--pause-schedules", "--source", "system/ldap/nosuchtype",
        "--retries", "1",
    )  # fmt: skip
    assert failed.returncode != 0
    assert "NotFound" in failed.stderr
    ok = cli(real_idm, "reset", "-v", "--pause-schedules", "--source", real_idm.ldap_source)
    assert ok.returncode == 0, ok.stderr
    for run in (failed, ok):
        paused = run.stderr.index("SchedulerPaused")
        assert run.stderr.index("SchedulerResumed") > paused
    calls = [line for line in (failed.stderr + ok.stderr).splitlines() if "scheduler/job" in line]
    assert sum("pauseJobs" in c for c in calls) == sum("resumeJobs" in c for c in calls) == 2
    assert all('"HTTP/1.1 200 OK"' in c for c in calls), calls


async def test_a_reset_racing_a_livesync_loop_ends_correct_20_times_in_a_row(
    idm: Idm, real_idm: RealIDM
) -> None:
    from idmsync.auth import AdminCredentials, Secret
    from idmsync.engine import (
        Flavour,
        IdmClient,
        ResetOptions,
        StageRef,
        StageResult,
        make_http_client,
        run_reset,
    )

    stop = asyncio.Event()
    outcomes: list[int] = []

    async with make_http_client(timeout=120) as http:

        async def livesync_loop() -> None:
            url = f"{real_idm.idm_url}/openidm/{real_idm.ldap_source}"
            for _ in range(2000):  # bounded, whatever happens
                if stop.is_set():
                    return
                response = await http.post(
                    url, params={"_action": "liveSync"}, headers=real_idm.admin_headers
                )
                outcomes.append(response.status_code)

        client = IdmClient(
            real_idm.idm_url,
            AdminCredentials(real_idm.admin_user, Secret(real_idm.admin_password)),
            http,
            flavour=Flavour.LEGACY,
        )
        loop_task = asyncio.create_task(livesync_loop())
        results = []
        try:
            # At least 20 resets, and keep resetting until the loop has also run 20 times while
            # they did (on a loaded machine either side can be the slower one).
            while len(results) < 20 or len(outcomes) < 20:
                assert len(results) < 200, f"the liveSync loop ran only {len(outcomes)} times"
                outcome = await run_reset(
                    client, [StageRef(STAGE, real_idm.ldap_source)], ResetOptions(verify_timeout=60)
                )
                results.append(outcome.stages[0])
        finally:
            stop.set()
            await loop_task
    assert [r.result for r in results] == [StageResult.DELETED] * len(results)
    assert all(r.new_token is not None for r in results)
    final = idm.stage()
    assert final is not None
    assert final["connectorData"]["syncToken"] == real_idm.last_change_number()
    # the loop really raced: it ran throughout the resets
    assert len(outcomes) >= 20
    print(f"liveSync loop: {len(outcomes)} runs, statuses {sorted(set(outcomes))}")
