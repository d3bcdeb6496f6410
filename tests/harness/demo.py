"""``make demo``: the main job end to end, for a person to watch.

Starts a local control plane (etcd + kube-apiserver) and real OpenDJ + OpenIDM 6.1.0 (built from
Maven Central by ``make idm-dist``; ``--idm stub`` uses the protocol-faithful IDM stub instead),
installs the CRD and RBAC, runs the operator as its least-privilege ServiceAccount, and tells the
KB article's story with the real servers' numbers:

1. liveSync has run: the stage's token is the directory's lastChangeNumber;
2. the directory is "restored" from an older backup: the stored token is now ahead of it;
3. a directory change does not reach the managed user (liveSync is stuck);
4. ``manifests/samples/service-admin-secret.yaml`` is applied, pointed at that IDM: status
   transitions, the audit (previous rev and token), ``kubectl wait --for=condition=Ready``;
5. a new directory change reaches the managed user again; the one made while stuck did not
   (that is what a reconciliation is for).

Then everything is torn down.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.harness.controlplane import ControlPlane
from tests.harness.openidm import RealIDM
from tests.harness.operator_process import IDMSYNC, OperatorProcess
from tests.stub.idm_stub import IdmStub

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "service-admin-secret.yaml"
NAMESPACE = "identity"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


class Story:
    """The KB's story told against real OpenDJ + OpenIDM, each step with its numbers."""

    STAGE = "SYSTEMLDAPACCOUNT"
    MAPPING = "systemLdapAccounts_managedUser"

    def __init__(self, real: RealIDM) -> None:
        self.real = real
        self.http = httpx.Client(
            base_url=f"{real.idm_url}/openidm", headers=real.admin_headers, timeout=120
        )

    def stage(self) -> dict[str, Any]:
        response = self.http.get(f"repo/synchronisation/pooledSyncStage/{self.STAGE}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def token(self) -> int:
        return int(self.stage()["connectorData"]["syncToken"])

    def livesync(self) -> None:
        self.http.post(self.real.ldap_source, params={"_action": "liveSync"}).raise_for_status()

    def phone_in_idm(self, user: str) -> str:
        found = self.http.get(
            "managed/user", params={"_queryFilter": f'userName eq "{user}"'}
        ).json()["result"]
        return str(found[0].get("telephoneNumber")) if found else "(no managed user)"

    def change_phone(self, user: str, phone: str) -> int:
        dn = f"uid={user},ou=People,{self.real.ldap_base_dn}"
        return self.real.ldap_replace(dn, "telephoneNumber", phone)

    def numbers(self) -> str:
        return (
            f"stored token {self.token()}, "
            f"directory lastChangeNumber {self.real.last_change_number()}"
        )

    def before(self) -> None:
        say("1. liveSync works: directory changes reach IDM, the stage follows the changelog")
        self.livesync()  # a first liveSync creates the stage at the latest change
        self.http.post(
            "recon",
            params={"_action": "recon", "mapping": self.MAPPING, "waitForCompletion": "true"},
        ).raise_for_status()
        for user, phone in (("tmorris", "+1 555 0001"), ("tmorris", "+1 555 0002")):
            change = self.change_phone(user, phone)
            print(f"  change number {change} in OpenDJ: {user}'s phone = {phone}")
        self.livesync()
        print(f"  after liveSync, tmorris's phone in IDM: {self.phone_in_idm('tmorris')}")
        print(f"  {self.numbers()}")

        say('2. the directory is "restored" from an older backup: the stored token is now ahead')
        # Restoring OpenDJ from a backup 50 changes older leaves exactly this: a stored token
        # above the directory's lastChangeNumber. Written through IDM's own REST API.
        stage = self.stage()
        ahead = self.real.last_change_number() + 50
        stage["connectorData"]["syncToken"] = ahead
        self.http.put(
            f"repo/synchronisation/pooledSyncStage/{self.STAGE}",
            json={"_id": self.STAGE, "connectorData": stage["connectorData"]},
            headers={"If-Match": f'"{stage["_rev"]}"'},
        ).raise_for_status()
        print(f"  {self.numbers()}")

        say("3. liveSync is stuck: a directory change does not reach IDM")
        change = self.change_phone("bjensen", "+1 555 0100 (made while stuck)")
        self.livesync()
        print(
            f"  change number {change} in OpenDJ: bjensen's phone = +1 555 0100 (made while stuck)"
        )
        print(f"  after liveSync, bjensen's phone in IDM: {self.phone_in_idm('bjensen')}")
        print(f"  {self.numbers()}")

    def after(self) -> None:
        say("5. after the reset: liveSync picks up directory changes again")
        print(f"  {self.numbers()}")
        phone = "+1 555 0200"
        change = self.change_phone("scarter", phone)
        self.livesync()
        print(f"  change number {change} in OpenDJ: scarter's phone = {phone}")
        print(f"  after liveSync, scarter's phone in IDM: {self.phone_in_idm('scarter')}")
        print(f"  bjensen's phone in IDM: {self.phone_in_idm('bjensen')} (OpenDJ: +1 555 0100)")
        print(
            "  (the change made while liveSync was stuck is not replayed: a reset skips it;"
            " a reconciliation of the mapping catches it up)"
        )
        print(f"  {self.numbers()}")


@contextlib.contextmanager
def idm_server(kind: str) -> Iterator[tuple[str, str, str, str, Story | None]]:
    """(server url, username, password, liveSync source, story) of a running IDM."""
    if kind == "real":
        from tests.harness import openidm

        if openidm.cached_openidm() is None:
            raise SystemExit("OpenIDM is not built: run `make idm-dist` (or DEMO_IDM=stub)")
        with openidm.running() as real:
            story = Story(real)
            yield real.idm_url, real.admin_user, real.admin_password, real.ldap_source, story
        return
    print("(DEMO_IDM=stub: the protocol-faithful IDM stub stands in for OpenIDM)")
    stub = IdmStub(username="openidm-admin", password="openidm-admin").start()
    stub.add_source("system/ldap/account", latest=105)
    stub.put_stage("SYSTEMLDAPACCOUNT", 100)
    try:
        yield stub.url, "openidm-admin", "openidm-admin", "system/ldap/account", None
    finally:
        stub.stop()


def stages(url: str, user: str, password: str) -> str:
    env = {"IDM_USERNAME": user, "IDM_PASSWORD": password, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [IDMSYNC, "stages", "--url", url], env=env, capture_output=True, text=True, check=True
    ).stdout


def sample_documents(port: int, source: str, password: str) -> list[dict[str, Any]]:
    """The sample as a user would adapt it: their IDM's port, password and source."""
    documents = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    for document in documents:
        document["metadata"]["namespace"] = NAMESPACE
        if document["kind"] == "Secret":
            document["stringData"]["password"] = password
        if document["kind"] == "SyncTokenReset":
            document["spec"]["target"]["service"]["port"] = port
            document["spec"]["stages"] = {"sources": [source]}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "idm", "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": port}], "selector": {"app": "idm"}},
    }
    return [service, *documents]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idm", choices=("real", "stub"), default="real")
    args = parser.parse_args()
    with (
        ControlPlane() as plane,
        idm_server(args.idm) as (url, user, password, source, story),
    ):
        kubectl = plane.kubectl
        port = int(url.rsplit(":", 1)[1])
        if story is not None:
            story.before()
        say(f"IDM at {url}; sync stages before the reset (idmsync stages):")
        print(stages(url, user, password))

        say("4. installing the CRD, RBAC and the operator (as its least-privilege ServiceAccount)")
        kubectl("apply", "--server-side", "-k", str(ROOT / "manifests" / "crd"))
        kubectl("wait", "--for=condition=Established", "crd/synctokenresets.idmsync.dev")
        kubectl("create", "namespace", "idmsync-system")
        kubectl("create", "namespace", NAMESPACE)
        kubectl("apply", "-k", str(ROOT / "manifests" / "rbac"))
        sa_config = plane.service_account_kubeconfig(
            "idmsync-system", "idmsync-operator", create=False
        )
        with tempfile.TemporaryDirectory(prefix="idmsync-demo-") as work:
            log = Path(work) / "operator.log"
            operator = OperatorProcess(sa_config, log, namespaces=NAMESPACE).start()
            try:
                run_sample(kubectl, port, source, password)
                say("sync stages after the reset (idmsync stages):")
                print(stages(url, user, password))
                say("Events on the resource:")
                print(
                    kubectl(
                        "get",
                        "events",
                        "-n",
                        NAMESPACE,
                        "--sort-by=.metadata.creationTimestamp",
                        "-o",
                        "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
                    ).stdout
                )
            finally:
                operator.stop()
        if story is not None:
            story.after()
    say("torn down: control plane, IDM and operator stopped")
    return 0


