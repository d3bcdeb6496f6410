"""``make demo``: the main job end to end, for a person to watch.

Starts a local control plane (etcd + kube-apiserver), an IDM (real OpenIDM when
its distribution is cached and ``--idm real`` or ``auto`` finds it, the IDM stub
otherwise), installs the CRD and RBAC, runs the operator as the least-privilege
ServiceAccount, applies ``manifests/samples/service-admin-secret.yaml`` pointed
at that IDM, prints the resource's status transitions and the sync token before
and after, checks ``kubectl wait --for=condition=Ready``, and tears it all down.
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

import yaml

from tests.harness.controlplane import ControlPlane
from tests.harness.operator_process import IDMSYNC, OperatorProcess
from tests.stub.idm_stub import IdmStub

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "service-admin-secret.yaml"
NAMESPACE = "identity"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


@contextlib.contextmanager
def idm_server(kind: str) -> Iterator[tuple[str, str, str, str]]:
    """(server url, username, password, liveSync source) of a running IDM."""
    if kind in ("real", "auto"):
        from tests.harness import openidm

        if openidm.cached_openidm() is not None:
            with openidm.running() as real:
                yield real.idm_url, real.admin_user, real.admin_password, real.ldap_source
            return
        if kind == "real":
            raise SystemExit("OpenIDM is not built: run `make idm-dist`")
        print("(OpenIDM is not available here: using the protocol-faithful IDM stub)")
    stub = IdmStub(username="openidm-admin", password="openidm-admin").start()
    stub.add_source("system/ldap/account", latest=105)
    stub.put_stage("SYSTEMLDAPACCOUNT", 100)
    try:
        yield stub.url, "openidm-admin", "openidm-admin", "system/ldap/account"
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
    parser.add_argument("--idm", choices=("auto", "real", "stub"), default="auto")
    args = parser.parse_args()
    with ControlPlane() as plane, idm_server(args.idm) as (url, user, password, source):
        kubectl = plane.kubectl
        port = int(url.rsplit(":", 1)[1])
        say(f"IDM at {url}; sync stages before the reset:")
        if source == "system/ldap/account" and "SYSTEMLDAPACCOUNT" not in stages(
            url, user, password
        ):
            subprocess.run(  # a first liveSync creates the stage, as in the KB article
                [IDMSYNC, "reset", "--url", url, "--source", source, "--dry-run"],
                env={"IDM_USERNAME": user, "IDM_PASSWORD": password},
                check=False,
                capture_output=True,
            )
        print(stages(url, user, password))

        say("installing the CRD, RBAC and the operator (as its least-privilege ServiceAccount)")
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
                say("sync stages after the reset:")
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
