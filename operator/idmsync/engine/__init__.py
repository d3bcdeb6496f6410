"""The reset workflow and the IDM protocol: asyncio + httpx, no kopf, no kubernetes.

Usable from the CLI, the operator and tests alike. A reset is: an :class:`IdmClient`
for one server (:func:`make_http_client`, credentials from :mod:`idmsync.auth`, checked
by a :class:`TargetPolicy`), :func:`select_stages` to name the stages, then
:func:`run_reset` with :class:`ResetOptions`, which tells an :data:`Observer` each step
(an :class:`Event`) and returns a :class:`ResetOutcome`; pass the recorded
:class:`StageProgress` back in to resume.
"""

from idmsync.engine.changelog import (
    ChangelogRange,
    ChangelogReader,
    LdapChangelog,
    LdapDirectory,
    parse_ldap_url,
)
from idmsync.engine.client import IdmClient, ServerVersions
from idmsync.engine.drift import check_drift, check_stages, classify, describe, worst
from idmsync.engine.events import Event, EventKind, Observer
from idmsync.engine.flavour import Flavour, flavour_for_version
from idmsync.engine.model import (
    Action,
    Drift,
    DriftCheck,
    ReconcileOptions,
    ReconProgress,
    ResetOptions,
    ServerInfo,
    Stage,
    StageProgress,
    StageRef,
    StageResult,
    Step,
    When,
)
from idmsync.engine.policy import AllowPattern, TargetPolicy
from idmsync.engine.retry import RetryPolicy
from idmsync.engine.transport import TlsOptions, make_http_client
from idmsync.engine.workflow import ResetOutcome, run_reset, select_stages

__all__ = [
    "Action",
    "AllowPattern",
    "ChangelogRange",
    "ChangelogReader",
    "Drift",
    "DriftCheck",
    "Event",
    "EventKind",
    "Flavour",
    "IdmClient",
    "LdapChangelog",
    "LdapDirectory",
    "Observer",
    "ReconProgress",
    "ReconcileOptions",
    "ResetOptions",
    "ResetOutcome",
    "RetryPolicy",
    "ServerInfo",
    "ServerVersions",
    "Stage",
    "StageProgress",
    "StageRef",
    "StageResult",
    "Step",
    "TargetPolicy",
    "TlsOptions",
    "When",
    "check_drift",
    "check_stages",
    "classify",
    "describe",
    "flavour_for_version",
    "make_http_client",
    "parse_ldap_url",
    "run_reset",
    "select_stages",
    "worst",
]
