"""The Kubernetes reads and writes the controller makes, through the official client.

Secrets are read one at a time, on demand, from the resource's own namespace:
nothing is watched or cached. The synchronous client runs in worker threads of
our own pool, sized to its connection pool. Answers are read as JSON, not turned
into the client's model objects: that conversion was most of the operator's CPU
with many resets in flight (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from idmsync.controller.models import GROUP, PLURAL, VERSION
from idmsync.errors import Forbidden, SecretNotFound, ServiceNotFound

__all__ = ["Kube", "KubeApi", "ServiceInfo"]

#: (connect, read) timeouts of every call: a stalled API server is noticed, not waited on
REQUEST_TIMEOUT = (10.0, 30.0)
#: calls in flight at once: the worker threads, and the client's connections to the API server
MAX_CALLS = 16


@dataclass(frozen=True)
class ServiceInfo:
    """What the controller needs of a Service: its type, external name and ports by name."""

    type: str = "ClusterIP"
    external_name: str | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ServiceInfo:
        spec = body.get("spec") or {}
        return cls(
            type=str(spec.get("type") or "ClusterIP"),
            external_name=spec.get("externalName"),
            ports={
                str(p.get("name") or ""): int(p["port"])
                for p in spec.get("ports") or []
                if "port" in p
            },
        )

    def port(self, namespace: str, name: str, port: int | str) -> int:
        """A port given by number, or by the name the Service gives it."""
        if isinstance(port, int):
            return port
        if port not in self.ports:
            raise ServiceNotFound(f"Service {namespace}/{name} has no port named {port!r}")
        return self.ports[port]


class KubeApi(Protocol):
    """The Kubernetes calls the controller makes: :class:`Kube`, or a fake in unit tests."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]: ...

    async def read_service(self, namespace: str, name: str) -> ServiceInfo: ...

    async def read_reset(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def load_client_config() -> client.ApiClient:
    """In a pod: the ServiceAccount; elsewhere: KUBECONFIG / ~/.kube/config."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = MAX_CALLS
    return client.ApiClient(configuration)


class Kube:
    """:class:`KubeApi` through the official client."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._pool = ThreadPoolExecutor(MAX_CALLS, thread_name_prefix="kube")

    @classmethod
    def from_environment(cls) -> Kube:
        return cls(load_client_config())

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.api_client.close()  # type: ignore[no-untyped-call]

    async def _json(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the client in our pool and read its answer as JSON (no model objects)."""

        def send() -> Any:
            response = call(
                *args, _request_timeout=REQUEST_TIMEOUT, _preload_content=False, **kwargs
            )
            try:
                return json.loads(response.data) if response.data else None
            finally:
                response.release_conn()

        return await asyncio.get_running_loop().run_in_executor(self._pool, send)

    async def ensure_cluster_peering(self, name: str) -> None:
        """Create the ClusterKopfPeering replicas meet in, unless it exists."""
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        try:
            await self._json(
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
            secret = await self._json(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise SecretNotFound(f"Secret {namespace}/{name} not found") from None
            if exc.status == 403:
                raise Forbidden(
                    f"the operator may not read Secret {namespace}/{name} (RBAC)"
                ) from None
            raise
        return {key: str(value) for key, value in (secret.get("data") or {}).items()}

    async def read_service(self, namespace: str, name: str) -> ServiceInfo:
        try:
            body = await self._json(self.core.read_namespaced_service, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise ServiceNotFound(f"Service {namespace}/{name} not found") from None
            raise
        return ServiceInfo.from_body(body)

    async def read_reset(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body = await self._json(
                self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource (a list in it is replaced whole)."""
        await self._json(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
        )
