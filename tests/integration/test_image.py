"""The operator image (``make image``) is what runs: its own filesystem, entrypoint and numeric
user, started with the Deployment's args against the real API server and the IDM stub; and the
chart, the manifests and the Containerfile say the same entrypoint, args, user and image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import Binaries, ControlPlane, Kubectl
from tests.harness.image import BuiltImage, ImageContainer
from tests.harness.operator_process import OperatorProcess
from tests.integration.conftest import admin_secret, reset_manifest, service_manifest, wait_phase
from tests.stub.fixtures import LDAP_SOURCE, LDAP_STAGE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

REPO = Path(__file__).resolve().parents[2]
KUBECONFIG_IN_IMAGE = "/etc/idmsync/kubeconfig"  # not under /var/run: a symlink to /run


@pytest.fixture(scope="module")
def built_image() -> BuiltImage:
    try:
        return BuiltImage.locate()
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def image(
    built_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ImageContainer]:
    with ImageContainer.open(built_image, tmp_path_factory.mktemp("image")) as container:
        yield container


def manifests_container() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = yaml.safe_load((REPO / "manifests" / "operator" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def chart_container() -> tuple[dict[str, Any], dict[str, Any]]:
    helm = Binaries.locate().helm
    rendered = subprocess.run(
        [str(helm), "template", "idmsync", str(REPO / "charts" / "idmsync")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


@pytest.mark.parametrize(
    "source", [manifests_container, chart_container], ids=["kustomize", "helm"]
)
def test_deployments_run_the_image_as_built(
    source: Any, built_image: BuiltImage, image: ImageContainer
) -> None:
    pod, container = source()
    config = image.config
    assert container["image"] == built_image.name
    assert "command" not in container, "the image's ENTRYPOINT is the command"
    assert container["args"] == config["Cmd"] == ["run"]
    assert config["Entrypoint"] == ["/usr/local/bin/idmsync"]
    uid, gid = config["User"].split(":")
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid),
        int(gid),
    )
    assert int(uid) != 0


def test_the_containerfile_builds_the_same_interface(image: ImageContainer) -> None:
    text = (REPO / "Containerfile").read_text()
    assert re.search(r"^USER 65532:65532$", text, re.MULTILINE)
    assert image.config["User"] == "65532:65532"
    assert '\nENTRYPOINT ["/usr/local/bin/idmsync"]\n' in text
    assert '\nCMD ["run"]\n' in text
    assert "--require-hashes -r requirements.lock" in text


def inside(image: ImageContainer, script: str, user: str | None = None) -> str:
    completed = subprocess.run(
        image.argv(["/bin/sh", "-c", script], user=user),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


LEAN = {
    "id -u; id -g": "65532\n65532\n",
    "for t in gcc cc g++ make apt apt-get pip pip3; do command -v $t; done; true": "",
    "as root: find /var/cache /var/lib/apt/lists /var/log -type f ! -name lock": "",
    "test -e /usr/share/perl || test -e /usr/lib/x86_64-linux-gnu/perl || echo no": "no\n",
    "python3 -c 'import importlib.util as u; print(u.find_spec(\"pip\"))'": "None\n",
    "test -e /usr/local/lib/python3.11/dist-packages/kubernetes/aio || echo no": "no\n",
    "python3 -c 'import kubernetes.client, kopf, idmsync.cli; print(kopf.__file__)'": (
        "/usr/local/lib/python3.11/dist-packages/kopf/__init__.py\n"
    ),
}


@pytest.mark.parametrize("script", list(LEAN))
def test_the_image_is_lean(image: ImageContainer, script: str) -> None:
    """Its numeric user; no compiler, package manager front end, pip, package lists or caches;
    no Perl beyond the essential perl-base; no asyncio copy of the kubernetes client."""
    as_root = script.startswith("as root: ")
    command = script.removeprefix("as root: ")
    assert inside(image, command, user="0:0" if as_root else None) == LEAN[script]


def test_the_operator_from_the_image_resets_a_stage(
    image: ImageContainer,
    control_plane: ControlPlane,
    kubectl: Kubectl,
    crd: None,
    stub: IdmStub,
    tmp_path: Path,
    namespace: str,
) -> None:
    kubectl.apply(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "idmsync-system"}}
        )
    )
    kubectl("apply", "-k", str(REPO / "manifests" / "rbac"))
    account = control_plane.service_account_kubeconfig(
        "idmsync-system", "idmsync-operator", create=False
    )
    # readable by the image's user only, as a projected token would be
    uid, gid = (int(part) for part in image.config["User"].split(":"))
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copyfile(account, kubeconfig)
    os.chown(kubeconfig, uid, gid)
    kubeconfig.chmod(0o400)

    _, deployment = manifests_container()

    def in_image(env: Mapping[str, str]) -> list[str]:
        settings = {k: v for k, v in env.items() if k.startswith("IDMSYNC_")}
        settings |= {"KUBECONFIG": KUBECONFIG_IN_IMAGE, "IDMSYNC_LOG_FORMAT": "json"}
        command = [*image.config["Entrypoint"], *deployment["args"]]
        return image.argv(command, env=settings, mounts={kubeconfig: KUBECONFIG_IN_IMAGE})

    kubectl.apply(service_manifest("idm", namespace, stub.port))
    kubectl.apply(admin_secret(namespace))
    operator = OperatorProcess(
        kubeconfig, tmp_path / "operator.log", namespaces=namespace, command=in_image
    ).start()
    try:
        assert operator.process is not None
        group = operator.process.pid  # buildah and what it runs: one process group
        running = processes_in_group(group, "/usr/local/bin/idmsync run")
        assert running, "no operator process from the image"
        assert set(running.values()) == {uid}, "the operator runs as the image's user"
        spec = {
            "target": {"service": {"name": "idm", "port": "http"}},
            "auth": {"adminSecretRef": {"name": "idm-admin"}},
            "api": "IDM7",
            "stages": {"sources": [LDAP_SOURCE]},
        }
        kubectl.apply(reset_manifest("from-image", namespace, spec))
        body = wait_phase(kubectl, namespace, "from-image", ("Succeeded", "Failed"), 90)
        assert body["status"]["phase"] == "Succeeded", body["status"]
        (stage,) = body["status"]["stages"]
        assert (stage["id"], stage["result"], stage["previousToken"]) == (
            LDAP_STAGE,
            "Deleted",
            100,
        )
        assert stub.steps() == [
            "GET info/version",
            f"GET {STAGE_PATH}",
            f"DELETE {STAGE_PATH}",
            f"POST {LDAP_SOURCE}",
            f"GET {STAGE_PATH}",
        ]
        assert '"message": "idmsync operator started' in operator.log(), "JSON logs, as deployed"
    finally:
        operator.stop()
    assert not processes_in_group(group, ""), "the operator outlived its stop"


def processes_in_group(group: int, command_line: str) -> dict[int, int]:
    """pid -> real uid of the processes in process group ``group`` (buildah's helpers aside)
    whose command line contains ``command_line``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
        except OSError:
            continue
        try:
            in_group = os.getpgid(int(proc.name)) == group
        except ProcessLookupError:
            continue
        if in_group and command_line in cmdline and "buildah" not in cmdline:
            uid = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
            assert uid is not None
            found[int(proc.name)] = int(uid.group(1))
    return found