def run_sample(kubectl: Any, port: int, source: str, password: str) -> None:
    say(f"kubectl apply -f {SAMPLE.relative_to(ROOT)} (Service idm -> port {port})")
    documents = sample_documents(port, source, password)
    kubectl.apply(yaml.safe_dump_all(documents))
    name = next(d["metadata"]["name"] for d in documents if d["kind"] == "SyncTokenReset")
    seen: set[str] = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = kubectl.get_json("synctokenreset", name, "-n", NAMESPACE).get("status", {})
        steps = ",".join(f"{s['id']}={s['step']}" for s in status.get("stages", []))
        line = f"phase={status.get('phase', '-')} stages=[{steps}]"
        if line not in seen:
            seen.add(line)
            print(f"  {time.strftime('%H:%M:%S')} {line}", flush=True)
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.1)
    wait = kubectl(
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        f"synctokenreset/{name}",
        "-n",
        NAMESPACE,
        check=False,
    )
    say(f"kubectl wait --for=condition=Ready: {wait.stdout.strip() or wait.stderr.strip()}")
    print(kubectl("get", "synctokenresets", "-n", NAMESPACE).stdout)
    status = kubectl.get_json("synctokenreset", name, "-n", NAMESPACE)["status"]
    say("status.stages:")
    print(json.dumps(status["stages"], indent=2))
    if wait.returncode != 0:
        raise SystemExit(f"the reset did not become Ready: {status.get('conditions')}")


if __name__ == "__main__":
    sys.exit(main())
