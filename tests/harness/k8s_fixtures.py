"""pytest plugin: a real kube-apiserver + etcd for tests marked `controlplane`.

Fixtures:
    control_plane  session   the running ControlPlane (admin kubeconfig, minting helpers)
    kubeconfig     session   Path of the admin kubeconfig
    kubectl        session   Kubectl bound to the admin kubeconfig
    namespace      function  name of a fresh namespace, unique per test

Without the binaries the fixture fails (it never skips) and names `make tools`.
Any test that uses `control_plane` gets the `controlplane` marker automatically, so
`-m "not controlplane"` deselects it even if the decorator was forgotten.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import BinariesMissingError, ControlPlane, Kubectl


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.controlplane)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane()
    try:
        plane.start()
    except BinariesMissingError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return control_plane.kubectl


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kubectl: Kubectl) -> str:
    """A new namespace per test. Never deleted: without kube-controller-manager a deleted
    namespace stays Terminating forever, and the whole cluster goes away after the session."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    name = f"{stem[:50].rstrip('-')}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    return name
