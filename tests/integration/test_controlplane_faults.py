"""Control-plane faults mid-reset: the API server restarted, status writes failing (409, 5xx)
before and after the DELETE. The operator must notice within its timeouts, lose no progress
(no DELETE repeated, the audit right) and finish.

A control plane of its own (restarting the session's would disturb the other tests'
operator), two operators on it as the manifests' ServiceAccount: one talking to the API
server directly (restarts), one through tests/harness/kube_proxy.py, which fails chosen
status patches (by the step they record): ``refuse`` (never stored) or ``after`` (stored,
answered as failed). A blip shorter than the Kubernetes retry window
(controller/kube_retry.py) costs a wait; a longer one fails the try, and the next try resumes
from what the status says. The table as it ran is printed at the end.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import BinariesMissingError, ControlPlane
from tests.harness.kube_proxy import KubeProxy
from tests.harness.operator_process import OperatorProcess
from tests.harness.report import table_at_end
from tests.integration.conftest import (
    CRD,
    Resets,
    admin_secret,
    operator_kubeconfig,
    reset_manifest,
    service_manifest,
    wait_for,
)
from tests.stub.fixtures import ADMIN_PASSWORD, LDAP_SOURCE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(900)]

SPEC = {
    "target": {"service": {"name": "idm", "port": "http"}},
    "auth": {"adminSecretRef": {"name": "idm-admin"}},
    "api": "IDM7",
    "pauseSchedules": True,
    "stages": {"sources": [LDAP_SOURCE]},
}
ROWS: list[tuple[str, str, int, int, int, str]] = []


class Plane:
    """The module's control plane, its proxy, and one operator on each path to it."""

    def __init__(self, tmp: Path) -> None:
        self.control_plane = ControlPlane()
        try:
            self.control_plane.start()
        except BinariesMissingError as error:
            pytest.fail(str(error), pytrace=False)
        self.kubectl = self.control_plane.kubectl
        self.kubectl("apply", "--server-side", "-f", str(CRD))
        self.kubectl("wait", "--for=condition=Established", "crd/synctokenresets.idmsync.dev")
        direct = operator_kubeconfig(self.control_plane)
        self.proxy = KubeProxy(
            self.control_plane.server,
            self.control_plane.ca_pem,
            self.control_plane.serving_pair("127.0.0.1"),
        ).start()
        config = yaml.safe_load(direct.read_text())
        config["clusters"][0]["cluster"]["server"] = self.proxy.url
        proxied = tmp / "proxied.kubeconfig"
        proxied.write_text(yaml.safe_dump(config))
        # each case its own namespace, each operator only its cases' (two operators on one
        # namespace would both act: they are standalone, no peering)
        self.namespaces = {
            case.id: f"cp-{index}-{secrets.token_hex(3)}" for index, case in enumerate(CASES)
        }
        for namespace in self.namespaces.values():
            self.kubectl("create", "namespace", namespace)
        self.operators = {
            path: OperatorProcess(
                kubeconfig,
                tmp / f"operator-{path}.log",
                namespaces=",".join(self.namespaces[c.id] for c in CASES if c.path == path),
            ).start()
            for path, kubeconfig in (("direct", direct), ("proxied", proxied))
        }

    def close(self) -> None:
        for operator in self.operators.values():
            operator.stop()
        self.proxy.stop()
        self.control_plane.stop()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    harness = Plane(tmp_path_factory.mktemp("controlplane-faults"))
    yield harness
    harness.close()
    for operator in harness.operators.values():
        assert ADMIN_PASSWORD not in operator.log()


_print_the_table = table_at_end(
    "control-plane faults",
    f"{'case':<34} {'phase':<10} {'DELETEs':>7} {'tries':>5} {'failed':>6}  stage note",
    ROWS,
    lambda case, phase, deletes, tries, failed, note: (
        f"{case:<34} {phase:<10} {deletes:>7} {tries:>5} {failed:>6}  {note}"
    ),
)


