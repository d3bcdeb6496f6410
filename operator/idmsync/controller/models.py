"""The SyncTokenReset resource as pydantic models: spec in, status out.

The CRD in manifests/crd/ is written by hand (CEL rules and printer columns
read better as YAML); tests/unit/test_crd_matches_models.py holds the two to
the same field names, types and defaults.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from idmsync.auth.oauth import DEFAULT_SCOPE
from idmsync.engine import Drift, StageResult, Step, parse_ldap_url
from idmsync.engine.naming import (
    CONTEXT_PATH_PATTERN,
    MAPPING_PATTERN,
    URL_PATTERN,
    normalise_server_url,
    validate_source,
    validate_stage_id,
)
from idmsync.errors import InvalidSpec
from idmsync.urls import parse_url

__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "RERUN_ANNOTATION",
    "VERSION",
    "Auth",
    "Check",
    "Condition",
    "LdapCheck",
    "Reconcile",
    "SyncTokenResetSpec",
    "SyncTokenResetStatus",
]

GROUP = "idmsync.dev"
VERSION = "v1alpha1"
KIND = "SyncTokenReset"
PLURAL = "synctokenresets"
RERUN_ANNOTATION = "idmsync.dev/rerun"

DNS_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
KEY_NAME = r"^[-._a-zA-Z0-9]+$"


def _engine_rule(check: Callable[[str], object], value: str) -> None:
    """Apply one of the engine's own checks: the resource and the CLI follow the same rule.

    pydantic reports a ValueError as a validation error (InvalidSpec would escape it)."""
    try:
        check(value)
    except InvalidSpec as exc:
        raise ValueError(exc.message) from None


def _token_endpoint(url: str) -> object:
    return parse_url(url, what="clientCredentials.tokenUrl", path=True)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class SecretRef(_Model):
    name: str = Field(pattern=DNS_NAME, max_length=253)


class SecretKeyRef(_Model):
    name: str = Field(pattern=DNS_NAME, max_length=253)
    key: str = Field(pattern=KEY_NAME, max_length=253)


#: an IANA service name, as the CRD's rule says: at most 15 lowercase letters, digits and
#: single inner hyphens, with at least one letter
PORT_NAME = r"^[a-z0-9]+(-[a-z0-9]+)*$"


def _service_port(port: int | str) -> int | str:
    """A Service's port: a number 1-65535 or the name of one of its ports."""
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            raise ValueError("service.port must be a number 1-65535 or a port name")
    elif not (re.fullmatch(PORT_NAME, port) and re.search("[a-z]", port) and len(port) <= 15):
        raise ValueError("service.port must be a number 1-65535 or a port name")
    return port


class ServiceTarget(_Model):
    name: str = Field(pattern=DNS_NAME, max_length=63)
    port: int | str = 8080
    scheme: Literal["http", "https"] = "http"

    @field_validator("port")
    @classmethod
    def _port(cls, port: int | str) -> int | str:
        return _service_port(port)


class Target(_Model):
    service: ServiceTarget | None = None
    url: str | None = Field(default=None, pattern=URL_PATTERN, max_length=512)
    tenant_secret_ref: SecretRef | None = Field(default=None, alias="tenantSecretRef")
    context_path: str = Field(
        default="/openidm", alias="contextPath", pattern=CONTEXT_PATH_PATTERN, max_length=256
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        if self.url is not None:
            _engine_rule(normalise_server_url, self.url)  # the port range, beyond the pattern
        if sum(x is not None for x in (self.service, self.url, self.tenant_secret_ref)) != 1:
            raise ValueError("target: set exactly one of service, url, tenantSecretRef")
        return self


class AdminSecretRef(_Model):
    name: str = Field(pattern=DNS_NAME, max_length=253)
    username_key: str = Field(
        default="username", alias="usernameKey", pattern=KEY_NAME, max_length=253
    )
    password_key: str = Field(
        default="password", alias="passwordKey", pattern=KEY_NAME, max_length=253
    )


class BearerTokenSecretRef(_Model):
    name: str = Field(pattern=DNS_NAME, max_length=253)
    key: str = Field(default="token", pattern=KEY_NAME, max_length=253)


class ClientCredentials(_Model):
    token_url: str = Field(alias="tokenUrl", pattern=r"^https?://\S+$", max_length=1024)
    secret_ref: SecretRef = Field(alias="secretRef")  # keys clientId, clientSecret
    scope: str = Field(default=DEFAULT_SCOPE, max_length=1024)
    auth_method: Literal["form", "basic"] = Field(default="form", alias="authMethod")

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str) -> str:
        _engine_rule(_token_endpoint, value)  # no user-info, query, fragment; a port in range
        return value


