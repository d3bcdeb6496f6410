"""Drift check, conditional reset and catch-up against real OpenIDM 6.1.0 and OpenDJ 4.6.4.

The directory events are real: the token goes Ahead because OpenDJ's changelog database is
rebuilt (stop, delete ``changelogDb/``, start: change numbers start again at 1), and Trimmed
because the replication server purges its changelog after a one-second purge delay. Nothing
writes the stage's token through REST to fake either state.

These tests share the session's servers with the other e2e tests: each leaves the LDAP stage
in sync with the directory (and the purge delay at its default) when it ends, pass or fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MAPPING, STAGE, Idm, change_phone, operator_namespace
from tests.harness.controlplane import ControlPlane
from tests.harness.openidm import RealIDM
from tests.harness.operator_process import IDMSYNC, OperatorProcess
from tests.integration.conftest import events, get_reset, reset_manifest, wait_for, wait_phase

pytestmark = [pytest.mark.openidm, pytest.mark.timeout(900)]

BROKEN_MAPPING = "brokenSource_managedUser"  # its source type does not exist: recon FAILS


def cli(real: RealIDM, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "IDM_USERNAME": real.admin_user,
        "IDM_PASSWORD": real.admin_password,
        "LDAP_BIND_DN": real.ldap_bind_dn,
        "LDAP_BIND_PASSWORD": real.ldap_bind_password,
    }
    return subprocess.run(
        [IDMSYNC, *args, "--url", real.idm_url, "--ldap-url", real.ldap_url],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip


def check(real: RealIDM) -> tuple[int, dict[str, Any]]:
    result = cli(real, "check", "--source", real.ldap_source, "--output", "json")
    assert result.returncode in (0, 6, 7, 8), result.stderr
    assert real.ldap_bind_password not in result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def test_in_sync_is_reported_and_left_alone_under_out_of_sync(idm: Idm, real_idm: RealIDM) -> None:
    change_phone(real_idm, "scarter")
    idm.livesync()
    code, report = check(real_idm)
    assert code == 0, report
    (stage,) = report["stages"]
    assert stage["state"] == "InSync"
    assert stage["token"] == report["lastChangeNumber"] == real_idm.last_change_number()
    assert stage["lag"] == 0
    before = idm.stage()
    result = cli(
        real_idm, "reset", "--when", "out-of-sync", "--source", real_idm.ldap_source,
        "--output", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (outcome,) = json.loads(result.stdout)["stages"]
    assert outcome["result"] == "Skipped"
    assert outcome["check"]["state"] == "InSync"
    assert idm.stage() == before, "an in-sync stage is not touched"


def test_a_rebuilt_changelog_leaves_the_token_ahead_and_out_of_sync_fixes_and_catches_up(
    idm: Idm, real_idm: RealIDM, control_plane: ControlPlane, tmp_path: Path
) -> None:
    # liveSync is working: the stage follows the directory
    for user in ("tmorris", "scarter"):
        change_phone(real_idm, user)
    idm.livesync()
    stored = idm.token()
    assert stored == real_idm.last_change_number() >= 2

    # the directory's changelog is rebuilt: change numbers start again at 1
    real_idm.opendj.rebuild_changelog()
    stuck_phone, stuck_change = change_phone(real_idm, "bjensen")
    assert stuck_change < stored
    idm.livesync()
    assert idm.token() == stored, "liveSync keeps the token above the directory's changes"
    assert idm.managed_phone("bjensen") != stuck_phone, "the change does not reach IDM: stuck"

    code, report = check(real_idm)
    assert code == 6, report
    assert report["stages"][0]["state"] == "Ahead"
    assert report["stages"][0]["lag"] == stuck_change - stored < 0

    namespace, idm_port = operator_namespace(control_plane, real_idm, "drift", ldap=True)
    kubectl = control_plane.kubectl
    operator = OperatorProcess(
        control_plane.kubeconfig, tmp_path / "operator.log", namespaces=namespace
    ).start()
    try:
        spec = {
            "target": {"service": {"name": "idm", "port": idm_port}},
            "auth": {"adminSecretRef": {"name": "idm-admin"}},
            "stages": {"sources": [real_idm.ldap_source]},
            "when": "OutOfSync",
            "check": {
                "ldap": {
                    "service": {"name": "ds", "port": "ldap"},
                    "bindSecretRef": {"name": "ds-reader"},
                },
                "intervalSeconds": 30,
            },
            "reconcile": {"mapping": MAPPING},
        }
        kubectl.apply(reset_manifest("after-rebuild", namespace, spec))
        body = wait_phase(kubectl, namespace, "after-rebuild", ("Succeeded", "Failed"), timeout=300)
        metrics = httpx.get(f"http://127.0.0.1:{operator.metrics_port}/metrics").text
        # the periodic check (read-only) refreshes status.drift: now in sync
        checked_at_run = body["status"].get("lastCheckTime")
        rechecked = wait_for(
            lambda: (
                (s := get_reset(kubectl, namespace, "after-rebuild")["status"]).get("lastCheckTime")
                != checked_at_run
                and s
            ),
            timeout=180,
            what="a periodic drift check",
        )
    finally:
        operator.stop()
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    (stage,) = status["stages"]
    assert stage["check"]["state"] == "Ahead"
    assert stage["check"]["token"] == stored
    assert stage["check"]["lastChangeNumber"] == stuck_change
    assert (stage["result"], stage["previousToken"]) == ("Deleted", stored)
    assert stage["liveSync"]["newToken"] == real_idm.last_change_number()
    recon = status["reconciliation"]
    assert (recon["mapping"], recon["state"]) == (MAPPING, "SUCCESS")
    assert recon["id"]
    assert recon["processed"] >= 3
    assert recon["failed"] == 0
    # the catch-up: the change made while liveSync was stuck reached the managed user
    assert idm.managed_phone("bjensen") == stuck_phone
    # and liveSync works again
    phone, _ = change_phone(real_idm, "tmorris")
    idm.livesync()
    assert idm.managed_phone("tmorris") == phone

    (latest,) = rechecked["drift"]
    assert (latest["id"], latest["state"], latest["lag"]) == (STAGE, "InSync", 0)
    assert rechecked["phase"] == "Succeeded"
    assert rechecked["stages"] == status["stages"], "a check never changes the run's record"

    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert recon["id"] in ready["message"]
    reasons = [e["reason"] for e in events(kubectl, namespace)]
    for reason in ("StageChecked", "StageChanged", "ReconStarted", "ReconFinished", "Succeeded"):
        assert reason in reasons, reasons
    ours = {"namespace": namespace, "name": "after-rebuild", "stage": STAGE}
    samples = {
        (sample.name, sample.labels.get("state")): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if {k: sample.labels.get(k) for k in ours} == ours
    }
    assert samples[("idmsync_stage_lag_changes", None)] == stuck_change - stored
    assert samples[("idmsync_stage_drift", "Ahead")] == 1
    assert samples[("idmsync_stage_drift", "InSync")] == 0
    every_output = operator.log() + json.dumps(body) + json.dumps(events(kubectl, namespace))
    assert real_idm.ldap_bind_password not in every_output
    assert real_idm.admin_password not in every_output


def test_a_purged_changelog_leaves_the_token_trimmed(idm: Idm, real_idm: RealIDM) -> None:
    idm.livesync()
    stored = idm.token()
    assert stored == real_idm.last_change_number()
    real_idm.opendj.set_purge_delay("1 s")
    try:
        for _ in range(3):
            change_phone(real_idm, "scarter")
        # the replication server purges in the background; wait (bounded) until it has
        deadline = time.monotonic() + 120
        while real_idm.opendj.first_change_number() <= stored + 1:
            assert time.monotonic() < deadline, "OpenDJ did not purge its changelog in 120s"
            time.sleep(1)
    finally:
        real_idm.opendj.set_purge_delay("3 d")
    code, report = check(real_idm)
    assert code == 7, report
    assert report["stages"][0]["state"] == "Trimmed"
    assert report["firstChangeNumber"] > stored + 1

    result = cli(
        real_idm, "reset", "--when", "out-of-sync", "--reconcile", MAPPING,
        "--source", real_idm.ldap_source, "--output", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (outcome,) = json.loads(result.stdout)["stages"]
    assert (outcome["result"], outcome["check"]["state"]) == ("Deleted", "Trimmed")
    code, report = check(real_idm)
    assert code == 0, report


def test_a_failed_reconciliation_fails_the_reset_with_its_reason(
    idm: Idm, real_idm: RealIDM
) -> None:
    result = cli(
        real_idm, "reset", "--reconcile", BROKEN_MAPPING, "--source", real_idm.ldap_source,
        "--retries", "1",
    )  # fmt: skip
    assert result.returncode == 4, result.stderr  # ReconFailed is a server failure
    assert "ReconFailed" in result.stderr
    assert "FAILED" in result.stderr
    assert real_idm.ldap_bind_password not in result.stdout + result.stderr


def test_pause_schedules_waits_for_the_running_scheduled_livesync_before_the_delete(
    idm: Idm, real_idm: RealIDM
) -> None:
    idm.livesync()
    # a backlog that keeps one scheduled liveSync run busy for several seconds
    ldif = "".join(
        f"dn: uid=bjensen,ou=People,{real_idm.ldap_base_dn}\nchangetype: modify\n"
        f"replace: description\ndescription: backlog {i}\n\n"
        for i in range(600)
    )
    real_idm.ldap_modify(ldif)
    job = {
        "enabled": True,
        "persisted": True,
        "type": "cron",
        "schedule": "0/1 * * * * ?",
        "concurrentExecution": False,
        "invokeService": "provisioner",
        "invokeContext": {"action": "liveSync", "source": real_idm.ldap_source},
    }
    idm.http.put("scheduler/job/drift-e2e-livesync", json=job).raise_for_status()
    try:
        deadline = time.monotonic() + 120
        while not idm.http.post(
            "scheduler/job", params={"_action": "listCurrentlyExecutingJobs"}
        ).json():
            assert time.monotonic() < deadline, "the scheduled liveSync never ran"
            time.sleep(0.2)
        result = cli(
            real_idm, "reset", "-v", "--pause-schedules", "--source", real_idm.ldap_source,
            "--output", "json",
        )  # fmt: skip
    finally:
        idm.http.delete("scheduler/job/drift-e2e-livesync")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if kind in line)
        for kind in ("SchedulerPaused", "LiveSyncIdle", "StageChanged", "SchedulerResumed")
    ]
    assert order == sorted(order), lines
    idle = lines[order[1]]
    assert "no liveSync of these stages is running (waited" in idle, idle
    assert "paused the IDM scheduler" in lines[order[0]], "OpenIDM 6.1: every job"
    (stage,) = json.loads(result.stdout)["stages"]
    assert stage["result"] == "Deleted"