@dataclass(frozen=True)
class Case:
    id: str
    path: str  # direct | proxied
    arrange: Callable[[Plane, IdmStub], None]  # before the resource is created
    during: Callable[[Plane, IdmStub], None] = lambda plane, stub: None  # after
    injected: bool = False  # failures must show in the proxy's log


def _deleted(stub: IdmStub) -> Callable[[], bool]:
    return lambda: bool(stub.requests_to(STAGE_PATH, "DELETE"))


def _restart_when(seen: Callable[[IdmStub], Callable[[], bool]], down: float) -> Any:
    """Stop the API server when ``seen``, start it again ``down`` seconds later."""

    def during(plane: Plane, stub: IdmStub) -> None:
        wait_for(seen(stub), 60, "the request to restart on")
        plane.control_plane.stop_apiserver()
        time.sleep(down)
        plane.control_plane.start_apiserver()

    return during


def _stage_read(stub: IdmStub) -> Callable[[], bool]:
    return lambda: bool(stub.requests_to(STAGE_PATH, "GET"))


CASES = [
    Case(
        "apiserver restart before the DELETE",
        "direct",
        lambda plane, stub: stub.delay_after_next(1, 2.0, method="GET", path=STAGE_PATH),
        _restart_when(_stage_read, 2.0),
    ),
    Case(
        "apiserver restart after the DELETE",
        "direct",
        lambda plane, stub: stub.delay_after_next(1, 2.0, method="DELETE"),
        _restart_when(_deleted, 2.0),
    ),
    Case(
        "apiserver down 10 s after the DELETE",
        "direct",
        lambda plane, stub: stub.delay_after_next(1, 2.0, method="DELETE"),
        _restart_when(_deleted, 10.0),
    ),
    Case(
        "409 on the status patch before it",
        "proxied",
        lambda plane, stub: plane.proxy.fail("refuse", 409, body='"Recorded"', count=2),
        injected=True,
    ),
    Case(
        "503 on every status write before it",
        "proxied",
        lambda plane, stub: plane.proxy.fail("refuse", 503, body='"Recorded"', count=12),
        injected=True,
    ),
    Case(
        "500 after storing, after it",
        "proxied",
        lambda plane, stub: plane.proxy.fail("after", 500, body='"Changed"', count=2),
        injected=True,
    ),
    Case(
        "503 on every status write after it",
        "proxied",
        lambda plane, stub: plane.proxy.fail("refuse", 503, body='"Changed"', count=12),
        injected=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id.replace(" ", "-") for c in CASES])
def test_the_operator_rides_out_a_control_plane_fault(
    plane: Plane, stub: IdmStub, case: Case
) -> None:
    kubectl = plane.kubectl
    namespace = plane.namespaces[case.id]
    kubectl.apply(service_manifest("idm", namespace, stub.port))
    kubectl.apply(admin_secret(namespace))
    injected_before = len(plane.proxy.injected())
    case.arrange(plane, stub)
    kubectl.apply(reset_manifest("reset", namespace, SPEC))
    case.during(plane, stub)

    resets = Resets(plane.control_plane.kubeconfig, namespace)
    try:
        status = resets.wait_phase("reset", timeout=180)["status"]
    except AssertionError:
        print(kubectl("get", "synctokenreset", "reset", "-n", namespace, "-o", "yaml").stdout)
        raise
    (stage,) = status["stages"]
    deletes = len(stub.requests_to(STAGE_PATH, "DELETE"))
    failed = len(plane.proxy.injected()) - injected_before
    note = stage.get("message") or ""
    ROWS.append((case.id, status["phase"], deletes, status["attempts"], failed, note[:60]))

    assert status["phase"] == "Succeeded", status
    assert deletes == 1, "no DELETE repeated, none lost"
    assert (stage["previousRev"], stage["previousToken"], stage["result"]) == ("1", 100, "Deleted")
    assert stage["liveSync"]["newToken"] == 105
    assert not stub.scheduler_paused
    if case.injected:
        assert failed > 0, "the fault happened"
