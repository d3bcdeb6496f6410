"""An in-memory stand-in for the handful of Kubernetes calls the controller makes.

It fakes Kubernetes, not idmsync: resources, Secrets and Services live in dicts, a status
patch is applied as the API server applies a JSON merge patch (RFC 7386: null deletes, a
list is replaced whole), and every patch is kept so tests can see the order of writes.
There is no schema validation: a unit test can hand the controller any status at all.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from idmsync.controller.kube import ServiceInfo
from idmsync.errors import SecretNotFound, ServiceNotFound

GROUP_VERSION = "idmsync.dev/v1alpha1"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class PatchFault:
    remaining: int
    error: Callable[[], Exception]
    matches: Callable[[dict[str, Any]], bool]
    applied: bool  # the API server stored it, then the answer said it failed


@dataclass
class FakeKube:
    resets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    services: dict[tuple[str, str], ServiceInfo] = field(default_factory=dict)
    #: every status patch, in order: (namespace, name, patch)
    patches: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: status patches to fail: (how many, the error, a predicate on the patch, applied first?)
    patch_faults: list[PatchFault] = field(default_factory=list)

    # --- what tests set up ---------------------------------------------------------

    def add_reset(
        self,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        *,
        status: Any = None,
        annotations: dict[str, str] | None = None,
        generation: int = 1,
    ) -> None:
        body: dict[str, Any] = {
            "apiVersion": GROUP_VERSION,
            "kind": "SyncTokenReset",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "generation": generation,
                "annotations": dict(annotations or {}),
            },
            "spec": copy.deepcopy(spec),
        }
        if status is not None:
            body["status"] = copy.deepcopy(status)
        self.resets[namespace, name] = body

    def annotate(self, namespace: str, name: str, key: str, value: str) -> None:
        self.resets[namespace, name]["metadata"]["annotations"][key] = value

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.resets[namespace, name].get("status") or {})

    def add_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.secrets[namespace, name] = {
            key: base64.b64encode(value.encode()).decode() for key, value in data.items()
        }

    def add_service(
        self,
        namespace: str,
        name: str,
        port: int,
        port_name: str = "http",
        *,
        external_name: str | None = None,
    ) -> None:
        self.services[namespace, name] = ServiceInfo(
            type="ExternalName" if external_name else "ClusterIP",
            external_name=external_name,
            ports={port_name: port},
        )

    # --- KubeApi -------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        if (namespace, name) not in self.secrets:
            raise SecretNotFound(f"Secret {namespace}/{name} not found")
        return dict(self.secrets[namespace, name])

    async def read_service(self, namespace: str, name: str) -> ServiceInfo:
        if (namespace, name) not in self.services:
            raise ServiceNotFound(f"Service {namespace}/{name} not found")
        return self.services[namespace, name]

    async def read_reset(self, namespace: str, name: str) -> dict[str, Any] | None:
        body = self.resets.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None

    def fail_patches(
        self,
        count: int,
        error: Callable[[], Exception],
        *,
        when: Callable[[dict[str, Any]], bool] = lambda patch: True,
        applied: bool = False,
    ) -> None:
        """Fail the next ``count`` status patches ``when`` says so, before or after storing."""
        self.patch_faults.append(PatchFault(count, error, when, applied))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        fault = next((f for f in self.patch_faults if f.remaining > 0 and f.matches(status)), None)
        if fault is not None:
            fault.remaining -= 1
            if not fault.applied:
                raise fault.error()
        self.patches.append((namespace, name, copy.deepcopy(status)))
        body = self.resets[namespace, name]
        body["status"] = merge_patch(body.get("status"), status)
        if fault is not None:
            raise fault.error()

    def close(self) -> None:
        return None
