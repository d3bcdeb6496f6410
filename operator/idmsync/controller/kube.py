"""The Kubernetes reads and writes the controller makes, through the official client.

Secrets are read one at a time, on demand, from the resource's own namespace:
nothing is watched or cached. The synchronous client runs in worker threads.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from idmsync.controller.models import GROUP, PLURAL, VERSION
from idmsync.errors import Forbidden, SecretNotFound, ServiceNotFound

__all__ = ["Kube", "KubeApi"]

#: (connect, read) timeouts of every call: a stalled API server is noticed, not waited on
REQUEST_TIMEOUT = (10.0, 30.0)


class KubeApi(Protocol):
    """The Kubernetes calls the controller makes: :class:`Kube`, or a fake in unit tests."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]: ...

    async def read_service(self, namespace: str, name: str) -> Any: ...

    async def read_reset(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def load_client_config() -> client.ApiClient:
    """In a pod: the ServiceAccount; elsewhere: KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class Kube:
    """:class:`KubeApi` through the official client."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def from_environment(cls) -> Kube:
        return cls(load_client_config())

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    async def ensure_cluster_peering(self, name: str) -> None:
        """Create the ClusterKopfPeering replicas meet in, unless it exists."""
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        try:
            await asyncio.to_thread(
                self.custom.create_cluster_custom_object,
                "kopf.dev",
                "v1",
                "clusterkopfpeerings",
                body,
            )
        except ApiException as exc:
            if exc.status != 409:  # 409: it exists already
                raise

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """The Secret's data, base64 still applied (decode only the key you need)."""
        try:
            secret = await asyncio.to_thread(
                self.core.read_namespaced_secret, name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                raise SecretNotFound(f"Secret {namespace}/{name} not found") from None
            if exc.status == 403:
                raise Forbidden(
                    f"the operator may not read Secret {namespace}/{name} (RBAC)"
                ) from None
            raise
        return {key: str(value) for key, value in (secret.data or {}).items()}

    async def read_service(self, namespace: str, name: str) -> Any:
        try:
            return await asyncio.to_thread(
                self.core.read_namespaced_service, name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ServiceNotFound(f"Service {namespace}/{name} not found") from None
            raise

    async def read_reset(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: Any = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource (a list in it is replaced whole)."""
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _request_timeout=REQUEST_TIMEOUT,
        )
