"""HA: two replicas in one peering, many resets, the active replica stopped mid-run.

SIGKILL (a node failure): the standby takes over once the dead replica's peering record
expires (IDMSYNC_PEERING_LIFETIME, short here) and resumes the resets left Running.
SIGTERM (a rolling update): the replica finishes what it holds or hands it over.
Either way every reset is performed exactly once (one DELETE per stage at the IDM stub),
its audit is right, and all end Ready.

``make test`` runs 20 resets per case; ``make soak`` sets ``IDMSYNC_HA_RESETS`` (200).
The table as it ran is printed at the end.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import ControlPlane
from tests.harness.operator_process import OperatorProcess
from tests.harness.report import table_at_end
from tests.integration.conftest import (
    ROOT,
    Resets,
    admin_secret,
    operator_kubeconfig,
    reset_manifest,
    service_manifest,
    wait_for,
)
from tests.stub.fixtures import ADMIN_PASSWORD
from tests.stub.idm_stub import IdmStub

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(1800)]

RESETS = int(os.environ.get("IDMSYNC_HA_RESETS") or 20)
LIFETIME = 10  # seconds: how long the standby waits on a replica that died silently
ROWS: list[tuple[str, int, int, int, int, int, int, float]] = []
#: how the active replica is stopped, and the shutdown grace it gets
STOPS = {"SIGKILL": 20.0, "SIGTERM finishes": 20.0, "SIGTERM hands over": 0.5}


_print_the_table = table_at_end(
    "HA: two replicas, the active one stopped mid-run",
    f"{'stopped by':<19} {'resets':>6} {'done at stop':>12} {'by it':>5} "
    f"{'by standby':>10} {'Ready':>5} {'DELETEs':>7} {'seconds':>7}",
    ROWS,
    lambda stop, resets, before, by_it, by_standby, ready, deletes, seconds: (
        f"{stop:<19} {resets:>6} {before:>12} {by_it:>5} {by_standby:>10} {ready:>5} "
        f"{deletes:>7} {seconds:>7.0f}"
    ),
)


class Replicas:
    def __init__(self, control_plane: ControlPlane, stub: IdmStub, tmp: Path, grace: float) -> None:
        kubectl = self.kubectl = control_plane.kubectl
        self.stub = stub
        self.namespace = f"ha-{secrets.token_hex(4)}"
        kubectl("create", "namespace", self.namespace)
        kubectl.apply(service_manifest("idm", self.namespace, stub.port))
        kubectl.apply(admin_secret(self.namespace))
        kubectl("apply", "-k", str(ROOT / "manifests/peering"))
        kubeconfig = operator_kubeconfig(control_plane)
        kubectl(
            "wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev",
            "--timeout=30s",
        )  # fmt: skip
        self.peering = f"ha-{secrets.token_hex(3)}"  # its own: no stray peer from other tests
        self.logs = [tmp / "replica-a.log", tmp / "replica-b.log"]
        self.replicas = [
            OperatorProcess(
                kubeconfig,
                log,
                namespaces=self.namespace,
                settings={
                    "IDMSYNC_PEERING": self.peering,
                    "IDMSYNC_PEERING_LIFETIME": str(LIFETIME),
                    "IDMSYNC_SHUTDOWN_GRACE": str(grace),
                },
            ).start()
            for log in self.logs
        ]
        self.resets = Resets(control_plane.kubeconfig, self.namespace)
        wait_for(self.settled, 90, "one active replica and one standing by")

    def active(self, index: int) -> bool:
        """Each replica starts paused (mandatory peering); its last word says where it is."""
        text = self.logs[index].read_text()
        return text.rfind("Resuming operations") > text.rfind("Pausing operations")

    def settled(self) -> bool:
        peers = self.kubectl.get_json("clusterkopfpeering", self.peering).get("status") or {}
        return len(peers) == 2 and sum(self.active(i) for i in range(2)) == 1

    def deletes_sent(self, index: int) -> int:
        """DELETEs this replica has sent so far (httpx logs each request)."""
        return self.logs[index].read_text(errors="replace").count("DELETE http")

    def finished_by(self, index: int) -> int:
        """Resets this replica saw through to Succeeded (its log says so per resource)."""
        text = self.logs[index].read_text(errors="replace")
        return len(set(re.findall(rf"{self.namespace}/(r\d+): SYSTEM\w+: Deleted", text)))

    def close(self) -> None:
        for replica in self.replicas:
            replica.stop()


@pytest.fixture(params=list(STOPS))
def stop(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def replicas(
    control_plane: ControlPlane, crd: None, stub: IdmStub, tmp_path: Path, stop: str
) -> Iterator[Replicas]:
    harness = Replicas(control_plane, stub, tmp_path, STOPS[stop])
    yield harness
    harness.close()
    for log in harness.logs:
        assert ADMIN_PASSWORD not in log.read_text(errors="replace")


def _stage(number: int) -> tuple[str, str]:
    source = f"system/ha/r{number:03d}"
    return source, source.replace("/", "").upper()


def _spec(number: int) -> dict[str, object]:
    return {
        "target": {"service": {"name": "idm", "port": "http"}},
        "auth": {"adminSecretRef": {"name": "idm-admin"}},
        "api": "IDM7",
        "stages": {"sources": [_stage(number)[0]]},
    }


def test_the_active_replica_stopped_mid_run_each_reset_once(
    replicas: Replicas, stub: IdmStub, stop: str
) -> None:
    for number in range(RESETS):
        source, stage = _stage(number)
        stub.add_source(source, latest=105)
        stub.put_stage(stage, 100)
    # every liveSync trigger takes a moment: resets are in flight when the replica stops
    stub.delay_next(10**6, 0.2, method="POST", path="/openidm/system/ha/")
    manifests = [
        yaml.safe_load(reset_manifest(f"r{n:03d}", replicas.namespace, _spec(n)))
        for n in range(RESETS)
    ]
    started = time.monotonic()
    replicas.kubectl.apply(yaml.safe_dump_all(manifests))

    # stop the active replica once a third of the resets have sent their DELETE
    wait_for(
        lambda: len(stub.requests_to("/pooledSyncStage/SYSTEMHAR", "DELETE")) >= RESETS // 3,
        120,
        "a third of the DELETEs",
    )
    # the replica doing the work (peering can still settle after both announced themselves:
    # a replica of higher priority that joined last takes over from the first)
    active = max(range(2), key=replicas.deletes_sent)
    standby = 1 - active
    if stop == "SIGKILL":
        replicas.replicas[active].kill()
    else:
        replicas.replicas[active].stop()  # SIGTERM, and wait for it to exit
    done_at_stop = sum(
        1 for r in replicas.resets.all() if r.get("status", {}).get("phase") == "Succeeded"
    )

    def finished() -> list[dict[str, Any]] | None:
        items = replicas.resets.all()
        phases = [r.get("status", {}).get("phase") for r in items]
        return items if phases.count("Succeeded") + phases.count("Failed") == RESETS else None

    items: list[dict[str, Any]] = wait_for(finished, 120 + RESETS, f"all {RESETS} to finish")
    seconds = time.monotonic() - started
    wrong: list[str] = []
    deletes = 0
    for item in items:
        status = item["status"]
        (recorded,) = status["stages"]
        sent = len(stub.requests_to(f"pooledSyncStage/{recorded['id']}", "DELETE"))
        deletes += sent
        audit = (recorded["previousRev"], recorded["previousToken"], recorded["result"])
        if (status["phase"], sent, audit) != ("Succeeded", 1, ("1", 100, "Deleted")):
            name = item["metadata"]["name"]
            wrong.append(f"{name}: {status['phase']}, {sent} DELETEs, audit {audit}")
    ready = sum(1 for item in items if item["status"]["phase"] == "Succeeded")
    by_it, by_standby = replicas.finished_by(active), replicas.finished_by(standby)
    ROWS.append((stop, RESETS, done_at_stop, by_it, by_standby, ready, deletes, seconds))
    assert not wrong, "\n".join(wrong)
    if stop == "SIGKILL":
        # a replica killed just after a reset's last status write never logged it finished
        assert by_it + by_standby <= RESETS, "none finished by both"
    else:
        assert by_it + by_standby == RESETS, "each finished by exactly one replica"
    if stop != "SIGTERM finishes":
        assert by_standby > 0, "the standby took over"
    assert not stub.scheduler_paused