class ServiceAccountAuth(_Model):
    secret_ref: SecretRef = Field(alias="secretRef")  # keys serviceAccountId, privateJwk
    scope: str = Field(default=DEFAULT_SCOPE, max_length=1024)


class Auth(_Model):
    admin_secret_ref: AdminSecretRef | None = Field(default=None, alias="adminSecretRef")
    bearer_token_secret_ref: BearerTokenSecretRef | None = Field(
        default=None, alias="bearerTokenSecretRef"
    )
    client_credentials: ClientCredentials | None = Field(default=None, alias="clientCredentials")
    service_account: ServiceAccountAuth | None = Field(default=None, alias="serviceAccount")

    @model_validator(mode="after")
    def _exactly_one(self) -> Auth:
        chosen = (
            self.admin_secret_ref,
            self.bearer_token_secret_ref,
            self.client_credentials,
            self.service_account,
        )
        if sum(x is not None for x in chosen) != 1:
            raise ValueError(
                "auth: set exactly one of adminSecretRef, bearerTokenSecretRef, "
                "clientCredentials, serviceAccount"
            )
        return self


class Tls(_Model):
    ca_secret_ref: SecretKeyRef | None = Field(default=None, alias="caSecretRef")
    insecure_skip_verify: bool = Field(default=False, alias="insecureSkipVerify")


class Stages(_Model):
    sources: list[str] = Field(default_factory=list, max_length=64)
    ids: list[str] = Field(default_factory=list, max_length=64)
    all: bool = False

    @model_validator(mode="after")
    def _patterns(self) -> Stages:
        for source in self.sources:
            _engine_rule(validate_source, source)
        for stage_id in self.ids:
            _engine_rule(validate_stage_id, stage_id)
        if not (self.sources or self.ids or self.all):
            raise ValueError("stages: name at least one of sources, ids, or all: true")
        return self


class Token(_Model):
    value: int | str

    @model_validator(mode="after")
    def _length(self) -> Token:
        if isinstance(self.value, str) and len(self.value) > 4096:
            raise ValueError("token.value must be at most 4096 characters")
        return self


class LiveSync(_Model):
    trigger: bool = True
    verify: bool = True
    timeout_seconds: int = Field(default=120, alias="timeoutSeconds", ge=1, le=3600)


LDAP_URL_PATTERN = (
    r"^ldaps?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^ldaps?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"
)


class LdapService(_Model):
    name: str = Field(pattern=DNS_NAME, max_length=63)
    port: int | str = 389
    scheme: Literal["ldap", "ldaps"] = "ldap"

    @field_validator("port")
    @classmethod
    def _port(cls, port: int | str) -> int | str:
        return _service_port(port)


class BindSecretRef(_Model):
    name: str = Field(pattern=DNS_NAME, max_length=253)
    bind_dn_key: str = Field(default="bindDN", alias="bindDNKey", pattern=KEY_NAME, max_length=253)
    password_key: str = Field(
        default="password", alias="passwordKey", pattern=KEY_NAME, max_length=253
    )


class LdapCheck(_Model):
    """The directory whose changelog the stages read: an LDAP service or URL."""

    service: LdapService | None = None
    url: str | None = Field(default=None, pattern=LDAP_URL_PATTERN, max_length=512)
    bind_secret_ref: BindSecretRef | None = Field(default=None, alias="bindSecretRef")
    start_tls: bool = Field(default=False, alias="startTLS")
    ca_secret_ref: SecretKeyRef | None = Field(default=None, alias="caSecretRef")
    insecure_skip_verify: bool = Field(default=False, alias="insecureSkipVerify")

    @model_validator(mode="after")
    def _exactly_one(self) -> LdapCheck:
        if self.url is not None:
            _engine_rule(parse_ldap_url, self.url)  # the port range, beyond the pattern
        if (self.service is None) == (self.url is None):
            raise ValueError("check.ldap: set exactly one of service, url")
        return self


class Check(_Model):
    ldap: LdapCheck
    #: re-check this often while the resource exists (status.drift, the lag gauge)
    interval_seconds: int | None = Field(default=None, alias="intervalSeconds", ge=30, le=86400)


class Reconcile(_Model):
    mapping: str = Field(pattern=MAPPING_PATTERN, max_length=256)
    timeout_seconds: int = Field(default=3600, alias="timeoutSeconds", ge=1, le=86400)


