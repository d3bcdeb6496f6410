"""Turn a SyncTokenReset into what the engine needs: a server, credentials, TLS, stages.

Everything is read from the resource's own namespace, on demand.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urlsplit

from idmsync.auth import AdminCredentials, BearerToken, Credentials, CredentialsRegistry, Secret
from idmsync.auth.oauth import DEFAULT_SCOPE
from idmsync.controller.kube import KubeApi
from idmsync.controller.models import SyncTokenResetSpec
from idmsync.controller.settings import OperatorSettings
from idmsync.engine import (
    Action,
    Flavour,
    LdapDirectory,
    ReconcileOptions,
    ResetOptions,
    TlsOptions,
    When,
)
from idmsync.engine.naming import normalise_server_url
from idmsync.errors import InternalError, InvalidSpec, SecretKeyMissing

__all__ = [
    "ResolvedTarget",
    "SecretReader",
    "reset_options",
    "resolve_directory",
    "resolve_target",
]


@dataclass(frozen=True)
class ResolvedTarget:
    server_url: str
    context_path: str
    flavour: Flavour
    credentials: Credentials
    tls: TlsOptions
    summary: str  # for the printer column and messages: never holds a secret


class SecretReader:
    """Reads keys of Secrets in one namespace; remembers each Secret for one resolve only."""

    def __init__(self, kube: KubeApi, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._read: dict[str, dict[str, str]] = {}

    async def key(self, name: str, key: str) -> str:
        if name not in self._read:
            self._read[name] = await self.kube.read_secret(self.namespace, name)
        data = self._read[name]
        if key not in data:
            raise SecretKeyMissing(f"Secret {self.namespace}/{name} has no key {key!r}")
        try:
            return base64.b64decode(data[key], validate=True).decode("utf-8").strip("\r\n")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidSpec(
                f"Secret {self.namespace}/{name} key {key!r} is not UTF-8 text"
            ) from None

    async def optional_key(self, name: str, key: str) -> str | None:
        try:
            return await self.key(name, key)
        except SecretKeyMissing:
            return None


async def resolve_target(
    spec: SyncTokenResetSpec,
    namespace: str,
    kube: KubeApi,
    settings: OperatorSettings,
    registry: CredentialsRegistry,
) -> ResolvedTarget:
    secrets = SecretReader(kube, namespace)
    target = spec.target
    flavour = Flavour.parse(spec.api)
    in_cluster = False
    if target.service is not None:
        server_url, summary, in_cluster = await _service_url(spec, namespace, kube, settings)
    elif target.url is not None:
        server_url = normalise_server_url(target.url)
        summary = server_url
    else:
        if target.tenant_secret_ref is None:
            raise InternalError("target: none of service, url, tenantSecretRef")
        tenant = target.tenant_secret_ref.name
        server_url = normalise_server_url(await secrets.key(tenant, "tenantUrl"))
        summary = f"tenant {server_url}"
        if spec.api == "Auto":
            flavour = Flavour.IDENTITY_CLOUD
    settings.policy.check(server_url, in_cluster_service=in_cluster)
    await settings.policy.check_resolved(server_url)
    credentials = await _credentials(spec, secrets, server_url, namespace, settings, registry)
    return ResolvedTarget(
        server_url=server_url,
        context_path=target.context_path,
        flavour=flavour,
        credentials=credentials,
        tls=await _tls(spec, secrets),
        summary=summary,
    )


async def _service_url(
    spec: SyncTokenResetSpec, namespace: str, kube: KubeApi, settings: OperatorSettings
) -> tuple[str, str, bool]:
    if spec.target.service is None:
        raise InternalError("a Service URL for a target without service")
    ref = spec.target.service
    service = await kube.read_service(namespace, ref.name)
    port = service.port(namespace, ref.name, ref.port)
    summary = f"service/{ref.name}:{port}"
    if service.type == "ExternalName":
        # it points outside the cluster: a URL target in all but name, allow-list applies
        host = service.external_name
        return normalise_server_url(f"{ref.scheme}://{host}:{port}"), summary, False
    url = settings.service_url(scheme=ref.scheme, name=ref.name, namespace=namespace, port=port)
    return url, summary, True


async def _credentials(
    spec: SyncTokenResetSpec,
    secrets: SecretReader,
    server_url: str,
    namespace: str,
    settings: OperatorSettings,
    registry: CredentialsRegistry,
) -> Credentials:
    auth = spec.auth
    if auth is None:
        # the CRD allows this only with a tenant Secret: it holds the service account too
        if spec.target.tenant_secret_ref is None:
            raise InternalError("no auth and no target.tenantSecretRef")
        tenant = spec.target.tenant_secret_ref.name
        token_url = await secrets.optional_key(tenant, "tokenUrl")  # default: the tenant's AM
        if token_url is not None:
            settings.policy.check(token_url)
            await settings.policy.check_resolved(token_url)
        return registry.service_account(
            server_url,
            await secrets.key(tenant, "serviceAccountId"),
            Secret(await secrets.key(tenant, "privateJwk")),
            scope=await secrets.optional_key(tenant, "scope") or DEFAULT_SCOPE,
            token_url=token_url,
        )
    if auth.admin_secret_ref is not None:
        ref = auth.admin_secret_ref
        return AdminCredentials(
            await secrets.key(ref.name, ref.username_key),
            Secret(await secrets.key(ref.name, ref.password_key)),
        )
    if auth.bearer_token_secret_ref is not None:
        ref_token = auth.bearer_token_secret_ref
        return BearerToken(Secret(await secrets.key(ref_token.name, ref_token.key)))
    if auth.client_credentials is not None:
        flow = auth.client_credentials
        settings.policy.check(
            flow.token_url, in_cluster_service=_own_service_host(flow.token_url, namespace)
        )
        await settings.policy.check_resolved(flow.token_url)
        return registry.client_credentials(
            flow.token_url,
            await secrets.key(flow.secret_ref.name, "clientId"),
            Secret(await secrets.key(flow.secret_ref.name, "clientSecret")),
            scope=flow.scope,
            auth_method=flow.auth_method,
        )
    if auth.service_account is None:
        raise InternalError("auth: none of its four kinds set")
    account = auth.service_account
    return registry.service_account(
        server_url,
        await secrets.key(account.secret_ref.name, "serviceAccountId"),
        Secret(await secrets.key(account.secret_ref.name, "privateJwk")),
        scope=account.scope,
    )


def _own_service_host(url: str, namespace: str) -> bool:
    """``am``, ``am.<ns>``, ``am.<ns>.svc[.cluster.local]``: a Service of this namespace."""
    host = (urlsplit(url).hostname or "").lower()
    parts = host.split(".")
    if len(parts) == 1:
        return bool(host)
    suffix = ".".join(parts[1:])
    return suffix in (namespace, f"{namespace}.svc", f"{namespace}.svc.cluster.local")


async def _tls(spec: SyncTokenResetSpec, secrets: SecretReader) -> TlsOptions:
    ca_ref = spec.tls.ca_secret_ref
    ca_pem = await secrets.key(ca_ref.name, ca_ref.key) if ca_ref is not None else None
    return TlsOptions(ca_pem=ca_pem, insecure_skip_verify=spec.tls.insecure_skip_verify)


async def resolve_directory(
    spec: SyncTokenResetSpec, namespace: str, kube: KubeApi, settings: OperatorSettings
) -> LdapDirectory | None:
    """The directory of ``spec.check``, its bind Secret read now; None without a check."""
    if spec.check is None:
        return None
    ldap = spec.check.ldap
    secrets = SecretReader(kube, namespace)
    in_cluster = False
    if ldap.service is not None:
        ref = ldap.service
        service = await kube.read_service(namespace, ref.name)
        port = service.port(namespace, ref.name, ref.port)
        if service.type == "ExternalName":
            url = f"{ref.scheme}://{service.external_name}:{port}"
        else:
            url = settings.service_url(
                scheme=ref.scheme, name=ref.name, namespace=namespace, port=port
            )
            in_cluster = True
    else:
        if ldap.url is None:
            raise InternalError("check.ldap: neither service nor url")
        url = ldap.url
    bind_dn = password = None
    if ldap.bind_secret_ref is not None:
        bind = ldap.bind_secret_ref
        bind_dn = await secrets.key(bind.name, bind.bind_dn_key)
        password = Secret(await secrets.key(bind.name, bind.password_key))
    ca_ref = ldap.ca_secret_ref
    directory = LdapDirectory(
        url=url,
        bind_dn=bind_dn,
        password=password,
        start_tls=ldap.start_tls,
        ca_pem=await secrets.key(ca_ref.name, ca_ref.key) if ca_ref is not None else None,
        insecure_skip_verify=ldap.insecure_skip_verify,
    )
    directory.check_policy(settings.policy, in_cluster_service=in_cluster)
    return directory


def reset_options(spec: SyncTokenResetSpec) -> ResetOptions:
    reconcile = spec.reconcile
    return ResetOptions(
        when=When(spec.when),
        reconcile=(
            ReconcileOptions(mapping=reconcile.mapping, timeout=float(reconcile.timeout_seconds))
            if reconcile is not None
            else None
        ),
        action=Action(spec.action),
        token=spec.token.value if spec.token is not None else None,
        trigger=spec.live_sync.trigger,
        verify=spec.live_sync.verify,
        verify_timeout=float(spec.live_sync.timeout_seconds),
        pause_schedules=spec.pause_schedules,
        dry_run=spec.dry_run,
        # a change that failed unchanged is not retried inside a run: the controller
        # requeues the whole reset instead, so one budget (status.attempts) bounds them all
        change_attempts=1,
    )