class SyncTokenResetSpec(_Model):
    target: Target
    auth: Auth | None = None
    api: Literal["Auto", "IDM7", "Legacy", "IdentityCloud"] = "Auto"
    tls: Tls = Field(default_factory=Tls)
    stages: Stages
    action: Literal["Delete", "Set"] = "Delete"
    token: Token | None = None
    live_sync: LiveSync = Field(default_factory=LiveSync, alias="liveSync")
    pause_schedules: bool = Field(default=False, alias="pauseSchedules")
    dry_run: bool = Field(default=False, alias="dryRun")
    when: Literal["Always", "OutOfSync"] = "Always"
    check: Check | None = None
    reconcile: Reconcile | None = None

    @model_validator(mode="after")
    def _rules(self) -> SyncTokenResetSpec:
        if self.when == "OutOfSync" and self.check is None:
            raise ValueError("when OutOfSync needs check (the directory to compare with)")
        if self.auth is None and self.target.tenant_secret_ref is None:
            raise ValueError("auth is required unless target.tenantSecretRef is set")
        if (self.action == "Set") != (self.token is not None):
            raise ValueError("token goes with action Set, and action Set needs a token")
        return self


# --- status ---------------------------------------------------------------------------
#
# Read leniently where that is safe: fields we do not know (written by a newer operator)
# are ignored, and a condition that does not parse is dropped (conditions are rebuilt).
# What resume relies on is strict: a stage's step and result must be known values, and a
# stage past Pending must carry what that step implies. A status that breaks those rules
# is not resumed from (see reconcile: Stalled with reason InvalidStatus).


class _Status(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Condition(_Status):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    last_transition_time: str = Field(alias="lastTransitionTime")


class ServerStatus(_Status):
    url: str
    api: str
    version: str | None = None


class StageLiveSync(_Status):
    triggered: bool = False
    new_token: JsonValue = Field(default=None, alias="newToken")


class StageCheck(_Status):
    """A drift check's numbers for one stage."""

    state: Drift
    token: JsonValue = None
    first_change_number: int | None = Field(default=None, alias="firstChangeNumber")
    last_change_number: int | None = Field(default=None, alias="lastChangeNumber")
    lag: int | None = None
    time: str | None = None


class StageDrift(StageCheck):
    id: str


class ReconStatus(_Status):
    mapping: str
    id: str | None = None
    state: str | None = None
    stage: str | None = None
    started: str | None = None
    ended: str | None = None
    processed: int | None = None
    created: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    situations: dict[str, int] = Field(default_factory=dict)


class StageStatus(_Status):
    id: str
    source: str | None = None
    step: Step = Step.PENDING
    previous_rev: str | None = Field(default=None, alias="previousRev")
    previous_token: JsonValue = Field(default=None, alias="previousToken")
    result: StageResult | None = None
    live_sync: StageLiveSync = Field(default_factory=StageLiveSync, alias="liveSync")
    message: str | None = None
    check: StageCheck | None = None

    @model_validator(mode="after")
    def _consistent(self) -> StageStatus:
        # resume compares the stage with previousRev: without it, it would conclude "changed"
        if self.step is Step.RECORDED and self.previous_rev is None:
            raise ValueError(f"stage {self.id}: step Recorded without previousRev")
        if self.step in (Step.CHANGED, Step.TRIGGERED, Step.DONE) and self.result is None:
            raise ValueError(f"stage {self.id}: step {self.step} without a result")
        return self


Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
TERMINAL_PHASES: tuple[Phase, ...] = ("Succeeded", "Failed")


class SyncTokenResetStatus(_Status):
    phase: Phase = "Pending"
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    rerun: str | None = None  # the idmsync.dev/rerun value this run answers
    start_time: str | None = Field(default=None, alias="startTime")
    completion_time: str | None = Field(default=None, alias="completionTime")
    target: str | None = None  # summary for the printer column
    stage_summary: str | None = Field(default=None, alias="stageSummary")
    server: ServerStatus | None = None
    stages: list[StageStatus] = Field(default_factory=list)
    #: tries of this run so far, the first included: one budget per reset
    attempts: int = 0
    #: when the next try is due, while a failed try waits to be retried
    next_retry_time: str | None = Field(default=None, alias="nextRetryTime")
    schedules_paused: bool = Field(default=False, alias="schedulesPaused")
    #: the liveSync jobs paused one by one (empty with schedulesPaused: every job)
    paused_jobs: list[str] = Field(default_factory=list, alias="pausedJobs")
    reconciliation: ReconStatus | None = None
    #: the latest drift check of each stage (at the run, then every check.intervalSeconds)
    drift: list[StageDrift] = Field(default_factory=list)
    last_check_time: str | None = Field(default=None, alias="lastCheckTime")
    conditions: list[Condition] = Field(default_factory=list)

    @field_validator("conditions", mode="before")
    @classmethod
    def _drop_unreadable_conditions(cls, value: object) -> list[Condition]:
        if not isinstance(value, list):
            return []
        kept: list[Condition] = []
        for item in value:
            try:
                kept.append(Condition.model_validate(item))
            except ValidationError:
                continue
        return kept
